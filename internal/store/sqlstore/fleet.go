package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/inventory"
)

const deviceCols = `id, public_key, serial, product, hardware_id, attributes, status, installed_target,
installed_ver, security_version, installed_sha256, state, last_error, assigned, director_version, last_seen, enrolled_at, assign_policy, simulated, kind`

func scanDevice(row interface{ Scan(...any) error }) (*fleet.Device, error) {
	var d fleet.Device
	var attrs string
	var seen sql.NullTime
	if err := row.Scan(&d.ID, &d.PublicKey, &d.Serial, &d.Product, &d.HardwareID, &attrs, &d.Status, &d.InstalledTarget,
		&d.InstalledVer, &d.SecurityVersion, &d.InstalledSHA256, &d.State, &d.LastError, &d.Assigned, &d.DirectorVersion, &seen, &d.EnrolledAt, &d.AssignPolicy, &d.Simulated, &d.Kind); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(attrs), &d.Attributes); err != nil {
		return nil, fmt.Errorf("device %s attributes: %w", d.ID, err)
	}
	d.LastSeen = seen.Time
	return &d, nil
}

// CreateDevice implements fleet.Store.
func (s *DB) CreateDevice(ctx context.Context, d *fleet.Device) error {
	attrs, _ := json.Marshal(d.Attributes)
	if d.Attributes == nil {
		attrs = []byte("{}")
	}
	pub := d.PublicKey
	if pub == nil {
		pub = []byte{} // a DDI device has no key
	}
	// The device and its attribute values (migration 00025), in one transaction.
	return s.inTx(ctx, "create device "+d.ID, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`, seen_day) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)`,
			d.ID, pub, d.Serial, d.Product, d.HardwareID, string(attrs), d.Status, d.InstalledTarget,
			d.InstalledVer, d.SecurityVersion, d.InstalledSHA256, d.State, d.LastError, d.Assigned, d.DirectorVersion, sql.NullTime{Time: d.LastSeen, Valid: !d.LastSeen.IsZero()}, d.EnrolledAt.UTC(), d.AssignPolicy, d.Simulated, d.Kind,
			sql.NullInt64{Int64: seenDay(d.LastSeen), Valid: !d.LastSeen.IsZero()})
		if s.dialect.IsUnique(err) {
			return apperr.E(apperr.Conflict, "device %s already enrolled", d.ID)
		}
		if err != nil {
			return fmt.Errorf("create device %s: %w", d.ID, err)
		}
		return putAttributes(ctx, tx, d.ID, d.Attributes, false)
	})
}

// attributeValue is one row of device_attributes (migration 00025) without its device.
type attributeValue struct{ key, value string }

// attributeValues are the rows of device_attributes that attrs give, in order and without
// repeats: each key's value, or each of its list values (inventory.Values; a value without a
// separator is a list of one).
func attributeValues(attrs map[string]string) []attributeValue {
	var out []attributeValue
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		vs := inventory.Values(attrs[k])
		slices.Sort(vs)
		for _, v := range slices.Compact(vs) {
			out = append(out, attributeValue{k, v})
		}
	}
	return out
}

// attributeChunk is how many rows one INSERT of putAttributes writes (three bound values each;
// up to eight, the statement is prepared once and cached).
const attributeChunk = 8

// putAttributes writes device id's rows of device_attributes for attrs, in the caller's
// transaction; replace deletes the rows it had first.
func putAttributes(ctx context.Context, ex execer, id string, attrs map[string]string, replace bool) error {
	if replace {
		if _, err := ex.ExecContext(ctx, `DELETE FROM device_attributes WHERE device_id = $1`, id); err != nil {
			return fmt.Errorf("attributes of device %s: %w", id, err)
		}
	}
	for chunk := range slices.Chunk(attributeValues(attrs), attributeChunk) {
		var q strings.Builder
		args := make([]any, 0, 3*len(chunk))
		q.WriteString(`INSERT INTO device_attributes (key, value, device_id) VALUES `)
		for i, a := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "($%d, $%d, $%d)", 3*i+1, 3*i+2, 3*i+3)
			args = append(args, a.key, a.value, id)
		}
		if _, err := ex.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("attributes of device %s: %w", id, err)
		}
	}
	return nil
}

// FindDevice implements fleet.Store.
func (s *DB) FindDevice(ctx context.Context, id string) (*fleet.Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	if err != nil {
		return nil, notFound(err, "device %s not found", id)
	}
	return d, nil
}

