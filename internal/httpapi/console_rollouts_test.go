package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/rollout"
)

// withRollouts wires a campaign engine over the stack's store, with an assignment that only
// records, and a release cam@2.0 for the seeded devices' hardware.
func (s *stack) withRollouts() *rollout.Engine {
	s.t.Helper()
	e := &rollout.Engine{Store: s.db, Devices: s.db, Releases: s.db, Logger: quietLogger(),
		Assign:   func(context.Context, *fleet.Device, *release.Release, *installpolicy.Policy) error { return nil },
		Unassign: func(context.Context, *fleet.Device) error { return nil }}
	s.api.Rollouts = e
	s.handler = s.api.Handler()
	rel := &release.Release{Product: "cam", Version: "2.0", HardwareIDs: []string{"h1"}, Class: "security", Target: "cam-2.0.img", Length: 1,
		SHA256: strings.Repeat("a", 64), SHA512: strings.Repeat("b", 128), PublishedAt: time.Now()}
	if err := s.db.CreateRelease(context.Background(), rel); err != nil {
		s.t.Fatal(err)
	}
	return e
}

// sse is an open event stream.
type sse struct {
	resp *http.Response
	rd   *bufio.Reader
}

func (b *browser) stream(path string) (*sse, int) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range b.header {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	return &sse{resp: resp, rd: bufio.NewReader(resp.Body)}, resp.StatusCode
}

// next reads events until one named event arrives, and returns its data.
func (e *sse) next(t testing.TB, event string) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		name, data := "", ""
		for {
			line, err := e.rd.ReadString('\n')
			if err != nil {
				done <- "EOF " + err.Error()
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[7:]
			case strings.HasPrefix(line, "data: "):
				data += line[6:] + "\n"
			case line == "":
				if name == event {
					done <- data
					return
				}
				name, data = "", ""
			}
		}
	}()
	select {
	case d := <-done:
		if strings.HasPrefix(d, "EOF") {
			t.Fatalf("stream ended before %q: %s", event, d)
		}
		return d
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q event within 10 s", event)
		return ""
	}
}

var campaignPath = regexp.MustCompile(`^/rollouts/([0-9a-f-]+)$`)

