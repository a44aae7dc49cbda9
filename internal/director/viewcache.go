package director

import (
	"sync"

	"upkeep.dev/upkeep/internal/uptane"
)

// viewCache keeps the director views most recently signed or read, by device and version. A
// device reads timestamp N, then snapshot N and targets N, within moments: the cache answers
// the last two without the store. A version of a view never changes once stored, so a cached
// one is never stale, whichever replica signed it; the latest version is always read from the
// store. It holds at most viewCacheSize views (a few MiB), forgetting the oldest first.
type viewCache struct {
	mu    sync.Mutex
	views map[viewKey]*uptane.DirectorView
	order []viewKey // ring of the keys in insertion order
	next  int
}

type viewKey struct {
	device  string
	version int64
}

const viewCacheSize = 4096

func (c *viewCache) get(device string, version int64) *uptane.DirectorView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.views[viewKey{device, version}]
}

func (c *viewCache) put(device string, v *uptane.DirectorView) {
	k := viewKey{device, v.Version}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.views == nil {
		c.views, c.order = map[viewKey]*uptane.DirectorView{}, make([]viewKey, viewCacheSize)
	}
	if _, ok := c.views[k]; ok {
		return
	}
	delete(c.views, c.order[c.next])
	c.order[c.next] = k
	c.next = (c.next + 1) % viewCacheSize
	c.views[k] = v
}
