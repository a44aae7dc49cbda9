// Package storetest is the conformance suite every Upkeep store runs: the same tests for the
// embedded SQLite store and for any other backend.
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/ddi"
	"upkeep.dev/upkeep/internal/deltagen"
	"upkeep.dev/upkeep/internal/director"
	"upkeep.dev/upkeep/internal/faillog"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/internal/webhook"
)

// Store is everything a full Upkeep store implements.
type Store interface {
	fleet.Store
	release.Store
	product.Store
	imagerepo.Store
	director.Store
	auth.Store
	rollout.Store
	ddi.Store
	faillog.Store
	audit.Store
	webhook.Store
	deltagen.Store
	// AcquireLease takes or renews a named lease for holder for ttl by the database's clock;
	// false if another holder's lease has not expired.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// DeletePendingDevices removes devices pending since before before; how many.
	DeletePendingDevices(ctx context.Context, before time.Time) (int64, error)
	// PruneEvents deletes events older than before and all but each device's newest keep,
	// sparing each device's first commit of a published release; how many.
	PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error)
	// PruneActions deletes the DDI actions of removed devices, and of each device the closed
	// ones older than before and past its newest keep, sparing its newest successful one; how
	// many.
	PruneActions(ctx context.Context, before time.Time, keep int) (int64, error)
}

// Run runs the suite; newStore returns a fresh, empty store for each test.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	tests := map[string]func(*testing.T, Store){
		"Devices":          testDevices,
		"EnrollTokens":     testEnrollTokens,
		"Events":           testEvents,
		"Retention":        testRetention,
		"Releases":         testReleases,
		"Metadata":         testMetadata,
		"Publish":          testPublish,
		"DirectorViews":    testDirectorViews,
		"AdminTokens":      testAdminTokens,
		"UsedRequests":     testUsedRequests,
		"DeviceStatus":     testDeviceStatus,
		"LastAdmin":        testLastAdmin,
		"Products":         testProducts,
		"Concurrent":       testConcurrentWrites,
		"Leases":           testLeases,
		"Campaigns":        testCampaigns,
		"CampaignPages":    testCampaignPages,
		"DynamicCampaigns": testDynamicCampaigns,
		"Simulated":        testSimulated,
		"DDIActions":       testDDIActions,
		"DDITokens":        testDDITokens,
		"DeviceKinds":      testDeviceKinds,
		"Users":            testUsers,
		"Audit":            testAudit,
		"SSOUsers":         testSSOUsers,
		"PruneSessions":    testPruneSessions,
		"DeviceLogs":       testDeviceLogs,
		"Webhooks":         testWebhooks,
		"DevicePages":      testDevicePages,
		"DeviceAttributes": testDeviceAttributes,
		"DeltaJobs":        testDeltaJobs,
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) { f(t, newStore(t)) })
	}
}

var (
	ctx = context.Background()
	t0  = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
)

func wantCode(t *testing.T, err error, code apperr.Code) {
	t.Helper()
	if apperr.CodeOf(err) != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
}

