package cli

// What devices claim and what they may fetch: a device downloads only the images its own
// director view names, and what it says it runs counts publicly only if it is a signed target.

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
)

// TestArtifactOnlyForOwnView: a device gets an image only while its director view names it
// (the latest view, or a previous one that has not expired, for a download under way when the
// assignment changed); any other target is 403, even one that is published.
func TestArtifactOnlyForOwnView(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	other := f.device("SN-OTHER", image("1.0.0", 64<<10), f.r100)
	v101 := image("1.0.1", 80<<10)
	r101 := f.publish("1.0.1", 2, v101)
	f.deploy(r101, f.id)
	path := "/device/v1/targets/" + r101.Target

	status, body := f.call(http.MethodGet, path, other.Agent.State().Token, nil)
	requireAPIRefusal(t, "another device's image", status, body, apperr.Forbidden)
	if status != http.StatusForbidden || bytes.Contains(body, v101[:64]) {
		t.Fatalf("another device's image: %d, %d bytes", status, len(body))
	}
	if status, body := f.call(http.MethodGet, path, f.dev.Agent.State().Token, nil); status != http.StatusOK || !bytes.Equal(body, v101) {
		t.Fatalf("own assigned image: %d, %d bytes", status, len(body))
	}

	// The assignment is withdrawn while the device downloads: the previous view, still valid,
	// lets it finish (a ranged request, as the agent resumes).
	if err := f.srv.Repo.Unassign(f.ctx, f.fleetDevice()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(f.ctx, http.MethodGet, f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+f.dev.Agent.State().Token)
	req.Header.Set("Range", "bytes=1024-")
	resp, err := attackHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("resumed download after the assignment changed: %d, want 206", resp.StatusCode)
	}

	// Once that previous view has expired, the image is no longer the device's to fetch.
	f.clock.Shift(8 * 24 * time.Hour)
	tok, _ := f.srv.Fleet.Tokens.Issue(f.id, f.clock.Now())
	status, body = f.call(http.MethodGet, path, tok, nil)
	requireAPIRefusal(t, "image of an expired view", status, body, apperr.Forbidden)
}
