package cli

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/tuf"
)

// TestMetricsToken: `serve` with UPKEEP_METRICS_TOKEN (bound to --metrics-token) answers
// /metrics only with that bearer token; without one configured /metrics stays open.
func TestMetricsToken(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	serve := func(data string) (url string, stop func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		cmd := newRoot()
		cmd.SetArgs([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, data), "--keys", keys})
		cmd.SetOut(pw)
		cmd.SetErr(io.Discard)
		done := make(chan error, 1)
		go func() { done <- cmd.ExecuteContext(ctx); pw.Close() }()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "upkeep serving on "); ok {
				url = u
				break
			}
		}
		go io.Copy(io.Discard, pr) //nolint:errcheck // drains the rest
		if url == "" {
			cancel()
			t.Fatalf("serve did not start: %v", <-done)
		}
		return url, func() { cancel(); <-done }
	}
	get := func(url, token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	t.Setenv("UPKEEP_METRICS_TOKEN", "metrics-secret")
	url, stop := serve("a")
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {"metrics-secret", http.StatusOK}} {
		if got := get(url, tc.token); got != tc.want {
			t.Errorf("/metrics with token %q: %d, want %d", tc.token, got, tc.want)
		}
	}
	stop()

	t.Setenv("UPKEEP_METRICS_TOKEN", "")
	url, stop = serve("b")
	defer stop()
	if got := get(url, ""); got != http.StatusOK {
		t.Errorf("/metrics without a configured token: %d, want 200", got)
	}
}
