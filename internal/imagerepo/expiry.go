package imagerepo

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/event"
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
// root, as stored with each (every write of metadata records its signed expiry), then of each
// delegated role of the image targets (bins, products), from the parsed graph. The director root is listed here too: it
// lives in the same metadata store and is renewed by the same kind of offline ceremony.
func (s *Service) OfflineExpiries(ctx context.Context) ([]Expiry, error) {
	var out []Expiry
	for _, m := range []struct{ repo, role string }{{RepoImage, tuf.Root}, {RepoImage, tuf.Targets}, {RepoDirector, tuf.Root}} {
		cur, err := s.Store.LatestMetadata(ctx, m.repo, m.role)
		if err != nil {
			return nil, err
		}
		out = append(out, Expiry{Repo: m.repo, Role: m.role, Version: cur.Version, Expires: cur.Expires})
	}
	// The delegated roles (bins, products) are offline-signed too; a device refuses an expired
	// one like an expired top-level targets.
	tr, err := s.currentTree(ctx)
	if err != nil {
		return nil, err
	}
	for _, role := range slices.Sorted(maps.Keys(tr.delegator)) {
		out = append(out, Expiry{Repo: RepoImage, Role: role, Version: tr.versions[role], Expires: tr.roles[role].Signed.Expires})
	}
	return out, nil
}

// ExpiringEvent is the data of the metadata.expiring event.
type ExpiringEvent struct {
	Repo    string    `json:"repo"` // image or director
	Role    string    `json:"role"` // root or targets
	Version int64     `json:"version"`
	Expires time.Time `json:"expires"`
	Expired bool      `json:"expired"`
	Command string    `json:"command"` // what renews it, with the offline key
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
		event.Emit(ctx, s.Events, event.Event{Key: fmt.Sprintf("%s/%s/%d/%s", e.Repo, e.Role, e.Version, now.UTC().Format(time.DateOnly)),
			Type: event.MetadataExpiring, Subject: "metadata/" + key, Time: now,
			Data: ExpiringEvent{Repo: e.Repo, Role: e.Role, Version: e.Version, Expires: e.Expires.UTC(), Expired: !now.Before(e.Expires), Command: RenewCommand(e)}})
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
	case tuf.IsProductRole(e.Role):
		return "upkeep keys delegate --product " + strings.TrimPrefix(e.Role, "p.")
	case tuf.IsBinRole(e.Role):
		return "upkeep keys delegate --product P (any product of the bin)"
	default:
		return "upkeep keys rotate-root"
	}
}
