package repo

import (
	"context"
	"fmt"
	"slices"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/tuf"
)

// ExpiryWarning is how long before offline-signed metadata expires the server starts warning.
const ExpiryWarning = 30 * 24 * time.Hour

// Expiry is when one piece of offline-signed metadata expires. Only an operator with the offline
// keys can renew it: `upkeep keys rotate-root` (image root), `upkeep release resign-targets`
// (image targets), `upkeep keys resign-director-root` (director root).
type Expiry struct {
	Repo    string // RepoImage or RepoDirector
	Role    string // tuf.Root or tuf.Targets
	Version int64
	Expires time.Time
}

// OfflineExpiries returns the expiry of the current image root, image targets and director
// root, as stored with each (every write of metadata records its signed expiry), so nothing is
// parsed and no replica's cached copy is touched.
func (s *Service) OfflineExpiries(ctx context.Context) ([]Expiry, error) {
	var out []Expiry
	for _, m := range []struct{ repo, role string }{{RepoImage, tuf.Root}, {RepoImage, tuf.Targets}, {RepoDirector, tuf.Root}} {
		cur, err := s.Meta.LatestMetadata(ctx, m.repo, m.role)
		if err != nil {
			return nil, err
		}
		out = append(out, Expiry{Repo: m.repo, Role: m.role, Version: cur.Version, Expires: cur.Expires})
	}
	return out, nil
}

// WarnExpiring logs a warning for each piece of offline-signed metadata that expires within
// ExpiryWarning (or has expired), at most once a day for each: once it expires, every device
// fails every refresh until an operator re-signs it offline. warned holds, by "repo/role", when
// each was last warned of; the server's background loop keeps it and calls this every hour.
func (s *Service) WarnExpiring(ctx context.Context, warned map[string]time.Time) error {
	es, err := s.OfflineExpiries(ctx)
	if err != nil {
		return fmt.Errorf("offline metadata expiry: %w", err)
	}
	now := s.now()
	for _, e := range es {
		key := e.Repo + "/" + e.Role
		if !now.Add(ExpiryWarning).After(e.Expires) || now.Sub(warned[key]) < 24*time.Hour {
			continue
		}
		warned[key] = now
		s.logger().Warn("offline-signed metadata expires soon; re-sign it with the offline key",
			"repo", e.Repo, "role", e.Role, "version", e.Version, "expires", e.Expires.Format(time.RFC3339), "command", RenewCommand(e))
	}
	return nil
}

// RenewCommand names the CLI command that renews e.
func RenewCommand(e Expiry) string {
	switch {
	case e.Repo == RepoDirector:
		return "upkeep keys resign-director-root"
	case e.Role == tuf.Targets:
		return "upkeep release resign-targets"
	default:
		return "upkeep keys rotate-root"
	}
}

// RotateDirectorRoot accepts a new director root (a new expiry, or new director root keys)
// signed offline by a threshold of the current and of the new root keys, as RotateRoot does for
// the image root. The new root must keep trusting the server's online director key, or every
// device would refuse its next view. Devices follow the chain from the root they hold (TUF
// 5.3.4), so a root re-signed before the old one expires keeps them updating.
func (s *Service) RotateDirectorRoot(ctx context.Context, data []byte) error {
	cur, err := s.directorRoot(ctx)
	if err != nil {
		return err
	}
	next, err := tuf.VerifyRootUpdate(cur, data)
	if err != nil {
		return apperr.Wrap(apperr.Verification, err, "director root refused: "+err.Error())
	}
	if !next.Signed.ConsistentSnapshot {
		return apperr.E(apperr.Invalid, "director root refused: it must keep consistent snapshots")
	}
	for _, role := range []string{tuf.Targets, tuf.Snapshot, tuf.Timestamp} {
		r := next.Signed.Roles[role]
		if r == nil || s.Keys.Director == nil || !slices.Contains(r.KeyIDs, s.Keys.Director.ID) {
			return apperr.E(apperr.Invalid, "director root refused: it does not trust the server's director key for %s", role)
		}
	}
	if !next.Signed.Expires.After(s.now()) {
		return apperr.E(apperr.Invalid, "director root refused: it expired at %s", next.Signed.Expires.Format(time.RFC3339))
	}
	if err := s.Meta.PutMetadata(ctx, &Meta{Repo: RepoDirector, Role: tuf.Root, Version: next.Signed.Version, Body: data, Expires: next.Signed.Expires}); err != nil {
		if apperr.Is(err, apperr.Conflict) {
			return apperr.E(apperr.Conflict, "director root version %d was stored concurrently; sign again", next.Signed.Version)
		}
		return err
	}
	s.logger().Info("director root updated", "version", next.Signed.Version, "expires", next.Signed.Expires)
	return nil
}

// ResignTargets accepts the current image targets re-signed offline with a later expiry: the
// same targets, exactly one version newer. It is how targets metadata is renewed without a new
// release; the current version may already have expired.
func (s *Service) ResignTargets(ctx context.Context, data []byte) error {
	next, cur, err := s.nextTargets(ctx, data, "re-signing keeps every target")
	if err != nil {
		return err
	}
	if len(next.Signed.Targets) != len(cur.Signed.Targets) {
		return apperr.E(apperr.Invalid, "re-signed targets name %d targets, the current ones %d: re-signing may not add or remove targets", len(next.Signed.Targets), len(cur.Signed.Targets))
	}
	if err := s.putTargets(ctx, next, data); err != nil {
		return err
	}
	s.logger().Info("image targets re-signed", "version", next.Signed.Version, "expires", next.Signed.Expires)
	return s.RefreshImage(ctx, true)
}
