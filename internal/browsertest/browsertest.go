// Package browsertest drives a real Debian chromium, headless, through chromedp for the tests of
// the web console: a fresh profile per test, helpers to navigate, click, fill and wait, full-page
// screenshots to a folder CI keeps, and axe-core accessibility checks. A test fails on any
// console error, uncaught exception or failed sub-request of the pages it visits (a Content
// Security Policy violation is a console error). Without chromium the test skips, or fails under
// CI (testenv.Tool).
//
// It is test support: only tests import it, so the vendored axe-core it embeds is never part of
// a served binary.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"upkeep.dev/upkeep/internal/testenv"
)

// Timeout bounds each helper's wait (an element to appear, a navigation to load). It is
// generous: the suite runs the browser tests beside the power-cut and fleet tests on two shared
// cores, where one login once took more than 15 s; a test that passes never waits for it.
const Timeout = 45 * time.Second

// Browser is one headless chromium with one tab, owned by a test and closed when it ends.
// Its methods are for the test's goroutine.
type Browser struct {
	t   testing.TB
	ctx context.Context

	mu       sync.Mutex
	problems []string          // console errors, exceptions, failed sub-requests not yet reported
	allowed  []string          // substrings of problems the test expects
	urls     map[string]string // request id → URL, to name a failed request
	shots    string
}

// Screenshots is the variable naming the folder Screenshot writes to (`.ci/run` points it at a
// folder CI keeps).
const Screenshots = "UPKEEP_TEST_SCREENSHOTS"

// New starts chromium with a fresh profile and a 1280×900 window, and stops it when the test
// ends. At the end, and after each helper, the test fails on any problem the pages reported.
func New(t testing.TB) *Browser {
	t.Helper()
	path := testenv.Tool(t, "chromium", "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &Browser{t: t, ctx: ctx, urls: map[string]string{}}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Listen(ctx, b.listen); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// The first command starts the browser and the tab.
	if err := b.do(chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { b.Check() })
	return b
}

// listen runs in the tab's event loop: it records problems and returns at once.
func (b *Browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *log.EventEntryAdded:
		// The browser asks every site for /favicon.ico on its own, whether a page names one or
		// not: its absence is no fault of the page.
		if strings.HasSuffix(ev.Entry.URL, "/favicon.ico") {
			return
		}
		b.logEntry(ev)
	case *network.EventResponseReceived:
		if strings.HasSuffix(ev.Response.URL, "/favicon.ico") {
			return
		}
		b.response(ev)
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				switch {
				case len(a.Value) > 0:
					parts = append(parts, strings.Trim(string(a.Value), `"`))
				default:
					parts = append(parts, a.Description)
				}
			}
			b.problems = append(b.problems, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("uncaught exception: %s (%s:%d)", msg, d.URL, d.LineNumber))
	case *network.EventRequestWillBeSent:
		b.urls[string(ev.RequestID)] = ev.Request.Method + " " + ev.Request.URL
	case *network.EventLoadingFailed:
		// A request the page itself cancelled (a navigation away, an event stream closed) is no
		// failure.
		if !ev.Canceled {
			b.problems = append(b.problems, fmt.Sprintf("failed request: %s: %s", b.urls[string(ev.RequestID)], ev.ErrorText))
		}
	case *network.EventLoadingFinished:
		delete(b.urls, string(ev.RequestID))
	}
}

// logEntry records an error of the browser's own log: CSP violations, resources that failed to
// load, mixed content.
func (b *Browser) logEntry(ev *log.EventEntryAdded) {
	if ev.Entry.Level == log.EntryLevelError {
		b.problems = append(b.problems, fmt.Sprintf("%s error: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
	}
}

// response records an answer of 400 or more to any request of the page.
func (b *Browser) response(ev *network.EventResponseReceived) {
	if ev.Response.Status >= 400 {
		b.problems = append(b.problems, fmt.Sprintf("failed request: %s: %d %s", b.urls[string(ev.RequestID)], ev.Response.Status, ev.Response.StatusText))
	}
}

// Allow makes problems containing substr expected: they no longer fail the test (a test that
// forces a refused action expects its 403). It lasts until the test ends.
func (b *Browser) Allow(substr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allowed = append(b.allowed, substr)
}

// TakeProblems returns the problems recorded since the last call or check, and forgets them, so
// that they do not fail the test.
func (b *Browser) TakeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, p := range b.problems {
		if !b.isAllowed(p) {
			out = append(out, p)
		}
	}
	b.problems = nil
	return out
}

func (b *Browser) isAllowed(p string) bool {
	for _, a := range b.allowed {
		if strings.Contains(p, a) {
			return true
		}
	}
	return false
}

// Check fails the test, without stopping it, for each problem recorded since the last check.
// Each helper calls it after its action; the end of the test calls it once more.
func (b *Browser) Check() {
	b.t.Helper()
	for _, p := range b.TakeProblems() {
		b.t.Errorf("browser: %s", p)
	}
}

// Context is the tab's context, for chromedp actions the helpers do not cover.
func (b *Browser) Context() context.Context { return b.ctx }

func (b *Browser) do(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, Timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Do runs chromedp actions with the helpers' timeout, fails the test if one fails, and checks
// for problems.
func (b *Browser) Do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.do(actions...); err != nil {
		b.Check()
		b.t.Fatalf("browser: %v", err)
	}
	b.Check()
}

// Navigate loads url and waits for its load event.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	b.Do(chromedp.Navigate(url))
}

