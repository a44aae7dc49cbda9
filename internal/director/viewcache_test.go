package director

import (
	"fmt"
	"testing"

	"upkeep.dev/upkeep/internal/uptane"
)

func TestViewCacheKeepsTheNewestViews(t *testing.T) {
	var c viewCache
	if c.get("d", 1) != nil {
		t.Fatal("an empty cache answered")
	}
	for i := range viewCacheSize + 10 {
		c.put(fmt.Sprintf("d%d", i), &uptane.DirectorView{Version: int64(i + 1)})
	}
	for i := range 10 {
		if c.get(fmt.Sprintf("d%d", i), int64(i+1)) != nil {
			t.Errorf("view %d was kept past the cache's size", i)
		}
	}
	last := viewCacheSize + 9
	if v := c.get(fmt.Sprintf("d%d", last), int64(last+1)); v == nil || v.Version != int64(last+1) {
		t.Errorf("newest view = %+v", v)
	}
	if c.get(fmt.Sprintf("d%d", last), int64(last)) != nil {
		t.Error("a view was found under another version")
	}
	c.put("d20", &uptane.DirectorView{Version: 21}) // again: no second slot
	if n := len(c.views); n != viewCacheSize {
		t.Errorf("cache holds %d views, want %d", n, viewCacheSize)
	}
}
