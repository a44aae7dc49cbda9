package storetest

import (
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
)

// testSSOUsers: a user of single sign-on is found by issuer and subject; the pair names one
// user; local users (no subject) are never found that way.
func testSSOUsers(t *testing.T, s Store) {
	t0 := time.Now().UTC().Truncate(time.Second)
	const iss = "https://idp.example/"
	for _, u := range []*auth.User{
		{Name: "local", Role: auth.RoleAdmin, CreatedAt: t0},
		{Name: "erin", Role: auth.RoleReleaseManager, CreatedAt: t0, Issuer: iss, Subject: "sub-1"},
		{Name: "erin2", Role: auth.RoleViewer, CreatedAt: t0, Issuer: "https://other.example/", Subject: "sub-1"},
	} {
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, s.CreateUser(ctx, &auth.User{Name: "erin3", Role: auth.RoleViewer, CreatedAt: t0, Issuer: iss, Subject: "sub-1"}), apperr.Conflict)
	u, err := s.FindUserBySubject(ctx, iss, "sub-1")
	if err != nil || u.Name != "erin" || u.Issuer != iss || u.Subject != "sub-1" || u.Role != auth.RoleReleaseManager {
		t.Fatalf("FindUserBySubject = %+v, %v", u, err)
	}
	if u, err := s.FindUser(ctx, "erin2"); err != nil || u.Issuer != "https://other.example/" {
		t.Fatalf("FindUser = %+v, %v", u, err)
	}
	_, err = s.FindUserBySubject(ctx, iss, "sub-2")
	wantCode(t, err, apperr.NotFound)
	_, err = s.FindUserBySubject(ctx, "", "")
	wantCode(t, err, apperr.NotFound)
}

// testPruneSessions: sessions that expired or were revoked before the cut are deleted; live
// ones, and ones that ended after it, stay.
func testPruneSessions(t *testing.T, s Store) {
	t0 := time.Now().UTC().Truncate(time.Second)
	if err := s.CreateUser(ctx, &auth.User{Name: "pat", Role: auth.RoleViewer, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	mk := func(expires time.Time) *auth.Session {
		_, h := auth.NewSecret("s_")
		ss := &auth.Session{ID: auth.TokenID(h), Hash: h, User: "pat", CSRF: "c", CreatedAt: t0.Add(-48 * time.Hour), ExpiresAt: expires, LastSeen: t0.Add(-48 * time.Hour)}
		if err := s.CreateSession(ctx, ss); err != nil {
			t.Fatal(err)
		}
		return ss
	}
	expiredLong := mk(t0.Add(-36 * time.Hour))
	expiredRecently := mk(t0.Add(-time.Hour))
	revokedLong := mk(t0.Add(time.Hour))
	if err := s.RevokeSession(ctx, revokedLong.ID, t0.Add(-30*time.Hour)); err != nil {
		t.Fatal(err)
	}
	live := mk(t0.Add(time.Hour))
	n, err := s.PruneSessions(ctx, t0.Add(-24*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PruneSessions = %d, %v; want 2", n, err)
	}
	for _, ss := range []*auth.Session{expiredLong, revokedLong} {
		_, err := s.FindSession(ctx, ss.Hash)
		wantCode(t, err, apperr.NotFound)
	}
	for _, ss := range []*auth.Session{expiredRecently, live} {
		if _, err := s.FindSession(ctx, ss.Hash); err != nil {
			t.Fatalf("session %s: %v", ss.ID, err)
		}
	}
}