// TestConsoleRollouts: a deployer sees the live device count of a target, creates and starts a
// campaign from the form, follows it over its event stream, pauses and cancels it behind a
// confirmation; a viewer sees no action and is refused one forced; streams per session are
// bounded.
func TestConsoleRollouts(t *testing.T) {
	s := newStack(t)
	s.withRollouts()
	s.seedDevices(30) // regions eu, us, ap by turns
	s.addUser("dee", auth.RoleDeployer, testPassword)
	s.addUser("vic", auth.RoleViewer, testPassword)
	srv := s.serve()
	dep := newBrowser(t, srv, "/")
	csrf := dep.login("dee", testPassword)
	form := dep.get("rollouts/new")
	wantPage(t, form, http.StatusOK, "<option>cam@2.0</option>", `hx-get="/rollouts/count"`, `id="device-preview"`)
	wantPage(t, dep.get("rollouts/count?release=cam%402.0&target=region%3Deu"), http.StatusOK, `<strong id="device-count">10</strong>`)
	wantPage(t, dep.get("rollouts/count?release=cam%402.0&target=group%3Anone"), http.StatusOK, "not found")

	// A refused form comes back with what was typed and why.
	bad := dep.post("rollouts/new", url.Values{"csrf": {csrf}, "release": {"cam@2.0"}, "target": {"region=eu"}, "waves": {"200%"}})
	wantPage(t, bad, http.StatusBadRequest, "wave", `value="region=eu"`)
	wantPage(t, dep.post("rollouts/new", url.Values{"release": {"cam@2.0"}, "target": {"region=eu"}}), http.StatusForbidden, "CSRF")

	r := dep.post("rollouts/new", url.Values{"csrf": {csrf}, "release": {"cam@2.0"}, "target": {"region=eu"}, "waves": {"20%,100%"},
		"failure": {"20"}, "health_gate": {"5m"}, "start": {"true"}})
	m := campaignPath.FindStringSubmatch(r.header.Get("Location"))
	if r.status != http.StatusSeeOther || m == nil {
		t.Fatalf("create: %d %v %s", r.status, r.header, r.body)
	}
	id := m[1]
	p := dep.get("rollouts/" + id)
	wantPage(t, p, http.StatusOK, "running", `sse-connect="/rollouts/`+id+`/events"`, `href="/rollouts/`+id+`/pause"`, "wave 1 of 2", "failure 20%")

	ev, status := dep.stream("rollouts/" + id + "/events")
	if status != http.StatusOK {
		t.Fatalf("stream: %d", status)
	}
	if d := ev.next(t, "progress"); !strings.Contains(d, "running") {
		t.Fatalf("first progress: %s", d)
	}
	wantPage(t, dep.get("rollouts/"+id+"/pause"), http.StatusOK, "Pause campaign "+id+"?")
	if r := dep.post("rollouts/"+id+"/pause", url.Values{"csrf": {csrf}}); r.status != http.StatusSeeOther {
		t.Fatalf("pause: %d %s", r.status, r.body)
	}
	if d := ev.next(t, "progress"); !strings.Contains(d, "paused") || !strings.Contains(d, "/resume") {
		t.Fatalf("progress after pause: %s", d)
	}

	viewer := newBrowser(t, srv, "/")
	vcsrf := viewer.login("vic", testPassword)
	vp := viewer.get("rollouts/" + id)
	wantPage(t, vp, http.StatusOK, "paused")
	if strings.Contains(vp.body, "/resume\"") || strings.Contains(vp.body, "New campaign") {
		t.Error("a viewer sees campaign actions")
	}
	wantPage(t, viewer.post("rollouts/"+id+"/resume", url.Values{"csrf": {vcsrf}}), http.StatusForbidden, "role viewer does not grant deploy")
	wantPage(t, viewer.get("rollouts/new"), http.StatusForbidden, "role viewer does not grant deploy")
	wantPage(t, viewer.get("rollouts"), http.StatusOK, id)

	// Streams per session are bounded.
	for range 3 {
		if _, st := dep.stream("rollouts/" + id + "/events"); st != http.StatusOK {
			t.Fatalf("stream: %d", st)
		}
	}
	if _, st := dep.stream("rollouts/" + id + "/events"); st != http.StatusTooManyRequests {
		t.Fatalf("a fifth stream: %d, want 429", st)
	}

	if r := dep.post("rollouts/"+id+"/cancel", url.Values{"csrf": {csrf}}); r.status != http.StatusSeeOther {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	ev.next(t, "end")
	p = dep.get("rollouts/" + id)
	wantPage(t, p, http.StatusOK, "cancelled")
	if strings.Contains(p.body, "sse-connect") {
		t.Error("an ended campaign's page still follows its stream")
	}
	// Logging out ends the session's streams; following one does not keep a session alive.
	other := newBrowser(t, srv, "/")
	ocsrf := other.login("dee", testPassword)
	httpapi.SetStreamSessionEvery(s.api, 100*time.Millisecond)
	r = dep.post("rollouts/new", url.Values{"csrf": {csrf}, "release": {"cam@2.0"}, "target": {"region=ap"}, "start": {"true"}})
	m = campaignPath.FindStringSubmatch(r.header.Get("Location"))
	if m == nil {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	followed, _ := other.stream("rollouts/" + m[1] + "/events")
	followed.next(t, "progress")
	if r := other.post("logout", url.Values{"csrf": {ocsrf}}); r.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.status)
	}
	if d := followed.next(t, "end"); !strings.Contains(d, "session ended") {
		t.Errorf("end event after logout: %q", d)
	}
	// A stream opened with an operator token ends once the token is revoked.
	secret, hash := auth.NewSecret(auth.AdminPrefix)
	tok := &auth.OperatorToken{ID: auth.TokenID(hash), Name: "wall", Role: auth.RoleViewer, Hash: hash, CreatedAt: time.Now()}
	if err := s.db.CreateOperatorToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	bearer := newBrowser(t, srv, "/")
	bearer.header = map[string]string{"Authorization": "Bearer " + secret}
	r = dep.post("rollouts/new", url.Values{"csrf": {csrf}, "release": {"cam@2.0"}, "target": {"region=eu"}, "start": {"true"}})
	m = campaignPath.FindStringSubmatch(r.header.Get("Location"))
	if m == nil {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	walled, st := bearer.stream("rollouts/" + m[1] + "/events")
	if st != http.StatusOK {
		t.Fatalf("stream with a token: %d", st)
	}
	walled.next(t, "progress")
	if err := s.db.RevokeOperatorToken(context.Background(), tok.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if d := walled.next(t, "end"); !strings.Contains(d, "session ended") {
		t.Errorf("end event after the token's revocation: %q", d)
	}
	// The server bounds its streams in all, whatever the sessions.
	httpapi.SetMaxStreams(s.api, 1)
	var one *sse
	for deadline := time.Now().Add(5 * time.Second); one == nil; { // the ended streams' handlers return
		if one, st = dep.stream("rollouts/" + m[1] + "/events"); one == nil && time.Now().After(deadline) {
			t.Fatalf("the one stream allowed: %d", st)
		} else if one == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	third := newBrowser(t, srv, "/")
	third.login("dee", testPassword)
	if _, st := third.stream("rollouts/" + m[1] + "/events"); st != http.StatusTooManyRequests {
		t.Fatalf("a stream past the server's bound: %d, want 429", st)
	}
	one.resp.Body.Close()
	httpapi.SetMaxStreams(s.api, 0)
	// The server stopping ends the streams of running campaigns.
	r = dep.post("rollouts/new", url.Values{"csrf": {csrf}, "release": {"cam@2.0"}, "target": {"region=us"}, "start": {"true"}})
	m = campaignPath.FindStringSubmatch(r.header.Get("Location"))
	if m == nil {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	live, _ := dep.stream("rollouts/" + m[1] + "/events")
	live.next(t, "progress")
	s.api.EndStreams()
	s.api.EndStreams() // twice is fine
	ended := make(chan error, 1)
	go func() { _, err := live.rd.ReadString(0); ended <- err }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("a stream outlived EndStreams")
	}
	found := 0
	for _, rec := range auditRecords(t, s) {
		if rec.Actor == "dee" && (rec.Action == "rollout.create" || rec.Action == "rollout.pause" || rec.Action == "rollout.cancel") && rec.Target == id {
			found++
		}
	}
	if found != 3 {
		t.Errorf("%d audit records of the campaign's create, pause and cancel, want 3", found)
	}
}

// TestConsoleRolloutPages: the rollouts list pages by keyset, newest first, each campaign once
// with its progress, all or of one state.
func TestConsoleRolloutPages(t *testing.T) {
	s := newStack(t)
	s.withRollouts()
	s.seedCampaigns(230, 7) // c00000 oldest; the newest 7 running, 20 members each
	s.addUser("vic", auth.RoleViewer, testPassword)
	srv := s.serve()
	b := newBrowser(t, srv, "/")
	b.login("vic", testPassword)
	row := regexp.MustCompile(`href="/rollouts/(c\d{5})"`)
	for _, c := range []struct {
		query string
		want  int
	}{{"rollouts", 230}, {"rollouts?state=running", 7}, {"rollouts?state=completed", 223}} {
		var got []string
		next, pages := c.query, 0
		for next != "" {
			p := b.get(next)
			wantPage(t, p, http.StatusOK, fmt.Sprintf("(%d)", c.want))
			for _, m := range row.FindAllStringSubmatch(p.body, -1) {
				got = append(got, m[1])
			}
			next = ""
			if m := regexp.MustCompile(`href="/(rollouts\?[^"]+)" rel="next"`).FindStringSubmatch(p.body); m != nil {
				next = strings.ReplaceAll(m[1], "&amp;", "&")
			}
			if pages++; pages > 5 {
				t.Fatal("too many pages")
			}
		}
		if len(got) != c.want || !slices.IsSortedFunc(got, func(a, b string) int { return strings.Compare(b, a) }) || len(slices.Compact(slices.Clone(got))) != c.want {
			t.Errorf("%s: %d campaigns %v, want %d, newest first, each once", c.query, len(got), got, c.want)
		}
	}
	// A running campaign's progress: 5 of its 20 members healthy.
	wantPage(t, b.get("rollouts?state=running"), http.StatusOK, `aria-label="c00229: 5 of 20 healthy"`)
	wantPage(t, b.get("rollouts?after=yesterday"), http.StatusBadRequest, "RFC 3339")
}
