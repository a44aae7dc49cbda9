package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/audit"
)

var _ audit.Store = (*DB)(nil)

const auditCols = `seq, at, actor_type, actor, actor_id, action, target, detail, ip, user_agent, outcome, prev_hash, hash`

func scanRecord(row interface{ Scan(...any) error }) (*audit.Record, error) {
	var r audit.Record
	if err := row.Scan(&r.Seq, &r.Time, &r.ActorType, &r.Actor, &r.ActorID, &r.Action, &r.Target, &r.Detail, &r.IP, &r.UserAgent, &r.Outcome, &r.PrevHash, &r.Hash); err != nil {
		return nil, err
	}
	r.Time = r.Time.UTC()
	return &r, nil
}

// lockChain reads the chain's head row, locked until the transaction ends (SELECT ... FOR
// UPDATE on PostgreSQL; SQLite has one writer, and this process queues its writes).
func (s *DB) lockChain(ctx context.Context, tx *Tx) (audit.Chain, error) {
	lock := ""
	if s.dialect.Name == "postgres" {
		lock = " FOR UPDATE"
	}
	var c audit.Chain
	err := tx.QueryRowContext(ctx, `SELECT head_seq, head_hash, checkpoint_seq, checkpoint_hash FROM audit_chain WHERE id = 1`+lock).
		Scan(&c.HeadSeq, &c.HeadHash, &c.CheckpointSeq, &c.CheckpointHash)
	return c, err
}

// AppendRecord implements audit.Store.
func (s *DB) AppendRecord(ctx context.Context, r *audit.Record) error {
	r.Normalize()
	return s.inTx(ctx, "append audit record", func(tx *Tx) error {
		c, err := s.lockChain(ctx, tx)
		if err != nil {
			return fmt.Errorf("append audit record: %w", err)
		}
		audit.Seal(r, c.HeadSeq, c.HeadHash)
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log (`+auditCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)`,
			r.Seq, r.Time, r.ActorType, r.Actor, r.ActorID, r.Action, r.Target, r.Detail, r.IP, r.UserAgent, r.Outcome, r.PrevHash, r.Hash); err != nil {
			return fmt.Errorf("append audit record %d: %w", r.Seq, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE audit_chain SET head_seq = $1, head_hash = $2 WHERE id = 1`, r.Seq, r.Hash); err != nil {
			return fmt.Errorf("append audit record %d: %w", r.Seq, err)
		}
		return nil
	})
}

// FindRecords implements audit.Store.
func (s *DB) FindRecords(ctx context.Context, f audit.Filter) ([]*audit.Record, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Actor != "" {
		where = append(where, "actor = "+arg(f.Actor))
	}
	if f.Action != "" {
		// Action names are letters, digits, '.', '-' (httpapi's table): no LIKE wildcard in them.
		where = append(where, "(action = "+arg(f.Action)+" OR action LIKE "+arg(strings.NewReplacer("%", "", "_", "").Replace(f.Action)+".%")+")")
	}
	if f.Target != "" {
		where = append(where, "target = "+arg(f.Target))
	}
	switch f.Outcome {
	case "":
	case audit.OutcomeOK:
		where = append(where, "outcome < 400")
	case audit.OutcomeFailed:
		where = append(where, "outcome >= 400")
	case audit.OutcomeDenied:
		where = append(where, "outcome IN (401, 403)")
	default:
		code, err := strconv.Atoi(f.Outcome)
		if err != nil {
			return nil, fmt.Errorf("find audit records: outcome %q", f.Outcome)
		}
		where = append(where, "outcome = "+arg(code))
	}
	if !f.Since.IsZero() {
		where = append(where, "at >= "+arg(f.Since.UTC()))
	}
	if !f.Until.IsZero() {
		where = append(where, "at < "+arg(f.Until.UTC()))
	}
	if f.Before > 0 {
		where = append(where, "seq < "+arg(f.Before))
	}
	limit := f.Limit
	if limit <= 0 || limit > audit.MaxLimit {
		limit = audit.MaxLimit
	}
	q := `SELECT ` + auditCols + ` FROM audit_log` + whereSQL(where)
	q += " ORDER BY seq DESC LIMIT " + strconv.Itoa(limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("find audit records: %w", err)
	}
	defer rows.Close()
	var out []*audit.Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("find audit records: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ExportRecords implements audit.Store. It reads in a snapshot (inSnapshot), not through the
// write queue, so that a long export holds up no append, and a prune or append meanwhile does
// not tear the chain read.
func (s *DB) ExportRecords(ctx context.Context, start func(audit.Chain) error, each func(*audit.Record) error) error {
	return s.inSnapshot(ctx, "export audit records", func(tx querier) error { return exportRecords(ctx, tx, start, each) })
}

func exportRecords(ctx context.Context, tx querier, start func(audit.Chain) error, each func(*audit.Record) error) error {
	var c audit.Chain
	if err := tx.QueryRowContext(ctx, `SELECT head_seq, head_hash, checkpoint_seq, checkpoint_hash FROM audit_chain WHERE id = 1`).
		Scan(&c.HeadSeq, &c.HeadHash, &c.CheckpointSeq, &c.CheckpointHash); err != nil {
		return fmt.Errorf("export audit records: %w", err)
	}
	if err := start(c); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+auditCols+` FROM audit_log WHERE seq <= $1 ORDER BY seq`, c.HeadSeq)
	if err != nil {
		return fmt.Errorf("export audit records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return fmt.Errorf("export audit records: %w", err)
		}
		if err := each(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export audit records: %w", err)
	}
	return nil
}

// PruneRecords implements audit.Store.
func (s *DB) PruneRecords(ctx context.Context, before time.Time, max int) (int64, error) {
	var n int64
	err := s.inTx(ctx, "prune audit records", func(tx *Tx) error {
		c, err := s.lockChain(ctx, tx)
		if err != nil {
			return fmt.Errorf("prune audit records: %w", err)
		}
		var last int64
		var hash string
		err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_log WHERE at < $1 ORDER BY seq DESC LIMIT 1`, before.UTC()).Scan(&last, &hash)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("prune audit records: %w", err)
		}
		if max > 0 && last > c.CheckpointSeq+int64(max) {
			last = c.CheckpointSeq + int64(max)
			if err := tx.QueryRowContext(ctx, `SELECT hash FROM audit_log WHERE seq = $1`, last).Scan(&hash); err != nil {
				return fmt.Errorf("prune audit records: record %d: %w", last, err)
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM audit_log WHERE seq <= $1`, last)
		if err != nil {
			return fmt.Errorf("prune audit records: %w", err)
		}
		n, _ = res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `UPDATE audit_chain SET checkpoint_seq = $1, checkpoint_hash = $2 WHERE id = 1`, last, hash); err != nil {
			return fmt.Errorf("prune audit records: %w", err)
		}
		return nil
	})
	return n, err
}
