package storetest

import (
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
)

// testUsers: users are created once by name; a role change or disabling revokes the user's
// sessions and tokens and moves the revocation generation; the last enabled admin stays.
func testUsers(t *testing.T, s Store) {
	t0 := time.Now().UTC().Truncate(time.Second)
	for _, u := range []*auth.User{
		{Name: "root", Role: auth.RoleAdmin, CreatedAt: t0},
		{Name: "dana", Role: auth.RoleDeployer, Groups: []string{"lab", "bench"}, PasswordHash: "$argon2id$x", CreatedAt: t0},
	} {
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, s.CreateUser(ctx, &auth.User{Name: "dana", Role: auth.RoleViewer, CreatedAt: t0}), apperr.Conflict)
	u, err := s.FindUser(ctx, "dana")
	if err != nil || u.Role != auth.RoleDeployer || len(u.Groups) != 2 || u.Groups[1] != "bench" || u.PasswordHash != "$argon2id$x" || !u.DisabledAt.IsZero() {
		t.Fatalf("FindUser = %+v, %v", u, err)
	}
	_, err = s.FindUser(ctx, "nobody")
	wantCode(t, err, apperr.NotFound)
	if us, err := s.FindUsers(ctx); err != nil || len(us) != 2 || us[0].Name != "dana" {
		t.Fatalf("FindUsers = %v, %v", us, err)
	}

	_, h := auth.NewSecret("s_")
	ss := &auth.Session{ID: auth.TokenID(h), Hash: h, User: "dana", CSRF: "c", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0}
	if err := s.CreateSession(ctx, ss); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchSession(ctx, ss.ID, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchSession(ctx, ss.ID, t0); err != nil { // never back
		t.Fatal(err)
	}
	got, err := s.FindSession(ctx, h)
	if err != nil || got.User != "dana" || got.CSRF != "c" || !got.LastSeen.Equal(t0.Add(time.Minute)) || !got.RevokedAt.IsZero() {
		t.Fatalf("FindSession = %+v, %v", got, err)
	}
	_, th := auth.NewSecret(auth.AdminPrefix)
	if err := s.CreateOperatorToken(ctx, &auth.OperatorToken{ID: auth.TokenID(th), Name: "ci", Role: auth.RoleDeployer, Hash: th, CreatedAt: t0, User: "dana", Groups: []string{"lab"}}); err != nil {
		t.Fatal(err)
	}
	if tok, err := s.FindOperatorToken(ctx, th); err != nil || tok.User != "dana" || len(tok.Groups) != 1 || tok.Groups[0] != "lab" {
		t.Fatalf("token %+v, %v", tok, err)
	}

	gen, _ := s.RevocationGeneration(ctx)
	pw := "$argon2id$y"
	if err := s.UpdateUser(ctx, "dana", auth.UserUpdate{PasswordHash: &pw}, t0); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.RevocationGeneration(ctx); g != gen {
		t.Fatal("a password change moved the revocation generation")
	}
	role := auth.RoleViewer
	none := []string{}
	if err := s.UpdateUser(ctx, "dana", auth.UserUpdate{Role: &role, Groups: &none}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.RevocationGeneration(ctx); g <= gen {
		t.Fatal("a role change did not move the revocation generation")
	}
	if got, _ := s.FindSession(ctx, h); got.RevokedAt.IsZero() {
		t.Fatal("a role change left the session")
	}
	if tok, _ := s.FindOperatorToken(ctx, th); tok.RevokedAt.IsZero() {
		t.Fatal("a role change left the user's token")
	}
	if u, _ := s.FindUser(ctx, "dana"); u.Role != auth.RoleViewer || len(u.Groups) != 0 || u.PasswordHash != pw {
		t.Fatalf("after the role change: %+v", u)
	}
	wantCode(t, s.UpdateUser(ctx, "root", auth.UserUpdate{Disable: true}, t0), apperr.Conflict)
	wantCode(t, s.UpdateUser(ctx, "root", auth.UserUpdate{Role: &role}, t0), apperr.Conflict)
	wantCode(t, s.UpdateUser(ctx, "nobody", auth.UserUpdate{Disable: true}, t0), apperr.NotFound)
	if err := s.UpdateUser(ctx, "dana", auth.UserUpdate{Disable: true}, t0); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.FindUser(ctx, "dana"); u.DisabledAt.IsZero() {
		t.Fatal("not disabled")
	}

	_, h2 := auth.NewSecret("s_")
	ss2 := &auth.Session{ID: auth.TokenID(h2), Hash: h2, User: "root", CSRF: "d", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0}
	if err := s.CreateSession(ctx, ss2); err != nil {
		t.Fatal(err)
	}
	gen, _ = s.RevocationGeneration(ctx)
	if err := s.RevokeSession(ctx, ss2.ID, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, ss2.ID, t0); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.RevocationGeneration(ctx); g != gen+1 {
		t.Fatalf("generation %d after one logout from %d", g, gen)
	}
	_, err = s.FindSession(ctx, auth.HashSecret("nope"))
	wantCode(t, err, apperr.NotFound)
}
