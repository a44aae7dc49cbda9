// Package postgres is Upkeep's scale-out store: PostgreSQL through pgx, implementing every Store
// port with the same SQL as SQLite (through sqlstore). Migrations are embedded and run by goose,
// under a session-level advisory lock so that several replicas can start at once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"upkeep.dev/upkeep/internal/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is the PostgreSQL store.
type DB = sqlstore.DB

// Dialect is PostgreSQL's.
var Dialect = sqlstore.Dialect{
	Name: "postgres",
	IsUnique: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "23505"
	},
	Greatest: "GREATEST",
	JSONText: func(col, arg string) string { return "(" + col + "::jsonb ->> " + arg + ")" },
	JSONKey:  func(key string) string { return key },
	Fold:     func(col string) string { return "lower(" + col + ` COLLATE "C")` }, // ASCII only under C
}

// Open connects to dsn and runs migrations.
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn: %w", err)
	}
	// pgxpool's default (four connections on a 2-core machine) is too few for a server: a
	// campaign step holds one for its lock while its transactions, reports, enrolments and the
	// last-seen flush need others. pool_max_conns in the DSN still decides when given.
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = max(16, 4*int32(runtime.NumCPU()))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect postgres: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	// Replicas that start together must not run the same migrations at once: goose holds a
	// session-level advisory lock while it migrates, and the others wait for it (retrying each
	// second, for up to five minutes) and then find nothing left to do. The lock is keyed by the
	// schema, so stores in different schemas of one database (tests) do not wait on each other.
	var schema string
	if err := db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect postgres: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID(schema)), lock.WithLockTimeout(1, 300))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub, goose.WithSessionLocker(locker))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate postgres: %w", err)
	}
	return sqlstore.New(db, Dialect), nil
}

// migrationLockID is the advisory lock key of the migrations of a schema.
func migrationLockID(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("upkeep migrations " + schema))
	return int64(h.Sum64())
}

// CreateSchema creates schema (a plain identifier: letters, digits, underscores) in the database
// of dsn if it does not exist: a tenant's store lives in a schema of its own.
func CreateSchema(ctx context.Context, dsn, schema string) error {
	return schemaExec(ctx, dsn, schema, `CREATE SCHEMA IF NOT EXISTS `+schema)
}

// DropSchema drops schema and everything in it, if it exists.
func DropSchema(ctx context.Context, dsn, schema string) error {
	return schemaExec(ctx, dsn, schema, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
}

func schemaExec(ctx context.Context, dsn, schema, stmt string) error {
	if schema == "" || len(schema) > 63 {
		return fmt.Errorf("schema name %q: want 1-63 bytes", schema)
	}
	for _, r := range schema {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("schema name %q: want a-z, 0-9 and _ only", schema)
		}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("postgres dsn: %w", err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect postgres: %w", err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("schema %s: %w", schema, err)
	}
	return nil
}
