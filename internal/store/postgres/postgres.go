// Package postgres is Upkeep's scale-out store: PostgreSQL through pgx, implementing every Store
// port with the same SQL as SQLite (through sqlstore). Migrations are embedded and run by goose,
// which takes a session lock so that several replicas can start at once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

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
}

// Open connects to dsn and runs migrations.
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn: %w", err)
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
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub)
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