// Click clicks the first element matching the CSS selector, once it is visible.
func (b *Browser) Click(sel string) {
	b.t.Helper()
	b.Do(chromedp.WaitVisible(sel), chromedp.Click(sel))
}

// ClickAndWait clicks sel, which navigates (a link, a form's button), and waits until next, a
// selector of the page it leads to, is visible.
func (b *Browser) ClickAndWait(sel, next string) {
	b.t.Helper()
	// A mark on the old document tells it from the new one: it is gone once the page changed.
	if _, err := Eval[bool](b, "window.__browsertestOld = true"); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
	b.Do(chromedp.WaitVisible(sel), chromedp.Click(sel))
	deadline := time.Now().Add(Timeout)
	for {
		fresh, err := Eval[bool](b, `window.__browsertestOld !== true && document.readyState === "complete"`)
		if err == nil && fresh {
			break
		}
		if time.Now().After(deadline) {
			b.Check()
			b.t.Fatalf("browser: clicking %s loaded no new page in %v", sel, Timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Do(chromedp.WaitVisible(next))
}

// Fill replaces the value of the input or textarea matching sel with value, typing it as a
// person would (so input events fire).
func (b *Browser) Fill(sel, value string) {
	b.t.Helper()
	b.Do(chromedp.WaitVisible(sel), chromedp.Clear(sel), chromedp.SendKeys(sel, value))
}

// Select picks the option whose value is value in the select matching sel.
func (b *Browser) Select(sel, value string) {
	b.t.Helper()
	b.Do(chromedp.WaitVisible(sel), chromedp.SetValue(sel, value))
}

// Submit submits the form containing sel.
func (b *Browser) Submit(sel string) {
	b.t.Helper()
	b.Do(chromedp.Submit(sel))
}

// Wait waits until the element matching sel is visible.
func (b *Browser) Wait(sel string) {
	b.t.Helper()
	b.Do(chromedp.WaitVisible(sel))
}

// WaitGone waits until no element matches sel.
func (b *Browser) WaitGone(sel string) {
	b.t.Helper()
	b.Do(chromedp.WaitNotPresent(sel))
}

// WaitText waits until the text of the element matching sel contains want (a page updated by
// server-sent events, say), and fails the test with the last text seen if it does not in time.
func (b *Browser) WaitText(sel, want string) {
	b.t.Helper()
	deadline := time.Now().Add(Timeout)
	var last string
	for {
		text, err := b.text(sel)
		if err == nil {
			last = text
			if strings.Contains(text, want) {
				b.Check()
				return
			}
		}
		if time.Now().After(deadline) {
			b.Check()
			b.t.Fatalf("browser: %s: text %q does not contain %q after %v", sel, last, want, Timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *Browser) text(sel string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, Timeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Text(sel))
}

// Text returns the visible text of the element matching sel.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	s, err := b.text(sel)
	b.Check()
	if err != nil {
		b.t.Fatalf("browser: text of %s: %v", sel, err)
	}
	return s
}

// Count returns how many elements match sel now, without waiting.
func (b *Browser) Count(sel string) int {
	b.t.Helper()
	n, err := Eval[int](b, fmt.Sprintf("document.querySelectorAll(%q).length", sel))
	if err != nil {
		b.t.Fatalf("browser: count %s: %v", sel, err)
	}
	return n
}

// Location returns the tab's current URL.
func (b *Browser) Location() string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Timeout)
	defer cancel()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		b.t.Fatalf("browser: location: %v", err)
	}
	return u
}

// Eval evaluates a JavaScript expression in the page through the DevTools protocol (not a
// script element, so a page's CSP does not stop it) and decodes its value, awaiting a promise.
func Eval[T any](b *Browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, Timeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// Resize sets the viewport, to see a page as a phone does (390×844) or back at 1280×900.
func (b *Browser) Resize(width, height int64) {
	b.t.Helper()
	b.Do(chromedp.EmulateViewport(width, height))
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Screenshot writes a full-page PNG of the tab to $UPKEEP_TEST_SCREENSHOTS (a temporary folder
// kept after the test when unset), named after the test and name, and returns its path.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	dir, err := b.screenshotDir()
	if err != nil {
		b.t.Fatalf("browser: screenshot folder: %v", err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, Timeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	file := unsafeName.ReplaceAllString(b.t.Name()+"-"+name, "_") + ".png"
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	b.t.Logf("screenshot %s", path)
	b.Check()
	return path
}

func (b *Browser) screenshotDir() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shots != "" {
		return b.shots, nil
	}
	dir := os.Getenv(Screenshots)
	if dir == "" {
		d, err := os.MkdirTemp("", "upkeep-screenshots-")
		if err != nil {
			return "", err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b.shots = dir
	return dir, nil
}
