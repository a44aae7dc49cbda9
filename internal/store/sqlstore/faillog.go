package sqlstore

import (
	"context"
	"fmt"
	"time"

	"upkeep.dev/upkeep/internal/faillog"
)

var _ faillog.Store = (*DB)(nil)

// CreateDeviceLog implements faillog.Store.
func (s *DB) CreateDeviceLog(ctx context.Context, l *faillog.Log) error {
	// In a transaction, so that it takes SQLite's in-process write lock like every write.
	return s.inTx(ctx, "create device log of "+l.DeviceID, func(tx *Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO device_logs (device_id, received_at, target, step, data)
VALUES ($1,$2,$3,$4,$5) RETURNING id`, l.DeviceID, l.ReceivedAt.UTC(), l.Target, l.Step, l.Data).Scan(&l.ID)
	})
}

// FindDeviceLogs implements faillog.Store.
func (s *DB) FindDeviceLogs(ctx context.Context, deviceID string, limit int) ([]*faillog.Log, error) {
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, device_id, received_at, target, step, data FROM device_logs
WHERE device_id = $1 ORDER BY id DESC LIMIT $2`, deviceID, limit)
	if err != nil {
		return nil, fmt.Errorf("find device logs of %s: %w", deviceID, err)
	}
	defer rows.Close()
	var out []*faillog.Log
	for rows.Next() {
		var l faillog.Log
		if err := rows.Scan(&l.ID, &l.DeviceID, &l.ReceivedAt, &l.Target, &l.Step, &l.Data); err != nil {
			return nil, fmt.Errorf("find device logs of %s: %w", deviceID, err)
		}
		l.ReceivedAt = l.ReceivedAt.UTC()
		out = append(out, &l)
	}
	return out, rows.Err()
}

// PruneDeviceLogs implements faillog.Store. It also deletes the bundles of removed devices.
func (s *DB) PruneDeviceLogs(ctx context.Context, before time.Time, keep int) (int64, error) {
	var total int64
	del := func(q string, args ...any) error {
		res, err := s.db.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("prune device logs: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
		return nil
	}
	if err := del(`DELETE FROM device_logs WHERE received_at < $1`, before.UTC()); err != nil {
		return total, err
	}
	if err := del(`DELETE FROM device_logs WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = device_logs.device_id)`); err != nil {
		return total, err
	}
	if keep > 0 {
		if err := del(`DELETE FROM device_logs WHERE id IN (
SELECT l.id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY id DESC) AS rn
  FROM device_logs WHERE device_id IN (SELECT device_id FROM device_logs GROUP BY device_id HAVING COUNT(*) > $1)) l
WHERE l.rn > $1)`, keep); err != nil {
			return total, err
		}
	}
	return total, nil
}
