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
