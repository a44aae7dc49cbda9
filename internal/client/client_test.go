package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestBaseWithPath: a tenant's server URL has a path (https://host/t/acme, with or without a
// trailing slash); every management request goes under it.
func TestBaseWithPath(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]"))
	}))
	defer srv.Close()
	for _, base := range []string{srv.URL + "/t/acme", srv.URL + "/t/acme/"} {
		c := &Client{Base: base, Token: "t"}
		if _, err := c.Devices(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
	}
	if len(paths) != 2 || paths[0] != "/t/acme/api/v1/devices" || paths[1] != paths[0] {
		t.Fatalf("requests went to %v, want /t/acme/api/v1/devices", paths)
	}
}
