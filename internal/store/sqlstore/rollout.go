package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/rollout"
)

var _ rollout.Store = (*DB)(nil)

// campaignSpec is the part of a campaign that never changes, stored as JSON.
type campaignSpec struct {
	Release, Target, Product, Selector, Class, WaveSpec, Window, Actor string
	Waves                                                              []int
	SuccessThreshold, FailureThreshold                                 float64
	HealthGate, SilentAfter, AssignTimeout                             time.Duration
	Stale                                                              int
	Consent, IgnoreWindow                                              bool
	// Days, Dynamic, Until and StartAt: weekday windows, dynamic intake and scheduled start
	// (absent from campaigns stored before them: every day, static, started by hand).
	Days           string    `json:",omitempty"`
	Dynamic        bool      `json:",omitempty"`
	Until, StartAt time.Time `json:",omitzero"`
}

// CreateCampaign implements rollout.Store.
func (s *DB) CreateCampaign(ctx context.Context, c *rollout.Campaign, members []rollout.Member) error {
	spec, err := json.Marshal(campaignSpec{Release: c.Release, Target: c.Target, Product: c.Product, Selector: c.Selector, Class: c.Class,
		WaveSpec: c.WaveSpec, Window: c.Window, Actor: c.Actor, Waves: c.Waves, SuccessThreshold: c.SuccessThreshold,
		FailureThreshold: c.FailureThreshold, HealthGate: c.HealthGate, SilentAfter: c.SilentAfter, AssignTimeout: c.AssignTimeout, Stale: c.Stale,
		Consent: c.Consent, IgnoreWindow: c.IgnoreWindow, Days: c.Days, Dynamic: c.Dynamic, Until: c.Until.UTC(), StartAt: c.StartAt.UTC()})
	if err != nil {
		return err
	}
	return s.inTx(ctx, "create campaign", func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO campaigns (id, spec, state, wave, pause_reason, baseline, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
			c.ID, string(spec), c.State, c.Wave, c.PauseReason, encodeBaseline(c.Baseline), c.CreatedAt.UTC(), c.UpdatedAt.UTC()); err != nil {
			if s.dialect.IsUnique(err) {
				return apperr.E(apperr.Conflict, "campaign %s exists", c.ID)
			}
			return fmt.Errorf("create campaign: %w", err)
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO campaign_devices (campaign_id, device_id, wave, status, since, detail) VALUES ($1,$2,$3,$4,$5,$6)`)
		if err != nil {
			return fmt.Errorf("create campaign: %w", err)
		}
		defer st.Close()
		for _, m := range members {
			if _, err := st.ExecContext(ctx, c.ID, m.DeviceID, m.Wave, m.Status, m.Since.UTC(), m.Detail); err != nil {
				return fmt.Errorf("campaign member %s: %w", m.DeviceID, err)
			}
		}
		return nil
	})
}

const campaignCols = `id, spec, state, wave, pause_reason, baseline, created_at, updated_at`

// encodeBaseline stores a campaign's failure baseline as a JSON array; empty before a resume.
func encodeBaseline(b []int) string {
	if b == nil {
		return ""
	}
	out, _ := json.Marshal(b) //nolint:errcheck // ints always marshal
	return string(out)
}

func scanCampaign(row interface{ Scan(...any) error }) (*rollout.Campaign, error) {
	var c rollout.Campaign
	var spec, baseline string
	if err := row.Scan(&c.ID, &spec, &c.State, &c.Wave, &c.PauseReason, &baseline, &c.CreatedAt, &c.UpdatedAt); err != nil {
		return nil, err
	}
	if baseline != "" {
		if err := json.Unmarshal([]byte(baseline), &c.Baseline); err != nil {
			return nil, fmt.Errorf("campaign %s baseline: %w", c.ID, err)
		}
	}
	var p campaignSpec
	if err := json.Unmarshal([]byte(spec), &p); err != nil {
		return nil, fmt.Errorf("campaign %s: %w", c.ID, err)
	}
	c.Release, c.Target, c.Product, c.Selector, c.Class, c.WaveSpec, c.Window, c.Actor = p.Release, p.Target, p.Product, p.Selector, p.Class, p.WaveSpec, p.Window, p.Actor
	c.Waves, c.SuccessThreshold, c.FailureThreshold, c.HealthGate, c.SilentAfter, c.Consent, c.IgnoreWindow = p.Waves, p.SuccessThreshold, p.FailureThreshold, p.HealthGate, p.SilentAfter, p.Consent, p.IgnoreWindow
	c.AssignTimeout, c.Stale = p.AssignTimeout, p.Stale
	c.Days, c.Dynamic, c.Until, c.StartAt = p.Days, p.Dynamic, p.Until.UTC(), p.StartAt.UTC()
	if p.Until.IsZero() {
		c.Until = time.Time{}
	}
	if p.StartAt.IsZero() {
		c.StartAt = time.Time{}
	}
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return &c, nil
}

// FindCampaign implements rollout.Store.
func (s *DB) FindCampaign(ctx context.Context, id string) (*rollout.Campaign, error) {
	c, err := scanCampaign(s.db.QueryRowContext(ctx, `SELECT `+campaignCols+` FROM campaigns WHERE id = $1`, id))
	if err != nil {
		return nil, notFound(err, "campaign %s not found", id)
	}
	return c, nil
}

// FindCampaigns implements rollout.Store.
func (s *DB) FindCampaigns(ctx context.Context, states ...string) ([]*rollout.Campaign, error) {
	q := `SELECT ` + campaignCols + ` FROM campaigns`
	var args []any
	if len(states) > 0 {
		q += ` WHERE state IN (` + placeholders(&args, states) + `)`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("find campaigns: %w", err)
	}
	defer rows.Close()
	var out []*rollout.Campaign
	for rows.Next() {
		c, err := scanCampaign(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// PageCampaigns implements rollout.Store: a range of the index campaigns_created, or of
// campaigns_state_created for one state (migration 00024), read backwards.
func (s *DB) PageCampaigns(ctx context.Context, p rollout.CampaignPage) ([]*rollout.Campaign, error) {
	if p.Limit < 1 || p.Limit > rollout.MaxCampaignPage {
		return nil, apperr.E(apperr.Invalid, "page size %d: want 1 to %d", p.Limit, rollout.MaxCampaignPage)
	}
	var args []any
	var where []string
	if len(p.States) > 0 {
		where = append(where, `state IN (`+placeholders(&args, p.States)+`)`)
	}
	if p.After != nil {
		args = append(args, p.After.CreatedAt.UTC(), p.After.ID)
		where = append(where, fmt.Sprintf("(created_at, id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	q := `SELECT ` + campaignCols + ` FROM campaigns`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, p.Limit)
	rows, err := s.db.QueryContext(ctx, q+fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("page campaigns: %w", err)
	}
	defer rows.Close()
	var out []*rollout.Campaign
	for rows.Next() {
		c, err := scanCampaign(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CountCampaigns implements rollout.Store.
func (s *DB) CountCampaigns(ctx context.Context, states ...string) (int, error) {
	q := `SELECT COUNT(*) FROM campaigns`
	var args []any
	if len(states) > 0 {
		q += ` WHERE state IN (` + placeholders(&args, states) + `)`
	}
	var n int
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count campaigns: %w", err)
	}
	return n, nil
}

// CountMembers implements rollout.Store: a range of the members' primary key per campaign.
func (s *DB) CountMembers(ctx context.Context, ids []string) ([]rollout.MemberCount, error) {
	if len(ids) > rollout.MaxCountMembers {
		return nil, apperr.E(apperr.Invalid, "%d campaigns to count: at most %d", len(ids), rollout.MaxCountMembers)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var args []any
	rows, err := s.db.QueryContext(ctx, `SELECT campaign_id, wave, status, COUNT(*) FROM campaign_devices WHERE campaign_id IN (`+
		placeholders(&args, ids)+`) GROUP BY campaign_id, wave, status`, args...)
	if err != nil {
		return nil, fmt.Errorf("count members: %w", err)
	}
	defer rows.Close()
	var out []rollout.MemberCount
	for rows.Next() {
		var k rollout.MemberCount
		if err := rows.Scan(&k.Campaign, &k.Wave, &k.Status, &k.N); err != nil {
			return nil, fmt.Errorf("count members: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func placeholders(args *[]any, vs []string) string {
	ph := make([]string, len(vs))
	for i, v := range vs {
		*args = append(*args, v)
		ph[i] = fmt.Sprintf("$%d", len(*args))
	}
	return strings.Join(ph, ",")
}

// UpdateCampaign implements rollout.Store.
func (s *DB) UpdateCampaign(ctx context.Context, c *rollout.Campaign, from string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE campaigns SET state = $1, wave = $2, pause_reason = $3, baseline = $4, updated_at = $5 WHERE id = $6 AND state = $7`,
		c.State, c.Wave, c.PauseReason, encodeBaseline(c.Baseline), c.UpdatedAt.UTC(), c.ID, from)
	if err != nil {
		return fmt.Errorf("update campaign %s: %w", c.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.E(apperr.Conflict, "campaign %s is no longer %s", c.ID, from)
	}
	return nil
}

// ApplyChange implements rollout.Store.
func (s *DB) ApplyChange(ctx context.Context, ch rollout.Change) error {
	c := ch.Campaign
	return s.inTx(ctx, "campaign "+c.ID+": "+ch.From+" to "+c.State, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE campaigns SET state = $1, wave = $2, pause_reason = $3, baseline = $4, updated_at = $5 WHERE id = $6 AND state = $7`,
			c.State, c.Wave, c.PauseReason, encodeBaseline(c.Baseline), c.UpdatedAt.UTC(), c.ID, ch.From)
		if err != nil {
			return fmt.Errorf("update campaign %s: %w", c.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apperr.E(apperr.Conflict, "campaign %s is no longer %s", c.ID, ch.From)
		}
		for _, m := range ch.Members {
			for chunk := range slices.Chunk(m.IDs, 500) {
				args := []any{m.Status, m.Detail, c.UpdatedAt.UTC(), c.ID}
				q := `UPDATE campaign_devices SET status = $1, detail = $2, since = $3 WHERE campaign_id = $4 AND device_id IN (` + placeholders(&args, chunk) + `)`
				if len(m.From) > 0 {
					q += ` AND status IN (` + placeholders(&args, m.From) + `)`
				}
				if _, err := tx.ExecContext(ctx, q, args...); err != nil {
					return fmt.Errorf("campaign %s members: %w", c.ID, err)
				}
			}
		}
		for _, e := range ch.Audit {
			if _, err := tx.ExecContext(ctx, `INSERT INTO audit (at, actor, action, subject, detail) VALUES ($1,$2,$3,$4,$5)`, e.Time.UTC(), e.Actor, e.Action, e.Subject, e.Detail); err != nil {
				return fmt.Errorf("audit: %w", err)
			}
		}
		return nil
	})
}

// AddMembers implements rollout.Store.
func (s *DB) AddMembers(ctx context.Context, campaignID string, members []rollout.Member) ([]string, error) {
	var added []string
	err := s.inTx(ctx, "add campaign members", func(tx *Tx) error {
		added = added[:0]
		for _, m := range members {
			res, err := tx.ExecContext(ctx, `INSERT INTO campaign_devices (campaign_id, device_id, wave, status, since, detail) VALUES ($1,$2,$3,$4,$5,$6)
ON CONFLICT (campaign_id, device_id) DO NOTHING`, campaignID, m.DeviceID, m.Wave, m.Status, m.Since.UTC(), m.Detail)
			if err != nil {
				return fmt.Errorf("campaign %s member %s: %w", campaignID, m.DeviceID, err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				added = append(added, m.DeviceID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return added, nil
}

// FindMembers implements rollout.Store.
func (s *DB) FindMembers(ctx context.Context, campaignID string) ([]rollout.Member, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT m.device_id, m.wave, m.status, m.since, m.detail, d.last_seen, coalesce(d.installed_target, ''), coalesce(d.assigned, ''),
m.downloaded, m.image_length
FROM campaign_devices m LEFT JOIN devices d ON d.id = m.device_id WHERE m.campaign_id = $1 ORDER BY m.wave, m.device_id`, campaignID)
	if err != nil {
		return nil, fmt.Errorf("campaign %s members: %w", campaignID, err)
	}
	defer rows.Close()
	var out []rollout.Member
	for rows.Next() {
		var m rollout.Member
		var seen sql.NullTime
		if err := rows.Scan(&m.DeviceID, &m.Wave, &m.Status, &m.Since, &m.Detail, &seen, &m.Running, &m.Assigned, &m.Downloaded, &m.ImageLength); err != nil {
			return nil, err
		}
		m.Since, m.LastSeen = m.Since.UTC(), seen.Time.UTC()
		if !seen.Valid {
			m.LastSeen = time.Time{}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// SetMemberDownload implements rollout.Store.
func (s *DB) SetMemberDownload(ctx context.Context, campaignID, deviceID string, downloaded, imageLength int64) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE campaign_devices SET downloaded = $1, image_length = $2 WHERE campaign_id = $3 AND device_id = $4`,
		downloaded, imageLength, campaignID, deviceID); err != nil {
		return fmt.Errorf("campaign %s member %s: %w", campaignID, deviceID, err)
	}
	return nil
}

// SetMembers implements rollout.Store.
func (s *DB) SetMembers(ctx context.Context, campaignID string, ids []string, from []string, status, detail string, at time.Time) error {
	for chunk := range slices.Chunk(ids, 500) {
		args := []any{status, detail, at.UTC(), campaignID}
		q := `UPDATE campaign_devices SET status = $1, detail = $2, since = $3 WHERE campaign_id = $4 AND device_id IN (` + placeholders(&args, chunk) + `)`
		if len(from) > 0 {
			q += ` AND status IN (` + placeholders(&args, from) + `)`
		}
		if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("campaign %s members: %w", campaignID, err)
		}
	}
	return nil
}

// FindMemberships implements rollout.Store.
func (s *DB) FindMemberships(ctx context.Context, deviceID string) ([]rollout.Membership, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT m.campaign_id, c.spec, c.state, m.status FROM campaign_devices m
JOIN campaigns c ON c.id = m.campaign_id WHERE m.device_id = $1 ORDER BY c.created_at DESC`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", deviceID, err)
	}
	defer rows.Close()
	var out []rollout.Membership
	for rows.Next() {
		var m rollout.Membership
		var spec string
		if err := rows.Scan(&m.CampaignID, &spec, &m.State, &m.Status); err != nil {
			return nil, err
		}
		var p campaignSpec
		if err := json.Unmarshal([]byte(spec), &p); err != nil {
			return nil, fmt.Errorf("campaign %s: %w", m.CampaignID, err)
		}
		m.Target = p.Target
		out = append(out, m)
	}
	return out, rows.Err()
}

// PutGroup implements rollout.Store: creates or replaces a group's definition.
func (s *DB) PutGroup(ctx context.Context, g *rollout.Group) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO device_groups (name, filter, maint_window, window_days, created_at) VALUES ($1,$2,$3,$4,$5)
ON CONFLICT (name) DO UPDATE SET filter = excluded.filter, maint_window = excluded.maint_window, window_days = excluded.window_days`, g.Name, g.Filter, g.Window, g.Days, g.CreatedAt.UTC())
	if err != nil {
		return fmt.Errorf("put group %s: %w", g.Name, err)
	}
	return nil
}

// FindGroup implements rollout.Store.
func (s *DB) FindGroup(ctx context.Context, name string) (*rollout.Group, error) {
	var g rollout.Group
	err := s.db.QueryRowContext(ctx, `SELECT name, filter, maint_window, window_days, created_at FROM device_groups WHERE name = $1`, name).Scan(&g.Name, &g.Filter, &g.Window, &g.Days, &g.CreatedAt)
	if err != nil {
		return nil, notFound(err, "group %s not found", name)
	}
	g.CreatedAt = g.CreatedAt.UTC()
	return &g, nil
}

// FindGroups implements rollout.Store.
func (s *DB) FindGroups(ctx context.Context) ([]*rollout.Group, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, filter, maint_window, window_days, created_at FROM device_groups ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("find groups: %w", err)
	}
	defer rows.Close()
	var out []*rollout.Group
	for rows.Next() {
		var g rollout.Group
		if err := rows.Scan(&g.Name, &g.Filter, &g.Window, &g.Days, &g.CreatedAt); err != nil {
			return nil, err
		}
		g.CreatedAt = g.CreatedAt.UTC()
		out = append(out, &g)
	}
	return out, rows.Err()
}

// DeleteGroup implements rollout.Store.
func (s *DB) DeleteGroup(ctx context.Context, name string) error {
	return s.inTx(ctx, "delete group "+name, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM device_groups WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("delete group %s: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apperr.E(apperr.NotFound, "group %s not found", name)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM group_devices WHERE group_name = $1`, name); err != nil {
			return fmt.Errorf("delete group %s: %w", name, err)
		}
		return nil
	})
}

