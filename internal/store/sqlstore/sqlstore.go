// Package sqlstore implements every Upkeep Store port over database/sql with one SQL text for
// all dialects ($N placeholders, ON CONFLICT, standard types). The sqlite and postgres packages
// open a connection, run their own migrations and pick a Dialect.
package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/director"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/release"
)

// Dialect holds what differs between databases.
type Dialect struct {
	Name     string
	IsUnique func(error) bool // a unique or primary key violation
	Greatest string           // the two-argument maximum function: max (SQLite), GREATEST (PostgreSQL)
	// SingleWriter: the database takes one writer at a time (SQLite). Writes then queue on a
	// mutex in this process instead of in the database's busy handler, which sleeps in steps of
	// milliseconds while the lock may already be free: under a fleet's reports and assignments
	// the CPU sat idle while writers slept.
	SingleWriter bool
	// JSONText is the SQL text of one member of a JSON object stored as text: col is the
	// column, arg the placeholder of the argument JSONKey made of the member's name. (An
	// attribute filter reads device_attributes; only a filter value holding a list separator
	// reads the JSON too.)
	JSONText func(col, arg string) string
	JSONKey  func(key string) string
	// Fold is the SQL text of col with the letters A to Z folded to lower case and nothing
	// else, compared bytewise; migration 00024 indexes it for id and serial.
	Fold func(col string) string
}

// DB is a store over one database handle. It is safe for concurrent use.
type DB struct {
	db      *stmtCache
	dialect Dialect
	// attributeFew: PageDevices reads first the devices with an attribute value if at most
	// this many have it (attributeFew, or what SetAttributeFew set).
	attributeFew int
	// searchWindow: PageDevices looks for a search's page among this many devices of the
	// page's order first (searchWindow, or what SetSearchWindow set; 0: never).
	searchWindow int
}

// stmtCache prepares each distinct statement once and reuses it: SQLite (modernc) otherwise
// parses every statement on every call, which was a fifth of the server's CPU under a fleet's
// check-ins. Statements with many arguments (IN lists of varying length) are not cached, and
// the cache stops growing at maxStmts.
type stmtCache struct {
	*sql.DB
	stmts sync.Map // query -> *sql.Stmt
	n     atomic.Int64
	// wmu, if set, is held by every write: a plain Exec for its duration, a transaction from
	// begin to commit or rollback. No write may start while the same goroutine holds it.
	wmu *sync.Mutex
}

const (
	maxStmts    = 512
	maxStmtArgs = 24
)

func (c *stmtCache) prepared(ctx context.Context, q string, nargs int) *sql.Stmt {
	if st, ok := c.stmts.Load(q); ok {
		return st.(*sql.Stmt)
	}
	if nargs > maxStmtArgs || c.n.Load() >= maxStmts {
		return nil
	}
	st, err := c.DB.PrepareContext(ctx, q)
	if err != nil {
		return nil // the plain call reports the error
	}
	if prev, loaded := c.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt)
	}
	c.n.Add(1)
	return st
}

func (c *stmtCache) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := c.prepared(ctx, q, len(args)); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.DB.QueryRowContext(ctx, q, args...)
}

func (c *stmtCache) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := c.prepared(ctx, q, len(args)); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return c.DB.QueryContext(ctx, q, args...)
}

func (c *stmtCache) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if c.wmu != nil {
		c.wmu.Lock()
		defer c.wmu.Unlock()
	}
	if st := c.prepared(ctx, q, len(args)); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return c.DB.ExecContext(ctx, q, args...)
}

// querier reads: a transaction or a connection.
type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// inSnapshot runs fn's reads in one snapshot of the database, in a read transaction of its own
// on the underlying handle, not through the write queue: on PostgreSQL a REPEATABLE READ,
// read-only transaction; on SQLite (whose transactions here begin IMMEDIATE, taking the write
// lock) a BEGIN DEFERRED on a connection of its own, a snapshot in WAL mode. Its statements
// are not the cache's.
func (s *DB) inSnapshot(ctx context.Context, what string, fn func(q querier) error) error {
	if s.dialect.Name == "postgres" {
		t, err := s.db.DB.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		defer t.Rollback()
		return fn(t)
	}
	conn, err := s.db.DB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN DEFERRED"); err != nil {
		conn.Close()
		return fmt.Errorf("%s: %w", what, err)
	}
	defer func() {
		// A connection whose transaction could not be ended must not go back to the pool.
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn }) //nolint:errcheck // discards the connection
		}
		conn.Close()
	}()
	return fn(conn)
}

