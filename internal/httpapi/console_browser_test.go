package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/browsertest"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

// consoleSite is a stack serving the console on a real listener, with campaigns, 60 devices and
// a user of each role the flows need.
type consoleSite struct {
	*stack
	engine *rollout.Engine
	url    string
}

func newConsoleSite(t *testing.T) *consoleSite {
	s := newStack(t)
	e := s.withRollouts()
	s.seedDevices(60)
	s.addUser("dee", auth.RoleDeployer, testPassword)
	s.addUser("vic", auth.RoleViewer, testPassword)
	s.addUser("sue", auth.RoleSupport, testPassword)
	srv := s.serve()
	return &consoleSite{stack: s, engine: e, url: srv.URL}
}

// signIn logs the browser in through the login page and lands on the overview.
func (c *consoleSite) signIn(t *testing.T, b *browsertest.Browser, user string) {
	t.Helper()
	b.Navigate(c.url + "/")
	b.Wait("#user")
	b.Fill("#user", user)
	b.Fill("#password", testPassword)
	b.ClickAndWait(`.login button[type="submit"]`, "#h-status, #h-campaigns, #h-expiring")
	if got := b.Text("main h1"); got != "Overview" {
		t.Fatalf("after sign-in: %q", got)
	}
}

// checkPage checks the page as it is: no serious accessibility violation, and a screenshot.
func checkPage(t *testing.T, b *browsertest.Browser, name string) {
	t.Helper()
	b.Axe(t)
	b.Screenshot(name)
}

// drive plays the devices of a campaign until it ends or ctx is done: every assigned member
// commits the release (those in fail report a fatal install failure instead) and keeps checking
// in, and the engine ticks, every step.
func (c *consoleSite) drive(ctx context.Context, t *testing.T, id string, fail map[string]bool, step time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(step):
		}
		st, err := c.engine.Status(ctx, id)
		if err != nil {
			return
		}
		if st.Campaign.State == rollout.StateCompleted || st.Campaign.State == rollout.StateCancelled {
			return
		}
		ms, err := c.db.FindMembers(ctx, id)
		if err != nil {
			return
		}
		seen := map[string]time.Time{}
		for _, m := range ms {
			seen[m.DeviceID] = time.Now()
			if m.Status != rollout.MemberAssigned {
				continue
			}
			ev := wire.Event{Time: time.Now(), Target: st.Campaign.Target, Step: wire.StepCommit, Status: wire.StatusOK}
			if fail[m.DeviceID] {
				ev = wire.Event{Time: time.Now(), Target: st.Campaign.Target, Step: wire.StepInstall, Status: wire.StatusFailed, Fatal: true, Message: "disk full"}
			}
			if err := c.engine.OnReport(ctx, m.DeviceID, wire.Report{Events: []wire.Event{ev}}); err != nil && ctx.Err() == nil {
				t.Errorf("report: %v", err)
				return
			}
		}
		if err := c.db.TouchDevices(ctx, seen); err != nil && ctx.Err() == nil {
			t.Errorf("touch: %v", err)
			return
		}
		if err := c.engine.Tick(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("tick: %v", err)
			return
		}
	}
}