func testDevices(t *testing.T, s Store) {
	d := &fleet.Device{ID: "d1", PublicKey: []byte{1, 2, 3}, Serial: "SN1", Product: "p", HardwareID: "h",
		Attributes: map[string]string{"region": "eu"}, Status: fleet.StatusPending, InstalledVer: "1.0.0", EnrolledAt: t0}
	if err := s.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.CreateDevice(ctx, d), apperr.Conflict)
	_, err := s.FindDevice(ctx, "nope")
	wantCode(t, err, apperr.NotFound)
	got, err := s.FindDevice(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(d, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	st, v, ver := fleet.StatusAccepted, int64(7), "1.0.1"
	if err := s.UpdateDevice(ctx, "d1", fleet.DeviceUpdate{Status: &st, DirectorVersion: &v, InstalledVer: &ver}); err != nil {
		t.Fatal(err)
	}
	older := int64(3)
	if err := s.UpdateDevice(ctx, "d1", fleet.DeviceUpdate{DirectorVersion: &older}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.FindDevice(ctx, "d1")
	if got.Status != st || got.DirectorVersion != 7 || got.InstalledVer != ver {
		t.Fatalf("after update: %+v (director version must never go back)", got)
	}
	wantCode(t, s.UpdateDevice(ctx, "nope", fleet.DeviceUpdate{Status: &st}), apperr.NotFound)
	for _, id := range []string{"d2", "d3"} {
		d2 := *d
		d2.ID, d2.HardwareID = id, "h2"
		if err := s.CreateDevice(ctx, &d2); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		f    fleet.DeviceFilter
		want []string
	}{
		{fleet.DeviceFilter{}, []string{"d1", "d2", "d3"}},
		{fleet.DeviceFilter{HardwareID: "h2"}, []string{"d2", "d3"}},
		{fleet.DeviceFilter{Status: fleet.StatusAccepted}, []string{"d1"}},
		{fleet.DeviceFilter{IDs: []string{"d3", "d1"}}, []string{"d1", "d3"}},
		{fleet.DeviceFilter{Limit: 1, Offset: 1}, []string{"d2"}},
	} {
		ds, err := s.FindDevices(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range ds {
			ids = append(ids, d.ID)
		}
		if diff := cmp.Diff(c.want, ids); diff != "" {
			t.Errorf("FindDevices(%+v) (-want +got):\n%s", c.f, diff)
		}
	}
	if err := s.TouchDevices(ctx, map[string]time.Time{"d1": t0.Add(time.Hour), "unknown": t0}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.FindDevice(ctx, "d1")
	if !got.LastSeen.Equal(t0.Add(time.Hour)) {
		t.Fatalf("last seen %v", got.LastSeen)
	}
}

func testEnrollTokens(t *testing.T, s Store) {
	hash := auth.HashSecret("secret")
	if err := s.CreateEnrollToken(ctx, &fleet.EnrollToken{ID: "t1", Name: "line", Hash: hash, UsesLeft: 2, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		tok, err := s.UseEnrollToken(ctx, hash, "", t0)
		if err != nil || tok.UsesLeft != 1-i {
			t.Fatalf("use %d: %+v %v", i, tok, err)
		}
	}
	_, err := s.UseEnrollToken(ctx, hash, "", t0)
	wantCode(t, err, apperr.Unauthorized)
	_, err = s.UseEnrollToken(ctx, auth.HashSecret("other"), "", t0)
	wantCode(t, err, apperr.Unauthorized)
	exp := auth.HashSecret("expiring")
	s.CreateEnrollToken(ctx, &fleet.EnrollToken{ID: "t2", Name: "x", Hash: exp, UsesLeft: -1, ExpiresAt: t0.Add(time.Hour), CreatedAt: t0})
	if _, err := s.UseEnrollToken(ctx, exp, "", t0); err != nil {
		t.Fatal(err)
	}
	_, err = s.UseEnrollToken(ctx, exp, "", t0.Add(2*time.Hour))
	wantCode(t, err, apperr.Unauthorized)
	// A token for one product is refused for another without losing a use.
	pt := auth.HashSecret("product-token")
	s.CreateEnrollToken(ctx, &fleet.EnrollToken{ID: "t3", Name: "tstat", Hash: pt, UsesLeft: 1, Product: "thermostat", CreatedAt: t0})
	_, err = s.UseEnrollToken(ctx, pt, "doorbell", t0)
	wantCode(t, err, apperr.Forbidden)
	if tok, err := s.UseEnrollToken(ctx, pt, "thermostat", t0); err != nil || tok.UsesLeft != 0 {
		t.Fatalf("use after a refusal for another product: %+v %v", tok, err)
	}
	// A revoked token admits no device; the list shows it revoked.
	rt := auth.HashSecret("revoked-token")
	s.CreateEnrollToken(ctx, &fleet.EnrollToken{ID: "t4", Name: "line-2", Hash: rt, UsesLeft: 10, CreatedAt: t0.Add(time.Second)})
	if err := s.RevokeEnrollToken(ctx, "t4", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.RevokeEnrollToken(ctx, "nope", t0), apperr.NotFound)
	_, err = s.UseEnrollToken(ctx, rt, "", t0.Add(2*time.Minute))
	wantCode(t, err, apperr.Unauthorized)
	list, err := s.FindEnrollTokens(ctx)
	if err != nil || len(list) != 4 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if last := list[3]; last.ID != "t4" || last.UsesLeft != 10 || !last.RevokedAt.Equal(t0.Add(time.Minute)) || last.Hash != nil {
		t.Fatalf("listed %+v", last)
	}
}

func testEvents(t *testing.T, s Store) {
	var ev []fleet.Event
	for i := range 5 {
		ev = append(ev, fleet.Event{DeviceID: "d1", Time: t0.Add(time.Duration(i) * time.Second), Step: "download", Status: "ok", Message: string(rune('a' + i))})
	}
	if err := s.AddEvents(ctx, ev); err != nil {
		t.Fatal(err)
	}
	got, err := s.FindEvents(ctx, "d1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Message != "e" || !got[0].Time.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("newest first, limited: %+v", got)
	}

	// A report's device update and events are stored together, or not at all.
	d := &fleet.Device{ID: "d2", PublicKey: []byte{2}, Serial: "SN2", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0}
	if err := s.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	state, ver := "idle", "1.0.1"
	commit := []fleet.Event{{DeviceID: "d2", Time: t0, Target: "f-1.0.1", Step: "commit", Status: "ok"}}
	if err := s.RecordReport(ctx, "d2", fleet.DeviceUpdate{State: &state, InstalledVer: &ver}, commit); err != nil {
		t.Fatal(err)
	}
	if dev, err := s.FindDevice(ctx, "d2"); err != nil || dev.State != "idle" || dev.InstalledVer != "1.0.1" {
		t.Fatalf("device after its report: %+v %v", dev, err)
	}
	if got, err := s.FindEvents(ctx, "d2", 10); err != nil || len(got) != 1 || got[0].Step != "commit" {
		t.Fatalf("events after the report: %+v %v", got, err)
	}
	lost := []fleet.Event{{DeviceID: "nope", Time: t0, Step: "commit", Status: "ok"}}
	wantCode(t, s.RecordReport(ctx, "nope", fleet.DeviceUpdate{State: &state}, lost), apperr.NotFound)
	if got, err := s.FindEvents(ctx, "nope", 10); err != nil || len(got) != 0 {
		t.Fatalf("an unknown device's report left events: %+v %v", got, err)
	}
}

// testRetention: pending enrolments expire, device events are kept by age and by count per
// device, and the evidence of time to patch (a device's first commit of a published release)
// outlives both.
func testRetention(t *testing.T, s Store) {
	for i, st := range []string{fleet.StatusPending, fleet.StatusPending, fleet.StatusAccepted} {
		d := &fleet.Device{ID: fmt.Sprintf("r%d", i), PublicKey: []byte{byte(i)}, Serial: "SN", Product: "p", HardwareID: "h",
			Status: st, EnrolledAt: t0.Add(time.Duration(i) * time.Hour)}
		if err := s.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.CountDevices(ctx, fleet.DeviceFilter{Status: fleet.StatusPending, Limit: 1}); err != nil || n != 2 {
		t.Fatalf("pending devices counted: %d, %v; want 2", n, err)
	}
	// r0 enrolled at t0, r1 an hour later, r2 (accepted) two hours later.
	if n, err := s.DeletePendingDevices(ctx, t0.Add(30*time.Minute)); err != nil || n != 1 {
		t.Fatalf("deleted %d pending devices, %v; want 1", n, err)
	}
	if n, err := s.DeletePendingDevices(ctx, t0.Add(24*time.Hour)); err != nil || n != 1 {
		t.Fatalf("deleted %d pending devices, %v; want 1 (never an accepted one)", n, err)
	}
	if n, err := s.CountDevices(ctx, fleet.DeviceFilter{}); err != nil || n != 1 {
		t.Fatalf("%d devices left, %v; want the accepted one", n, err)
	}

	if err := s.CreateRelease(ctx, &release.Release{Product: "p", Version: "2.0.0", HardwareIDs: []string{"h"}, Target: "p-2.0.0.img",
		Length: 1, SHA256: "aa", SHA512: "bb", TargetsVersion: 2, PublishedAt: t0}); err != nil {
		t.Fatal(err)
	}
	var ev []fleet.Event
	// d1: an old commit of a published release, then 20 events an hour apart; d2: 3 events.
	ev = append(ev, fleet.Event{DeviceID: "d1", Time: t0, Target: "p-2.0.0.img", Step: "commit", Status: "ok"})
	for i := range 20 {
		ev = append(ev, fleet.Event{DeviceID: "d1", Time: t0.Add(time.Duration(i+1) * time.Hour), Target: "x", Step: "commit", Status: "ok", Message: fmt.Sprint(i)})
	}
	for i := range 3 {
		ev = append(ev, fleet.Event{DeviceID: "d2", Time: t0.Add(time.Duration(i) * time.Hour), Step: "download", Status: "ok"})
	}
	if err := s.AddEvents(ctx, ev); err != nil {
		t.Fatal(err)
	}
	// By age: everything before t0+10h goes, except d1's commit of the release.
	if n, err := s.PruneEvents(ctx, t0.Add(10*time.Hour), 0); err != nil || n != 9+3 {
		t.Fatalf("pruned %d events by age, %v; want 12", n, err)
	}
	// By count: d1 keeps its newest 5 and the evidence.
	if n, err := s.PruneEvents(ctx, time.Time{}, 5); err != nil || n != 6 {
		t.Fatalf("pruned %d events by count, %v; want 6", n, err)
	}
	got, err := s.FindEvents(ctx, "d1", 100)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range got {
		msgs = append(msgs, e.Target+":"+e.Message)
	}
	if diff := cmp.Diff([]string{"x:19", "x:18", "x:17", "x:16", "x:15", "p-2.0.0.img:"}, msgs); diff != "" {
		t.Fatalf("events kept (-want +got):\n%s", diff)
	}
	if got, _ := s.FindEvents(ctx, "d2", 100); len(got) != 0 {
		t.Fatalf("d2 kept %d events older than the retention", len(got))
	}
}

func testReleases(t *testing.T, s Store) {
	r := &release.Release{Product: "p", Version: "1.0.0", HardwareIDs: []string{"h"}, SecurityVersion: 1, Class: "security",
		Fixes: []string{"CVE-1"}, Target: "p/1.0.0/f.img", Length: 10, SHA256: "aa", SHA512: "bb", TargetsVersion: 2, PublishedAt: t0}
	if err := s.CreateRelease(ctx, r); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.CreateRelease(ctx, r), apperr.Conflict)
	got, err := s.FindRelease(ctx, "p", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	_, err = s.FindRelease(ctx, "p", "9")
	wantCode(t, err, apperr.NotFound)
	r2 := *r
	r2.Version, r2.Target, r2.PublishedAt = "1.0.1", "p/1.0.1/f.img", t0.Add(time.Hour)
	s.CreateRelease(ctx, &r2)
	all, _ := s.FindReleases(ctx, release.Filter{Product: "p"})
	if len(all) != 2 || all[0].Version != "1.0.1" {
		t.Fatalf("newest first: %+v", all)
	}
	byTarget, _ := s.FindReleases(ctx, release.Filter{Target: "p/1.0.0/f.img"})
	if len(byTarget) != 1 || byTarget[0].Version != "1.0.0" {
		t.Fatalf("by target: %+v", byTarget)
	}
}

func testMetadata(t *testing.T, s Store) {
	for v := int64(1); v <= 3; v++ {
		if err := s.PutMetadata(ctx, &imagerepo.Meta{Repo: "image", Role: "targets", Version: v, Body: []byte{byte(v)}, Expires: t0}); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, s.PutMetadata(ctx, &imagerepo.Meta{Repo: "image", Role: "targets", Version: 2, Body: []byte{9}, Expires: t0}), apperr.Conflict)
	m, err := s.LatestMetadata(ctx, "image", "targets")
	if err != nil || m.Version != 3 || !bytes.Equal(m.Body, []byte{3}) || !m.Expires.Equal(t0) {
		t.Fatalf("latest: %+v %v", m, err)
	}
	m, err = s.FindMetadata(ctx, "image", "targets", 2)
	if err != nil || !bytes.Equal(m.Body, []byte{2}) {
		t.Fatalf("find: %+v %v", m, err)
	}
	_, err = s.LatestMetadata(ctx, "director", "targets")
	wantCode(t, err, apperr.NotFound)
	// LatestVersions: every role of one repository at its highest version.
	for _, m := range []imagerepo.Meta{{Role: "p.thermostat", Version: 4}, {Role: "p.thermostat", Version: 5}, {Role: "bin.a", Version: 1}} {
		m.Repo, m.Body, m.Expires = "image", []byte{1}, t0
		if err := s.PutMetadata(ctx, &m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutMetadata(ctx, &imagerepo.Meta{Repo: "director", Role: "root", Version: 7, Body: []byte{1}, Expires: t0}); err != nil {
		t.Fatal(err)
	}
	vs, err := s.LatestVersions(ctx, "image")
	if want := map[string]int64{"targets": 3, "p.thermostat": 5, "bin.a": 1}; err != nil || !maps.Equal(vs, want) {
		t.Fatalf("latest versions: %v %v, want %v", vs, err, want)
	}
}

// testPublish: targets metadata and the release it publishes are stored together or not at
// all. A release insert that fails after the targets were written (here: the release exists)
// leaves the targets version unstored, and a retry then stores both.
func testPublish(t *testing.T, s Store) {
	if err := s.PutMetadata(ctx, &imagerepo.Meta{Repo: "image", Role: "targets", Version: 1, Body: []byte{1}, Expires: t0}); err != nil {
		t.Fatal(err)
	}
	rel := &release.Release{Product: "p", Version: "1.0.0", HardwareIDs: []string{"h"}, Target: "p/1.0.0/f.img", Length: 1, SHA256: "a", SHA512: "b", TargetsVersion: 2, PublishedAt: t0}
	if err := s.CreateRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
	v2 := &imagerepo.Meta{Repo: "image", Role: "targets", Version: 2, Body: []byte{2}, Expires: t0}
	wantCode(t, s.PublishTargets(ctx, v2, rel), apperr.Conflict)
	_, err := s.FindMetadata(ctx, "image", "targets", 2)
	wantCode(t, err, apperr.NotFound)
	if m, err := s.LatestMetadata(ctx, "image", "targets"); err != nil || m.Version != 1 {
		t.Fatalf("after a failed publish the latest targets are %+v %v, want version 1", m, err)
	}

	rel2 := *rel
	rel2.Version, rel2.Target = "1.0.1", "p/1.0.1/f.img"
	if err := s.PublishTargets(ctx, v2, &rel2); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if m, err := s.LatestMetadata(ctx, "image", "targets"); err != nil || m.Version != 2 || !bytes.Equal(m.Body, []byte{2}) {
		t.Fatalf("after the retry the latest targets are %+v %v", m, err)
	}
	if got, err := s.FindRelease(ctx, "p", "1.0.1"); err != nil || got.TargetsVersion != 2 {
		t.Fatalf("published release: %+v %v", got, err)
	}
	// The targets version exists now: publishing it again stores no release either.
	rel3 := rel2
	rel3.Version, rel3.Target = "1.0.2", "p/1.0.2/f.img"
	wantCode(t, s.PublishTargets(ctx, v2, &rel3), apperr.Conflict)
	_, err = s.FindRelease(ctx, "p", "1.0.2")
	wantCode(t, err, apperr.NotFound)
}

func testDirectorViews(t *testing.T, s Store) {
	view := func(v int64) *uptane.DirectorView {
		return &uptane.DirectorView{Version: v, Targets: []byte{byte(v)}, Snapshot: []byte{2}, Timestamp: []byte{3}, Expires: t0}
	}
	_, err := s.FindDirectorView(ctx, "d1", 0)
	wantCode(t, err, apperr.NotFound)
	for v := int64(1); v <= 5; v++ {
		if err := s.PutDirectorView(ctx, "d1", v-1, view(v), nil); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, s.PutDirectorView(ctx, "d1", 3, view(4), nil), apperr.Conflict) // a stale writer loses
	got, err := s.FindDirectorView(ctx, "d1", 0)
	if err != nil || got.Version != 5 {
		t.Fatalf("latest: %+v %v", got, err)
	}
	if got, err := s.FindDirectorView(ctx, "d1", 4); err != nil || !bytes.Equal(got.Targets, []byte{4}) {
		t.Fatalf("version 4: %+v %v", got, err)
	}
	_, err = s.FindDirectorView(ctx, "d1", 1) // pruned: only the newest few stay
	wantCode(t, err, apperr.NotFound)

	// A view and the assignment it carries are stored together, with the device's director
	// version.
	d := &fleet.Device{ID: "d2", PublicKey: []byte{4}, Serial: "SN2", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0}
	if err := s.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDirectorView(ctx, "d2", 0, view(1), &director.Assignment{Target: "fw-1.1.bin", Policy: `{"consent":true}`}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDirectorView(ctx, "d2", 1, view(2), nil); err != nil { // a re-signature keeps the assignment
		t.Fatal(err)
	}
	got, err = s.FindDirectorView(ctx, "d2", 0)
	if err != nil || got.Version != 2 {
		t.Fatalf("d2 latest: %+v %v", got, err)
	}
	dev, err := s.FindDevice(ctx, "d2")
	if err != nil || dev.DirectorVersion != 2 || dev.Assigned != "fw-1.1.bin" || dev.AssignPolicy != `{"consent":true}` {
		t.Fatalf("d2 after its views: %+v %v", dev, err)
	}
	// Several devices' views in one transaction: a stale one is skipped, the others stored.
	d3 := &fleet.Device{ID: "d3", PublicKey: []byte{5}, Serial: "SN3", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0}
	if err := s.CreateDevice(ctx, d3); err != nil {
		t.Fatal(err)
	}
	as := &director.Assignment{Target: "fw-1.2.bin"}
	stale, err := s.PutDirectorViews(ctx, []director.ViewPut{{DeviceID: "d2", Prev: 1, View: view(2), Assign: as}, {DeviceID: "d3", Prev: 0, View: view(1), Assign: as}})
	if err != nil || len(stale) != 1 || stale[0] != "d2" {
		t.Fatalf("batch: stale %v, err %v; want d2 stale", stale, err)
	}
	if dev, err := s.FindDevice(ctx, "d3"); err != nil || dev.DirectorVersion != 1 || dev.Assigned != "fw-1.2.bin" {
		t.Fatalf("d3 after the batch: %+v %v", dev, err)
	}
	vs, err := s.LatestDirectorVersions(ctx, []string{"d2", "d3", "nope"})
	if err != nil || len(vs) != 2 || vs["d2"] != 2 || vs["d3"] != 1 {
		t.Fatalf("latest versions: %v %v", vs, err)
	}
	wantCode(t, s.PutDirectorView(ctx, "d2", 1, view(2), &director.Assignment{Target: "fw-9.bin"}), apperr.Conflict)
	if dev, err := s.FindDevice(ctx, "d2"); err != nil || dev.Assigned != "fw-1.1.bin" {
		t.Fatalf("a losing writer changed the assignment: %+v %v", dev, err)
	}
}

func testAdminTokens(t *testing.T, s Store) {
	if n, err := s.CountAdminTokens(ctx); err != nil || n != 0 {
		t.Fatalf("count %d %v", n, err)
	}
	h := auth.HashSecret("upk_admin_x")
	first := &auth.OperatorToken{ID: auth.TokenID(h), Name: "admin", Role: auth.RoleAdmin, Hash: h, CreatedAt: t0}
	if err := s.CreateOperatorToken(ctx, first); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.CreateOperatorToken(ctx, first), apperr.Conflict)
	got, err := s.FindOperatorToken(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	_, err = s.FindOperatorToken(ctx, auth.HashSecret("nope"))
	wantCode(t, err, apperr.NotFound)

	// The last active admin token cannot be revoked; a viewer can.
	gen0, err := s.RevocationGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.RevokeOperatorToken(ctx, first.ID, t0), apperr.Conflict)
	vh := auth.HashSecret("upk_admin_viewer")
	viewer := &auth.OperatorToken{ID: auth.TokenID(vh), Name: "ci", Role: auth.RoleViewer, Hash: vh, CreatedAt: t0.Add(time.Second), ExpiresAt: t0.Add(time.Hour)}
	if err := s.CreateOperatorToken(ctx, viewer); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeOperatorToken(ctx, viewer.ID, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.RevokeOperatorToken(ctx, "0000000000000000", t0), apperr.NotFound)
	if gen, err := s.RevocationGeneration(ctx); err != nil || gen <= gen0 {
		t.Fatalf("revocation generation %d after a revocation, was %d (%v)", gen, gen0, err)
	}
	if err := s.TouchOperatorTokens(ctx, map[string]time.Time{first.ID: t0.Add(2 * time.Hour), "unknown": t0}); err != nil {
		t.Fatal(err)
	}
	s.TouchOperatorTokens(ctx, map[string]time.Time{first.ID: t0.Add(time.Hour)}) // never back
	list, err := s.FindOperatorTokens(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if !list[0].LastUsed.Equal(t0.Add(2*time.Hour)) || !list[1].RevokedAt.Equal(t0.Add(time.Minute)) || list[1].Active(t0.Add(2*time.Minute)) {
		t.Fatalf("list: %+v %+v", list[0], list[1])
	}
	if n, _ := s.CountAdminTokens(ctx); n != 2 {
		t.Fatalf("count %d", n)
	}

	a, err := s.Setting(ctx, "k", func() []byte { return []byte("first") })
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Setting(ctx, "k", func() []byte { return []byte("second") })
	if string(a) != "first" || string(b) != "first" {
		t.Fatalf("setting: %q %q, the first value must win", a, b)
	}
	if v, err := s.FindSetting(ctx, "k"); err != nil || string(v) != "first" {
		t.Fatalf("find setting: %q %v", v, err)
	}
	if err := s.DeleteSetting(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	_, err = s.FindSetting(ctx, "k")
	wantCode(t, err, apperr.NotFound)
}

// testLastAdmin: two admins revoking each other's token at once leave one of them active.
func testLastAdmin(t *testing.T, s Store) {
	ids := make([]string, 2)
	for i := range ids {
		h := auth.HashSecret(fmt.Sprint("upk_admin_", i))
		ids[i] = auth.TokenID(h)
		if err := s.CreateOperatorToken(ctx, &auth.OperatorToken{ID: ids[i], Name: "a", Role: auth.RoleAdmin, Hash: h, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 2)
	for _, id := range ids {
		go func() { errs <- s.RevokeOperatorToken(ctx, id, t0) }()
	}
	var ok int
	for range ids {
		if err := <-errs; err == nil {
			ok++
		} else if apperr.CodeOf(err) != apperr.Conflict {
			t.Fatal(err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of two concurrent revocations of the last two admin tokens succeeded, want 1", ok)
	}
}

// testUsedRequests: a signed request id is used once, across every handle on the database, and
// forgotten after its window.
func testUsedRequests(t *testing.T, s Store) {
	id := bytes.Repeat([]byte{7}, 32)
	if err := s.UseRequest(ctx, id, t0.Add(15*time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.UseRequest(ctx, id, t0.Add(15*time.Minute)), apperr.Conflict)
	other := bytes.Repeat([]byte{8}, 32)
	if err := s.UseRequest(ctx, other, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneRequests(ctx, t0.Add(30*time.Minute)); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
	if err := s.UseRequest(ctx, id, t0.Add(45*time.Minute)); err != nil {
		t.Fatalf("a pruned id is usable again: %v", err)
	}
	wantCode(t, s.UseRequest(ctx, other, t0.Add(time.Hour)), apperr.Conflict)
}

// testDeviceStatus: status changes are conditional and move the revocation generation.
func testDeviceStatus(t *testing.T, s Store) {
	d := &fleet.Device{ID: "d1", PublicKey: []byte{1}, Serial: "SN1", Product: "p", HardwareID: "h", Status: fleet.StatusPending, EnrolledAt: t0}
	if err := s.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	gen0, _ := s.RevocationGeneration(ctx)
	wantCode(t, s.SetDeviceStatus(ctx, "d1", []string{fleet.StatusAccepted}, fleet.StatusDecommissioned), apperr.Conflict)
	wantCode(t, s.SetDeviceStatus(ctx, "nope", []string{fleet.StatusAccepted}, fleet.StatusDecommissioned), apperr.NotFound)
	if err := s.SetDeviceStatus(ctx, "d1", []string{fleet.StatusPending}, fleet.StatusAccepted); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDeviceStatus(ctx, "d1", []string{fleet.StatusAccepted}, fleet.StatusDecommissioned); err != nil {
		t.Fatal(err)
	}
	ids, err := s.DecommissionedDevices(ctx)
	if err != nil || len(ids) != 1 || ids[0] != "d1" {
		t.Fatalf("decommissioned: %v %v", ids, err)
	}
	if gen, _ := s.RevocationGeneration(ctx); gen < gen0+2 {
		t.Fatalf("revocation generation %d, want at least %d", gen, gen0+2)
	}
}

func testProducts(t *testing.T, s Store) {
	_, err := s.FindProduct(ctx, "p")
	wantCode(t, err, apperr.NotFound)
	p := &product.Product{Name: "p", Policy: []byte(`{"support_end":"2031-01-01"}`), DeclarationKey: []byte("PEM"), UpdatedAt: t0}
	if err := s.PutProduct(ctx, p, time.Time{}, []product.PolicyChange{{At: t0, Actor: "admin", Field: "support_end", Old: "", New: "2031-01-01"}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.PutProduct(ctx, p, time.Time{}, nil), apperr.Conflict)
	got, err := s.FindProduct(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	p2 := *got
	p2.Policy, p2.UpdatedAt = []byte(`{"support_end":"2032-01-01"}`), t0.Add(time.Hour)
	wantCode(t, s.PutProduct(ctx, &p2, t0.Add(-time.Hour), nil), apperr.Conflict) // stale read
	if err := s.PutProduct(ctx, &p2, got.UpdatedAt, []product.PolicyChange{{At: t0.Add(time.Hour), Actor: "admin", Field: "support_end", Old: "2031-01-01", New: "2032-01-01"}}); err != nil {
		t.Fatal(err)
	}
	h, err := s.FindPolicyHistory(ctx, "p")
	if err != nil || len(h) != 2 || h[1].New != "2032-01-01" || h[0].Product != "p" {
		t.Fatalf("history: %+v %v", h, err)
	}
	all, _ := s.FindProducts(ctx)
	if len(all) != 1 || string(all[0].Policy) != `{"support_end":"2032-01-01"}` {
		t.Fatalf("products: %+v", all)
	}
}

// testConcurrentWrites runs many transactions at once on statements never used before: none may
// wait for a second connection while holding one (a small pool would deadlock).
func testConcurrentWrites(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, 32)
	for i := range 32 {
		go func() {
			id := fmt.Sprintf("c%02d", i)
			err := s.CreateDevice(ctx, &fleet.Device{ID: id, PublicKey: []byte{byte(i)}, Serial: id, Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0})
			if err == nil {
				state := "idle"
				err = s.RecordReport(ctx, id, fleet.DeviceUpdate{State: &state}, []fleet.Event{{DeviceID: id, Time: t0, Step: "commit", Status: "ok"}})
			}
			if err == nil {
				err = s.PutDirectorView(ctx, id, 0, &uptane.DirectorView{Version: 1, Targets: []byte{1}, Snapshot: []byte{2}, Timestamp: []byte{3}, Expires: t0}, &director.Assignment{Target: "t"})
			}
			errs <- err
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// testSimulated: a simulation token says so when used, simulated devices read back as such, and
// removing them takes their events and views and leaves every other device alone.
func testSimulated(t *testing.T, s Store) {
	hash := auth.HashSecret("simulation")
	if err := s.CreateEnrollToken(ctx, &fleet.EnrollToken{ID: "sim", Name: "simulator", Hash: hash, UsesLeft: 1, Simulation: true, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if tok, err := s.UseEnrollToken(ctx, hash, "thermostat", t0); err != nil || !tok.Simulation {
		t.Fatalf("simulation token used: %+v %v", tok, err)
	}
	for _, d := range []*fleet.Device{
		{ID: "real", PublicKey: []byte("k1"), Serial: "s1", Product: "thermostat", HardwareID: "hw", Status: fleet.StatusAccepted, EnrolledAt: t0},
		{ID: "sim1", PublicKey: []byte("k2"), Serial: "s2", Product: "thermostat", HardwareID: "hw", Status: fleet.StatusAccepted, EnrolledAt: t0, Simulated: true},
		{ID: "sim2", PublicKey: []byte("k3"), Serial: "s3", Product: "thermostat", HardwareID: "hw", Status: fleet.StatusAccepted, EnrolledAt: t0, Simulated: true},
	} {
		if err := s.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		if err := s.AddEvents(ctx, []fleet.Event{{DeviceID: d.ID, Time: t0, Step: "check", Status: "ok"}}); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := s.FindDevice(ctx, "sim1"); err != nil || !d.Simulated {
		t.Fatalf("simulated device reads back as %+v %v", d, err)
	}
	ids, err := s.RemoveSimulatedDevices(ctx)
	if err != nil || len(ids) != 2 || ids[0] != "sim1" || ids[1] != "sim2" {
		t.Fatalf("removed %v %v, want sim1 and sim2", ids, err)
	}
	_, err = s.FindDevice(ctx, "sim1")
	wantCode(t, err, apperr.NotFound)
	if ev, err := s.FindEvents(ctx, "sim2", 10); err != nil || len(ev) != 0 {
		t.Errorf("events of a removed device: %+v %v", ev, err)
	}
	if d, err := s.FindDevice(ctx, "real"); err != nil || d.Simulated {
		t.Fatalf("real device after the removal: %+v %v", d, err)
	}
	if ev, err := s.FindEvents(ctx, "real", 10); err != nil || len(ev) != 1 {
		t.Errorf("events of the real device: %+v %v", ev, err)
	}
	if ids, err := s.RemoveSimulatedDevices(ctx); err != nil || len(ids) != 0 {
		t.Errorf("second removal: %v %v", ids, err)
	}
}

func testDeviceKinds(t *testing.T, s Store) {
	for _, d := range []*fleet.Device{
		{ID: "agent", PublicKey: []byte{1}, Serial: "a", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0},
		{ID: "ctrl-1", Kind: fleet.KindDDI, Serial: "ctrl-1", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0},
	} {
		if err := s.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for kind, want := range map[string]string{fleet.KindDDI: "ctrl-1", fleet.KindAgent: "agent"} {
		ds, err := s.FindDevices(ctx, fleet.DeviceFilter{Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || ds[0].ID != want {
			t.Errorf("kind %s: got %d devices, want %s", kind, len(ds), want)
		}
	}
	attrs := map[string]string{"hwRevision": "2", "board": "x"}
	if err := s.UpdateDevice(ctx, "ctrl-1", fleet.DeviceUpdate{Attributes: &attrs}); err != nil {
		t.Fatal(err)
	}
	got, err := s.FindDevice(ctx, "ctrl-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(attrs, got.Attributes); diff != "" || got.Kind != fleet.KindDDI || len(got.PublicKey) != 0 {
		t.Errorf("DDI device after attribute update: kind %q, key %x, attributes (-want +got):\n%s", got.Kind, got.PublicKey, diff)
	}
}

func testDDIActions(t *testing.T, s Store) {
	a := &ddi.Action{DeviceID: "c1", Target: "fw-1.swu", Status: ddi.ActionOpen, CreatedAt: t0, UpdatedAt: t0}
	if err := s.CreateAction(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := &ddi.Action{DeviceID: "c1", Target: "fw-2.swu", Status: ddi.ActionOpen, CreatedAt: t0, UpdatedAt: t0}
	if err := s.CreateAction(ctx, b); err != nil {
		t.Fatal(err)
	}
	if a.ID <= 0 || b.ID <= a.ID {
		t.Fatalf("ids %d, %d: want positive and increasing", a.ID, b.ID)
	}
	got, err := s.FindAction(ctx, "c1", a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	_, err = s.FindAction(ctx, "other", a.ID) // another device's action does not exist for it
	wantCode(t, err, apperr.NotFound)
	list, err := s.FindActions(ctx, "c1", 1)
	if err != nil || len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("FindActions newest first: %v %v", list, err)
	}
	closed, success := ddi.ActionClosed, ddi.ResultSuccess
	ok, err := s.UpdateAction(ctx, "c1", a.ID, []string{ddi.ActionOpen}, ddi.ActionUpdate{Status: &closed, Result: &success, At: t0.Add(time.Minute)})
	if err != nil || !ok {
		t.Fatalf("close: %v %v", ok, err)
	}
	canceling := ddi.ActionCanceling
	ok, err = s.UpdateAction(ctx, "c1", a.ID, []string{ddi.ActionOpen}, ddi.ActionUpdate{Status: &canceling, At: t0})
	if err != nil || ok {
		t.Fatalf("a closed action must not move: %v %v", ok, err)
	}
	_, err = s.UpdateAction(ctx, "other", a.ID, nil, ddi.ActionUpdate{Status: &canceling, At: t0})
	wantCode(t, err, apperr.NotFound)
	got, _ = s.FindAction(ctx, "c1", a.ID)
	if got.Status != closed || got.Result != success || !got.UpdatedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after close: %+v", got)
	}
}

// testDDITokens: a target token's generation starts at 0, each rotation raises it by one and moves
// the revocation generation; PruneActions spares the open and the last successful action.
func testDDITokens(t *testing.T, s Store) {
	if gen, err := s.TokenGeneration(ctx, "tok-1"); err != nil || gen != 0 {
		t.Fatalf("generation of a never rotated token: %d %v", gen, err)
	}
	rev0, err := s.RevocationGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 2; want++ {
		if gen, err := s.RotateToken(ctx, "tok-1"); err != nil || gen != want {
			t.Fatalf("rotation %d: %d %v", want, gen, err)
		}
	}
	if gen, err := s.TokenGeneration(ctx, "tok-1"); err != nil || gen != 2 {
		t.Fatalf("generation after two rotations: %d %v", gen, err)
	}
	if rev, err := s.RevocationGeneration(ctx); err != nil || rev < rev0+2 {
		t.Fatalf("revocation generation %d after two rotations from %d: %v", rev, rev0, err)
	}

	if err := s.CreateDevice(ctx, &fleet.Device{ID: "prune-1", Kind: fleet.KindDDI, Serial: "prune-1", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0}); err != nil {
		t.Fatal(err)
	}
	mk := func(dev, status, result string, at time.Time) int64 {
		a := &ddi.Action{DeviceID: dev, Target: "t", Status: status, Result: result, CreatedAt: at, UpdatedAt: at}
		if err := s.CreateAction(ctx, a); err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	installed := mk("prune-1", ddi.ActionClosed, ddi.ResultSuccess, t0)
	for i := range 10 {
		mk("prune-1", ddi.ActionClosed, ddi.ResultFailure, t0.Add(time.Duration(i)*time.Hour))
	}
	open := mk("prune-1", ddi.ActionOpen, "", t0)
	mk("no-such-device", ddi.ActionClosed, ddi.ResultFailure, t0.Add(100*time.Hour))
	n, err := s.PruneActions(ctx, t0.Add(5*time.Hour), 3)
	if err != nil {
		t.Fatal(err)
	}
	// Gone: the removed device's one, failures at 0-4 h (age), then of 5-9 h all but the two
	// newest that fit with the open one among the newest 3.
	list, _ := s.FindActions(ctx, "prune-1", 100)
	var ids []int64
	for _, a := range list {
		ids = append(ids, a.ID)
	}
	if n != 1+5+3 || len(list) != 4 || list[0].ID != open || list[len(list)-1].ID != installed {
		t.Fatalf("pruned %d, kept %v (open %d, installed %d)", n, ids, open, installed)
	}
}
