package sqlstore

import (
	"context"
	"fmt"

	"upkeep.dev/upkeep/internal/rollout"
)

// RolloutCounts counts campaigns by state, and the members of unfinished campaigns (created,
// running, paused) by status: two grouped counts for the rollout gauges of /metrics. Members of
// finished campaigns are left out, so the count reads only the campaigns an operator can still
// act on.
func (s *DB) RolloutCounts(ctx context.Context) (campaigns, members map[string]int, err error) {
	if campaigns, err = s.countBy(ctx, `SELECT state, COUNT(*) FROM campaigns GROUP BY state`); err != nil {
		return nil, nil, fmt.Errorf("count campaigns: %w", err)
	}
	members, err = s.countBy(ctx, `SELECT m.status, COUNT(*) FROM campaign_devices m JOIN campaigns c ON c.id = m.campaign_id
		WHERE c.state NOT IN ($1, $2) GROUP BY m.status`, rollout.StateCompleted, rollout.StateCancelled)
	if err != nil {
		return nil, nil, fmt.Errorf("count campaign members: %w", err)
	}
	return campaigns, members, nil
}

func (s *DB) countBy(ctx context.Context, q string, args ...any) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return nil, err
		}
		counts[k] = n
	}
	return counts, rows.Err()
}