// TestConsoleBrowser runs the console's flows in a real chromium: sign in; find a device by
// attribute; create and start a campaign and watch it finish live, without a reload; see a
// failing release pause its campaign and resume it; a viewer sees no action, and the server
// refuses the action the viewer forces. Every page is checked with axe-core and photographed;
// any console error (a CSP violation included) fails the test.
func TestConsoleBrowser(t *testing.T) {
	c := newConsoleSite(t)
	b := browsertest.New(t)

	t.Run("login", func(t *testing.T) {
		b.Navigate(c.url + "/")
		b.Wait("#user")
		checkPage(t, b, "login")
		c.signIn(t, b, "dee")
		checkPage(t, b, "overview")
	})

	t.Run("find a device by attribute", func(t *testing.T) {
		b.Navigate(c.url + "/devices")
		b.Wait("#devices")
		checkPage(t, b, "devices")
		b.Fill("#f-attr", "region=ap")
		b.ClickAndWait(`form.filters button[type="submit"]`, "#devices")
		if n := b.Count("#devices tbody tr"); n != 20 {
			t.Fatalf("region=ap: %d devices listed, want 20", n)
		}
		if !strings.Contains(b.Location(), "attr=region%3Dap") {
			t.Errorf("location %s", b.Location())
		}
		b.ClickAndWait(`#devices tbody tr:first-child a`, "#h-identity")
		if got := b.Text("main"); !strings.Contains(got, "region") || !strings.Contains(got, "ap") || !strings.Contains(got, "<script>alert(1)</script>") {
			t.Errorf("device page does not show its attributes as text: %s", got)
		}
		checkPage(t, b, "device")
	})

	var id string
	t.Run("create, start and watch a campaign finish live", func(t *testing.T) {
		b.Navigate(c.url + "/rollouts/new")
		b.Wait("#f-release")
		b.Select("#f-release", "cam@2.0")
		b.Fill("#f-target", "region=eu")
		b.WaitText("#device-preview", "20 devices would take part")
		b.Fill("#f-waves", "25%,100%")
		b.Fill("#f-gate", "0")
		checkPage(t, b, "rollout-new")
		b.ClickAndWait(`form.campaign button[type="submit"]`, "#progress")
		loc := b.Location()
		id = loc[strings.LastIndex(loc, "/")+1:]
		b.WaitText("#h-progress", "running")
		checkPage(t, b, "rollout-running")
		// The devices play their part on the server; the page follows over its event stream.
		if _, err := browsertest.Eval[bool](b, `window.__noReload = true`); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); c.drive(ctx, t, id, nil, 300*time.Millisecond) }()
		defer func() { cancel(); wg.Wait() }()
		b.WaitText("#h-progress", "completed")
		b.WaitText("#done", "20 of 20 healthy")
		if still, err := browsertest.Eval[bool](b, `window.__noReload === true`); err != nil || !still {
			t.Fatalf("the page reloaded to show the progress (%v)", err)
		}
		checkPage(t, b, "rollout-completed")
	})

	t.Run("a failing release pauses its campaign, which is resumed", func(t *testing.T) {
		b.Navigate(c.url + "/rollouts/new")
		b.Wait("#f-release")
		b.Select("#f-release", "cam@2.0")
		b.Fill("#f-target", "region=us")
		b.WaitText("#device-preview", "20 devices would take part")
		b.Fill("#f-waves", "10,10")
		b.Fill("#f-failure", "20")
		b.Fill("#f-gate", "0")
		b.ClickAndWait(`form.campaign button[type="submit"]`, "#progress")
		loc := b.Location()
		cid := loc[strings.LastIndex(loc, "/")+1:]
		ms, err := c.db.FindMembers(context.Background(), cid)
		if err != nil {
			t.Fatal(err)
		}
		fail := map[string]bool{}
		for _, m := range ms {
			if m.Wave == 0 && len(fail) < 5 { // 5 of the first wave's 10: past 20%
				fail[m.DeviceID] = true
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); c.drive(ctx, t, cid, fail, 300*time.Millisecond) }()
		b.WaitText("#h-progress", "paused")
		b.WaitText("#progress", "5 of 10 devices failed")
		checkPage(t, b, "rollout-paused")
		cancel()
		wg.Wait()
		b.ClickAndWait(`#progress a[href$="/resume"]`, ".confirm")
		checkPage(t, b, "rollout-confirm-resume")
		b.ClickAndWait(`.confirm button[type="submit"]`, "#progress")
		b.WaitText("#h-progress", "running")
		ctx, cancel = context.WithCancel(context.Background())
		wg.Add(1)
		go func() { defer wg.Done(); c.drive(ctx, t, cid, nil, 300*time.Millisecond) }()
		defer func() { cancel(); wg.Wait() }()
		b.WaitText("#h-progress", "completed")
	})

	t.Run("a viewer sees no action, and a forced one is refused", func(t *testing.T) {
		v := browsertest.New(t)
		c.signIn(t, v, "vic")
		v.Navigate(c.url + "/rollouts")
		v.Wait("main h1")
		if n := v.Count(`a[href$="/rollouts/new"]`); n != 0 {
			t.Errorf("a viewer sees %d new-campaign links", n)
		}
		checkPage(t, v, "rollouts-viewer")
		v.Navigate(c.url + "/devices/d001")
		v.Wait("#h-identity")
		if n := v.Count(".actions a"); n != 0 {
			t.Errorf("a viewer sees %d device actions", n)
		}
		// Forced: the session's own CSRF token, a same-origin POST, from the page itself.
		status, err := browsertest.Eval[float64](v, `(async () => {
			const h = JSON.parse(document.body.getAttribute("hx-headers"));
			const r = await fetch("/devices/d001/decommission", {method: "POST", headers: h});
			return r.status;
		})()`)
		v.Allow("403") // the refused request is the point
		if err != nil || int(status) != http.StatusForbidden {
			t.Fatalf("forced decommission: %v %v, want 403", status, err)
		}
		d, err := c.db.FindDevice(context.Background(), "d001")
		if err != nil || d.Status != "accepted" {
			t.Fatalf("device after the forced action: %+v %v", d, err)
		}
		if id != "" {
			v.Navigate(c.url + "/rollouts/" + id)
			v.Wait("#progress")
			if n := v.Count("#progress .actions a"); n != 0 {
				t.Errorf("a viewer sees %d campaign actions", n)
			}
		}
	})

	t.Run("phone", func(t *testing.T) {
		b.Resize(390, 844)
		defer b.Resize(1280, 900)
		b.Navigate(c.url + "/")
		b.Wait("main h1")
		checkPage(t, b, "overview-phone")
		b.Navigate(c.url + "/devices")
		b.Wait("#devices")
		checkPage(t, b, "devices-phone")
	})
}