// Tx is a transaction that runs the cache's prepared statements on its connection.
type Tx struct {
	*sql.Tx
	c       *stmtCache
	done    atomic.Bool // committed or rolled back: the write lock is released
	missing []pending   // statements to prepare once the transaction ended
}

type pending struct {
	q     string
	nargs int
}

// BeginTx starts a transaction whose statements come from the cache. With a single-writer
// database it waits for the write lock first.
func (c *stmtCache) BeginTx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	if c.wmu != nil {
		c.wmu.Lock()
	}
	tx, err := c.DB.BeginTx(ctx, opts)
	if err != nil {
		if c.wmu != nil {
			c.wmu.Unlock()
		}
		return nil, err
	}
	return &Tx{Tx: tx, c: c}, nil
}

func (t *Tx) release() {
	if !t.done.CompareAndSwap(false, true) {
		return
	}
	if t.c.wmu != nil {
		t.c.wmu.Unlock()
	}
	for _, p := range t.missing {
		t.c.prepared(context.Background(), p.q, p.nargs)
	}
	t.missing = nil
}

// Commit commits the transaction and releases the write lock.
func (t *Tx) Commit() error {
	defer t.release()
	return t.Tx.Commit()
}

// Rollback rolls the transaction back (if it is still open) and releases the write lock.
func (t *Tx) Rollback() error {
	defer t.release()
	return t.Tx.Rollback()
}

// stmt returns the cached statement for q bound to the transaction, or nil. It never prepares
// one itself: that takes a second connection while the transaction holds one, and transactions
// that each wait for a connection would deadlock a small pool. The statement is prepared once
// the transaction has ended instead.
func (t *Tx) stmt(ctx context.Context, q string, nargs int) *sql.Stmt {
	if st, ok := t.c.stmts.Load(q); ok {
		return t.Tx.StmtContext(ctx, st.(*sql.Stmt))
	}
	if nargs <= maxStmtArgs {
		t.missing = append(t.missing, pending{q, nargs})
	}
	return nil
}

func (t *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, q, len(args)); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, q, args...)
}

func (t *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.stmt(ctx, q, len(args)); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, q, args...)
}

func (t *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, q, len(args)); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, q, args...)
}

func (c *stmtCache) Close() error {
	c.stmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	return c.DB.Close()
}

var (
	_ fleet.Store     = (*DB)(nil)
	_ release.Store   = (*DB)(nil)
	_ imagerepo.Store = (*DB)(nil)
	_ director.Store  = (*DB)(nil)
	_ auth.Store      = (*DB)(nil)
)

// New wraps an open, migrated database.
func New(db *sql.DB, d Dialect) *DB {
	c := &stmtCache{DB: db}
	if d.SingleWriter {
		c.wmu = &sync.Mutex{}
	}
	s := &DB{db: c, dialect: d, attributeFew: attributeFew, searchWindow: searchWindow}
	if d.Name == "postgres" {
		// PostgreSQL chooses between the search's prefix ranges and the page's order from its
		// statistics; the window only added its rows (100,000 devices: a serial prefix 2.7 ms
		// without, 6.5 ms with; a prefix every id has 2.8 and 4.2 ms).
		s.searchWindow = 0
	}
	return s
}

// SetAttributeFew sets how many devices with an attribute value are few enough for PageDevices
// to read them first (attributeFew by default), and returns the previous bound; 0 reads them
// first only if none has it, so that the conformance suite takes both ways with a few devices.
// Not safe while the store is in use.
func (s *DB) SetAttributeFew(n int) int {
	old := s.attributeFew
	s.attributeFew = n
	return old
}

// SetSearchWindow sets among how many devices of a page's order PageDevices looks for a
// search's page first (searchWindow by default; 0: never), and returns the previous number, so
// that the conformance suite takes every way with a few devices. Not safe while the store is in
// use.
func (s *DB) SetSearchWindow(n int) int {
	old := s.searchWindow
	s.searchWindow = n
	return old
}

// Close closes the database.
func (s *DB) Close() error { return s.db.Close() }

// SQL exposes the handle for tests and benchmarks.
func (s *DB) SQL() *sql.DB { return s.db.DB }

func notFound(err error, format string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return apperr.E(apperr.NotFound, format, args...)
	}
	return err
}

// inTx runs f in a transaction and commits it if f succeeds.
func (s *DB) inTx(ctx context.Context, what string, f func(*Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