// AddGroupDevices implements rollout.Store.
func (s *DB) AddGroupDevices(ctx context.Context, name string, ids []string) error {
	return s.inTx(ctx, "group "+name+": add devices", func(tx *Tx) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `INSERT INTO group_devices (group_name, device_id) VALUES ($1,$2) ON CONFLICT DO NOTHING`, name, id); err != nil {
				return fmt.Errorf("group %s: add %s: %w", name, id, err)
			}
		}
		return nil
	})
}

// RemoveGroupDevices implements rollout.Store.
func (s *DB) RemoveGroupDevices(ctx context.Context, name string, ids []string) error {
	for chunk := range slices.Chunk(ids, 500) {
		args := []any{name}
		q := `DELETE FROM group_devices WHERE group_name = $1 AND device_id IN (` + placeholders(&args, chunk) + `)`
		if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("group %s: remove: %w", name, err)
		}
	}
	return nil
}

// GroupDevices implements rollout.Store.
func (s *DB) GroupDevices(ctx context.Context, name string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id FROM group_devices WHERE group_name = $1 ORDER BY device_id`, name)
	if err != nil {
		return nil, fmt.Errorf("group %s devices: %w", name, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// AddAudit implements rollout.Store.
func (s *DB) AddAudit(ctx context.Context, e rollout.AuditEntry) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO audit (at, actor, action, subject, detail) VALUES ($1,$2,$3,$4,$5)`, e.Time.UTC(), e.Actor, e.Action, e.Subject, e.Detail)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// FindAudit implements rollout.Store.
func (s *DB) FindAudit(ctx context.Context, subject string, limit int) ([]rollout.AuditEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT at, actor, action, subject, detail FROM audit WHERE subject = $1 ORDER BY id LIMIT $2`, subject, limit)
	if err != nil {
		return nil, fmt.Errorf("audit of %s: %w", subject, err)
	}
	defer rows.Close()
	var out []rollout.AuditEntry
	for rows.Next() {
		var e rollout.AuditEntry
		if err := rows.Scan(&e.Time, &e.Actor, &e.Action, &e.Subject, &e.Detail); err != nil {
			return nil, err
		}
		e.Time = e.Time.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// MoveMembers implements rollout.Store.
func (s *DB) MoveMembers(ctx context.Context, campaignID string, ids []string, from []string, status, detail string, at time.Time) ([]string, error) {
	var moved []string
	err := s.inTx(ctx, "campaign "+campaignID+" members", func(tx *Tx) error {
		for chunk := range slices.Chunk(ids, 500) {
			args := []any{status, detail, at.UTC(), campaignID}
			q := `UPDATE campaign_devices SET status = $1, detail = $2, since = $3 WHERE campaign_id = $4 AND device_id IN (` + placeholders(&args, chunk) + `)`
			if len(from) > 0 {
				q += ` AND status IN (` + placeholders(&args, from) + `)`
			}
			rows, err := tx.QueryContext(ctx, q+` RETURNING device_id`, args...)
			if err != nil {
				return fmt.Errorf("campaign %s members: %w", campaignID, err)
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return err
				}
				moved = append(moved, id)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("campaign %s members: %w", campaignID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return moved, nil
}

// campaignLockSpace is the first key of the PostgreSQL advisory locks on campaigns ("upk"); the
// second is the hash of the campaign id.
const campaignLockSpace = 0x75706b

// LockCampaign implements rollout.Store. On PostgreSQL it takes a session advisory lock on a
// connection of its own, so that replicas step a campaign one at a time; the lock goes with the
// connection if the replica dies. SQLite is served by one process, whose engine already steps one
// campaign at a time, and its writes are serialized: there is nothing to take.
func (s *DB) LockCampaign(ctx context.Context, id string) (unlock func(), err error) {
	switch {
	case s.dialect.Name == "postgres":
	case s.dialect.SingleWriter:
		return func() {}, nil
	default:
		return nil, fmt.Errorf("lock campaign %s: no campaign locks on %s", id, s.dialect.Name)
	}
	conn, err := s.db.DB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock campaign %s: %w", id, err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1, hashtext($2))`, campaignLockSpace, id); err != nil {
		conn.Raw(func(any) error { return driver.ErrBadConn }) //nolint:errcheck // drops the connection
		conn.Close()
		return nil, fmt.Errorf("lock campaign %s: %w", id, err)
	}
	return func() {
		if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1, hashtext($2))`, campaignLockSpace, id); err != nil {
			// A pooled connection must not keep the lock: drop it, and the lock with it.
			conn.Raw(func(any) error { return driver.ErrBadConn }) //nolint:errcheck // drops the connection
		}
		conn.Close()
	}, nil
}

// now is the database's clock: replicas compare lease expiry with one clock, not each their own.
// SQLite is served by one process on one machine, whose clock is the database's.
func (s *DB) now(ctx context.Context) (time.Time, error) {
	if s.dialect.Name != "postgres" {
		return time.Now().UTC(), nil
	}
	var t time.Time
	if err := s.db.QueryRowContext(ctx, `SELECT clock_timestamp()`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("database clock: %w", err)
	}
	return t.UTC(), nil
}

// AcquireLease takes or renews the named lease for holder until the database's now+ttl, if it is
// free, expired or already held by holder. Replicas call it before background work, so that the
// work runs on one of them at a time; a replica that dies loses the lease when it expires. The
// lease only saves the other replicas the work: a campaign's steps are serialized by
// LockCampaign whoever runs them.
func (s *DB) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	now, err := s.now(ctx)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, '', $2) ON CONFLICT (name) DO NOTHING`, name, now.Add(-time.Second)); err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE leases SET holder = $1, expires_at = $2 WHERE name = $3 AND (holder = $1 OR expires_at < $4)`,
		holder, now.Add(ttl), name, now)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
