// Package sqlite is Upkeep's embedded default store: SQLite in WAL mode through the pure-Go
// modernc driver, implementing every Store port (through sqlstore). Migrations are embedded and
// run by goose.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"strings"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"upkeep.dev/upkeep/internal/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is the SQLite store.
type DB = sqlstore.DB

// Dialect is SQLite's.
var Dialect = sqlstore.Dialect{
	Name: "sqlite",
	IsUnique: func(err error) bool {
		return err != nil && (strings.Contains(err.Error(), "UNIQUE constraint failed") || strings.Contains(err.Error(), "PRIMARY KEY"))
	},
	Greatest:     "max",
	SingleWriter: true,
}

// Open opens (creating if needed) the database at path and runs migrations.
func Open(ctx context.Context, path string) (*DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=cache_size(-16384)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// Keep every connection: a reopened one would parse the schema and prepare statements again.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	return sqlstore.New(db, Dialect), nil
}