// deviceWhere is the WHERE clause (empty or starting with " WHERE") selecting f's devices, with
// its arguments; arg numbers the arguments.
func deviceWhere(f fleet.DeviceFilter, arg func(v any) string) string {
	var where []string
	if f.Product != "" {
		where = append(where, "product = "+arg(f.Product))
	}
	if f.HardwareID != "" {
		where = append(where, "hardware_id = "+arg(f.HardwareID))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if f.Kind == fleet.KindAgent {
		where = append(where, "kind <> "+arg(fleet.KindDDI)) // '' and 'upkeep' are agents
	} else if f.Kind != "" {
		where = append(where, "kind = "+arg(f.Kind))
	}
	if len(f.IDs) > 0 {
		where = append(where, inIDs(f.IDs, arg))
	}
	return whereSQL(where)
}

// inIDs is the condition that a device is one of ids (not empty), its arguments numbered by arg.
func inIDs(ids []string, arg func(v any) string) string {
	ph := make([]string, len(ids))
	for i, id := range ids {
		ph[i] = arg(id)
	}
	return "id IN (" + strings.Join(ph, ",") + ")"
}

// whereSQL is the WHERE clause of the conditions where, all of which must hold ("" for none).
func whereSQL(where []string) string {
	if len(where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(where, " AND ")
}

// FindDevices implements fleet.Store.
func (s *DB) FindDevices(ctx context.Context, f fleet.DeviceFilter) ([]*fleet.Device, error) {
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	q := `SELECT ` + deviceCols + ` FROM devices` + deviceWhere(f, arg) + " ORDER BY id"
	if f.Limit > 0 {
		q += " LIMIT " + arg(f.Limit) + " OFFSET " + arg(f.Offset)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("find devices: %w", err)
	}
	defer rows.Close()
	var out []*fleet.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("find devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// CountDevices implements fleet.Store.
func (s *DB) CountDevices(ctx context.Context, f fleet.DeviceFilter) (int, error) {
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices`+deviceWhere(f, arg), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count devices: %w", err)
	}
	return n, nil
}

// DeletePendingDevices removes the devices still pending (never accepted by an operator) that
// enrolled before before, and returns how many. Pending devices have no events, views or
// assignments: they cannot report or be deployed to.
func (s *DB) DeletePendingDevices(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM devices WHERE status = $1 AND enrolled_at < $2`, fleet.StatusPending, before.UTC())
	if err != nil {
		return 0, fmt.Errorf("delete pending devices: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// PruneEvents applies the device events' retention: it deletes the events older than before and,
// of each device, all but its newest keep (keep <= 0: no bound by count), and returns how many
// it deleted. A device's first successful commit of a published release stays whatever its age:
// it is the evidence of time to patch (FindInstalls), at most one per release and device.
func (s *DB) PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error) {
	const evidence = ` AND NOT (e.step = 'commit' AND e.status = 'ok'
  AND EXISTS (SELECT 1 FROM releases r WHERE r.target = e.target)
  AND e.id = (SELECT MIN(c.id) FROM device_events c WHERE c.device_id = e.device_id AND c.target = e.target AND c.step = 'commit' AND c.status = 'ok'))`
	var total int64
	del := func(q string, args ...any) error {
		res, err := s.db.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("prune device events: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
		return nil
	}
	if !before.IsZero() {
		if err := del(`DELETE FROM device_events WHERE id IN (SELECT e.id FROM device_events e WHERE e.time < $1`+evidence+`)`, before.UTC()); err != nil {
			return total, err
		}
	}
	if keep > 0 {
		// Only devices over the bound are ranked; the index on (device_id, id) serves both steps.
		if err := del(`DELETE FROM device_events WHERE id IN (
SELECT e.id FROM (SELECT id, device_id, target, step, status,
    ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY id DESC) AS rn
  FROM device_events WHERE device_id IN (SELECT device_id FROM device_events GROUP BY device_id HAVING COUNT(*) > $1)) e
WHERE e.rn > $1`+evidence+`)`, keep); err != nil {
			return total, err
		}
	}
	return total, nil
}

// UpdateDevice implements fleet.Store. New attributes are written with their values' rows
// (putAttributes), in one transaction.
func (s *DB) UpdateDevice(ctx context.Context, id string, u fleet.DeviceUpdate) error {
	if u.Attributes != nil {
		return s.inTx(ctx, "update device "+id, func(tx *Tx) error { return s.updateDevice(ctx, tx, id, u) })
	}
	return s.updateDevice(ctx, s.db, id, u)
}

// execer is a database or a transaction.
type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// updateDevice changes the device; with new attributes, ex must be a transaction (their
// values' rows are replaced with them).
func (s *DB) updateDevice(ctx context.Context, ex execer, id string, u fleet.DeviceUpdate) error {
	var sets []string
	var args []any
	set := func(col string, v any) {
		args = append(args, v)
		sets = append(sets, fmt.Sprintf("%s = $%d", col, len(args)))
	}
	if u.Status != nil {
		set("status", *u.Status)
	}
	if u.InstalledTarget != nil {
		set("installed_target", *u.InstalledTarget)
	}
	if u.InstalledVer != nil {
		set("installed_ver", *u.InstalledVer)
	}
	if u.SecurityVersion != nil {
		set("security_version", *u.SecurityVersion)
	}
	if u.InstalledSHA256 != nil {
		set("installed_sha256", *u.InstalledSHA256)
	}
	if u.State != nil {
		set("state", *u.State)
	}
	if u.LastError != nil {
		set("last_error", *u.LastError)
	}
	if u.Assigned != nil {
		set("assigned", *u.Assigned)
	}
	if u.AssignPolicy != nil {
		set("assign_policy", *u.AssignPolicy)
	}
	if u.Attributes != nil {
		attrs, err := json.Marshal(*u.Attributes)
		if err != nil || *u.Attributes == nil {
			attrs = []byte("{}")
		}
		set("attributes", string(attrs))
	}
	if u.DirectorVersion != nil {
		// Monotonic: a slower writer never moves a device back to an older director version.
		args = append(args, *u.DirectorVersion)
		sets = append(sets, fmt.Sprintf("director_version = "+s.dialect.Greatest+"(director_version, $%d)", len(args)))
	}
	if len(sets) == 0 {
		return nil
	}
	args = append(args, id)
	res, err := ex.ExecContext(ctx, fmt.Sprintf(`UPDATE devices SET %s WHERE id = $%d`, strings.Join(sets, ", "), len(args)), args...)
	if err != nil {
		return fmt.Errorf("update device %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.E(apperr.NotFound, "device %s not found", id)
	}
	if u.Attributes != nil {
		return putAttributes(ctx, ex, id, *u.Attributes, true)
	}
	return nil
}

// touchChunk is how many devices one statement of TouchDevices updates (on SQLite three bound
// values each, well under its limit of 32,766).
const touchChunk = 1000

// touchPostgres updates the last-seen times of a chunk in one statement. The rows are locked in
// id order first (the sorted, locking sub-select), so that replicas flushing overlapping devices
// lock them in the same order and cannot deadlock each other; a time never moves back.
const touchPostgres = `UPDATE devices d SET last_seen = v.t, seen_day = floor(extract(epoch FROM v.t) / 86400)::bigint
FROM (SELECT s.id, s.t FROM devices x JOIN unnest($1::text[], $2::timestamptz[]) AS s(id, t) ON x.id = s.id
      WHERE x.last_seen IS NULL OR x.last_seen < s.t ORDER BY x.id FOR UPDATE OF x) AS v
WHERE d.id = v.id`

// seenDay is the day of t, as the devices' seen_day column holds it (migration 00024): whole
// days since 1970-01-01 UTC.
func seenDay(t time.Time) int64 {
	d := t.Unix() / 86400
	if t.Unix() < 0 && t.Unix()%86400 != 0 {
		d-- // floor, as the migration's and PostgreSQL's
	}
	return d
}

// TouchDevices implements fleet.Store: one set-based UPDATE per chunk of touchChunk devices, in
// one transaction.
func (s *DB) TouchDevices(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(seen))
	return s.inTx(ctx, "touch devices", func(tx *Tx) error {
		for chunk := range slices.Chunk(ids, touchChunk) {
			var err error
			if s.dialect.Name == "postgres" {
				times := make([]time.Time, len(chunk))
				for i, id := range chunk {
					times[i] = seen[id].UTC()
				}
				_, err = tx.ExecContext(ctx, touchPostgres, chunk, times)
			} else {
				// SQLite: the chunk as a VALUES list (columns column1, column2), with UPDATE ... FROM.
				var q strings.Builder
				args := make([]any, 0, 2*len(chunk))
				q.WriteString(`UPDATE devices SET last_seen = v.column2, seen_day = v.column3 FROM (VALUES `)
				for i, id := range chunk {
					if i > 0 {
						q.WriteString(", ")
					}
					fmt.Fprintf(&q, "($%d, $%d, $%d)", 3*i+1, 3*i+2, 3*i+3)
					args = append(args, id, seen[id].UTC(), seenDay(seen[id]))
				}
				q.WriteString(`) AS v WHERE devices.id = v.column1 AND (devices.last_seen IS NULL OR devices.last_seen < v.column2)`)
				_, err = tx.ExecContext(ctx, q.String(), args...)
			}
			if err != nil {
				return fmt.Errorf("touch %d devices: %w", len(chunk), err)
			}
		}
		return nil
	})
}

// AddEvents implements fleet.Store.
func (s *DB) AddEvents(ctx context.Context, events []fleet.Event) error {
	if len(events) == 0 {
		return nil
	}
	return s.inTx(ctx, "add events", func(tx *Tx) error { return addEvents(ctx, tx, events) })
}

// RecordReport implements fleet.Store.
func (s *DB) RecordReport(ctx context.Context, id string, u fleet.DeviceUpdate, events []fleet.Event) error {
	return s.inTx(ctx, "record report of "+id, func(tx *Tx) error {
		if err := s.updateDevice(ctx, tx, id, u); err != nil {
			return err
		}
		return addEvents(ctx, tx, events)
	})
}

func addEvents(ctx context.Context, tx *Tx, events []fleet.Event) error {
	for _, e := range events {
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_events (device_id, time, target, step, status, fatal, message) VALUES ($1,$2,$3,$4,$5,$6,$7)`,
			e.DeviceID, e.Time.UTC(), e.Target, e.Step, e.Status, e.Fatal, e.Message); err != nil {
			return fmt.Errorf("add event: %w", err)
		}
	}
	return nil
}

// FindEvents implements fleet.Store.
func (s *DB) FindEvents(ctx context.Context, deviceID string, limit int) ([]fleet.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, time, target, step, status, fatal, message FROM device_events WHERE device_id = $1 ORDER BY id DESC LIMIT $2`, deviceID, limit)
	if err != nil {
		return nil, fmt.Errorf("find events: %w", err)
	}
	defer rows.Close()
	var out []fleet.Event
	for rows.Next() {
		var e fleet.Event
		if err := rows.Scan(&e.DeviceID, &e.Time, &e.Target, &e.Step, &e.Status, &e.Fatal, &e.Message); err != nil {
			return nil, fmt.Errorf("find events: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// CreateEnrollToken implements fleet.Store.
func (s *DB) CreateEnrollToken(ctx context.Context, t *fleet.EnrollToken) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO enroll_tokens (id, hash, name, uses_left, expires_at, product, created_at, simulation) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		t.ID, t.Hash, t.Name, t.UsesLeft, sql.NullTime{Time: t.ExpiresAt.UTC(), Valid: !t.ExpiresAt.IsZero()}, t.Product, t.CreatedAt.UTC(), t.Simulation)
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "enrolment token %s exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("create enrolment token: %w", err)
	}
	return nil
}

// UseEnrollToken implements fleet.Store.
func (s *DB) UseEnrollToken(ctx context.Context, hash []byte, product string, now time.Time) (*fleet.EnrollToken, error) {
	var tok *fleet.EnrollToken
	err := s.inTx(ctx, "use enrolment token", func(tx *Tx) error {
		var t fleet.EnrollToken
		var exp sql.NullTime
		var revoked sql.NullTime
		err := tx.QueryRowContext(ctx, `SELECT id, hash, name, uses_left, expires_at, product, created_at, simulation, revoked_at FROM enroll_tokens WHERE hash = $1`, hash).
			Scan(&t.ID, &t.Hash, &t.Name, &t.UsesLeft, &exp, &t.Product, &t.CreatedAt, &t.Simulation, &revoked)
		if err != nil {
			if err == sql.ErrNoRows {
				return apperr.E(apperr.Unauthorized, "unknown enrolment token")
			}
			return fmt.Errorf("use enrolment token: %w", err)
		}
		t.ExpiresAt = exp.Time
		if revoked.Valid {
			return apperr.E(apperr.Unauthorized, "enrolment token %s is revoked", t.Name)
		}
		if t.UsesLeft == 0 || (exp.Valid && !now.Before(exp.Time)) {
			return apperr.E(apperr.Unauthorized, "enrolment token %s is used up or expired", t.Name)
		}
		if t.Product != "" && t.Product != product { // refused before a use is taken
			return apperr.E(apperr.Forbidden, "enrolment token %s is for product %s", t.Name, t.Product)
		}
		if t.UsesLeft > 0 {
			// Atomic on every database: a concurrent use that took the last one makes this a no-op.
			res, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET uses_left = uses_left - 1 WHERE id = $1 AND uses_left > 0`, t.ID)
			if err != nil {
				return fmt.Errorf("use enrolment token: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return apperr.E(apperr.Unauthorized, "enrolment token %s is used up or expired", t.Name)
			}
			t.UsesLeft--
		}
		tok = &t
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// FindEnrollTokens implements fleet.Store.
func (s *DB) FindEnrollTokens(ctx context.Context) ([]*fleet.EnrollToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, uses_left, expires_at, product, created_at, revoked_at FROM enroll_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("find enrolment tokens: %w", err)
	}
	defer rows.Close()
	var out []*fleet.EnrollToken
	for rows.Next() {
		var t fleet.EnrollToken
		var exp, revoked sql.NullTime
		if err := rows.Scan(&t.ID, &t.Name, &t.UsesLeft, &exp, &t.Product, &t.CreatedAt, &revoked); err != nil {
			return nil, fmt.Errorf("find enrolment tokens: %w", err)
		}
		t.ExpiresAt, t.RevokedAt = exp.Time, revoked.Time
		out = append(out, &t)
	}
	return out, rows.Err()
}

// RevokeEnrollToken implements fleet.Store.
func (s *DB) RevokeEnrollToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE enroll_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2`, at.UTC(), id)
	if err != nil {
		return fmt.Errorf("revoke enrolment token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.E(apperr.NotFound, "no enrolment token %s", id)
	}
	return nil
}

// SetDeviceStatus implements fleet.Store.
func (s *DB) SetDeviceStatus(ctx context.Context, id string, from []string, to string) error {
	return s.inTx(ctx, "set status of device "+id, func(tx *Tx) error {
		var cur string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM devices WHERE id = $1`, id).Scan(&cur); err != nil {
			return notFound(err, "device %s not found", id)
		}
		if !slices.Contains(from, cur) {
			return apperr.E(apperr.Conflict, "device %s is %s", id, cur)
		}
		// Conditional, so that a concurrent change on PostgreSQL (read committed) is not undone.
		res, err := tx.ExecContext(ctx, `UPDATE devices SET status = $1 WHERE id = $2 AND status = $3`, to, id, cur)
		if err != nil {
			return fmt.Errorf("set status of device %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apperr.E(apperr.Conflict, "device %s changed status meanwhile: try again", id)
		}
		return bumpRevocations(ctx, tx)
	})
}

// bumpRevocations moves the revocation generation, in the caller's transaction.
func bumpRevocations(ctx context.Context, tx *Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE revocation_generation SET gen = gen + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("bump revocation generation: %w", err)
	}
	return nil
}

// DecommissionedDevices implements fleet.Store.
func (s *DB) DecommissionedDevices(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM devices WHERE status = $1 ORDER BY id`, fleet.StatusDecommissioned)
	if err != nil {
		return nil, fmt.Errorf("decommissioned devices: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("decommissioned devices: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// UseRequest implements fleet.Store: the primary key makes the first use win on every database
// and across replicas.
func (s *DB) UseRequest(ctx context.Context, id []byte, expires time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO used_requests (id, expires_at) VALUES ($1, $2)`, id, expires.UTC())
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "request %x was used already", id[:8])
	}
	if err != nil {
		return fmt.Errorf("use request: %w", err)
	}
	return nil
}

// PruneRequests implements fleet.Store.
func (s *DB) PruneRequests(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM used_requests WHERE expires_at < $1`, before.UTC())
	if err != nil {
		return 0, fmt.Errorf("prune used requests: %w", err)
	}
	return res.RowsAffected()
}

// simulatedTables hold rows keyed by device_id that go with a removed simulated device.
var simulatedTables = []string{"device_events", "director_views", "campaign_devices", "group_devices", "device_installs"}

// RemoveSimulatedDevices implements fleet.Store.
func (s *DB) RemoveSimulatedDevices(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.inTx(ctx, "remove simulated devices", func(tx *Tx) error {
		ids = ids[:0]
		rows, err := tx.QueryContext(ctx, `SELECT id FROM devices WHERE simulated ORDER BY id`)
		if err != nil {
			return fmt.Errorf("find simulated devices: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("find simulated devices: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("find simulated devices: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		for _, table := range simulatedTables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE device_id IN (SELECT id FROM devices WHERE simulated)`); err != nil {
				return fmt.Errorf("remove simulated devices from %s: %w", table, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE simulated`); err != nil {
			return fmt.Errorf("remove simulated devices: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}
