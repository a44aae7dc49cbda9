package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"upkeep.dev/upkeep/internal/ddi"
)

var _ ddi.Store = (*DB)(nil)

const actionCols = `id, device_id, target, status, result, confirmed, created_at, updated_at`

func scanAction(row interface{ Scan(...any) error }) (*ddi.Action, error) {
	var a ddi.Action
	if err := row.Scan(&a.ID, &a.DeviceID, &a.Target, &a.Status, &a.Result, &a.Confirmed, &a.CreatedAt, &a.UpdatedAt); err != nil {
		return nil, err
	}
	return &a, nil
}

// CreateAction implements ddi.Store.
func (s *DB) CreateAction(ctx context.Context, a *ddi.Action) error {
	err := s.db.QueryRowContext(ctx, `INSERT INTO ddi_actions (device_id, target, status, result, confirmed, created_at, updated_at)
VALUES ($1,$2,$3,$4,$5,$6,$7) RETURNING id`, a.DeviceID, a.Target, a.Status, a.Result, a.Confirmed, a.CreatedAt.UTC(), a.UpdatedAt.UTC()).Scan(&a.ID)
	if err != nil {
		return fmt.Errorf("create ddi action for %s: %w", a.DeviceID, err)
	}
	return nil
}

// FindAction implements ddi.Store.
func (s *DB) FindAction(ctx context.Context, deviceID string, id int64) (*ddi.Action, error) {
	a, err := scanAction(s.db.QueryRowContext(ctx, `SELECT `+actionCols+` FROM ddi_actions WHERE device_id = $1 AND id = $2`, deviceID, id))
	if err != nil {
		return nil, notFound(err, "action %d not found", id)
	}
	return a, nil
}

// FindActions implements ddi.Store.
func (s *DB) FindActions(ctx context.Context, deviceID string, limit int) ([]*ddi.Action, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+actionCols+` FROM ddi_actions WHERE device_id = $1 ORDER BY id DESC LIMIT $2`, deviceID, limit)
	if err != nil {
		return nil, fmt.Errorf("find ddi actions of %s: %w", deviceID, err)
	}
	defer rows.Close()
	var out []*ddi.Action
	for rows.Next() {
		a, err := scanAction(rows)
		if err != nil {
			return nil, fmt.Errorf("find ddi actions of %s: %w", deviceID, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// UpdateAction implements ddi.Store.
func (s *DB) UpdateAction(ctx context.Context, deviceID string, id int64, from []string, u ddi.ActionUpdate) (bool, error) {
	args := []any{u.At.UTC()}
	sets := []string{"updated_at = $1"}
	set := func(col string, v any) {
		args = append(args, v)
		sets = append(sets, fmt.Sprintf("%s = $%d", col, len(args)))
	}
	if u.Status != nil {
		set("status", *u.Status)
	}
	if u.Result != nil {
		set("result", *u.Result)
	}
	if u.Confirmed != nil {
		set("confirmed", *u.Confirmed)
	}
	args = append(args, deviceID, id)
	q := fmt.Sprintf(`UPDATE ddi_actions SET %s WHERE device_id = $%d AND id = $%d`, strings.Join(sets, ", "), len(args)-1, len(args))
	if len(from) > 0 {
		ph := make([]string, len(from))
		for i, f := range from {
			args = append(args, f)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		q += " AND status IN (" + strings.Join(ph, ",") + ")"
	}
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("update ddi action %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, nil
	}
	if _, err := s.FindAction(ctx, deviceID, id); err != nil {
		return false, err
	}
	return false, nil
}
