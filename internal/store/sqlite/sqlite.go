// Package sqlite is Upkeep's embedded default store: SQLite in WAL mode through the pure-Go
// modernc driver, implementing every Store port (through sqlstore). Migrations are embedded and
// run by goose.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
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
	JSONText:     func(col, arg string) string { return "json_extract(" + col + ", " + arg + ")" },
	JSONKey:      func(key string) string { return `$."` + key + `"` },    // keys are letters, digits and . _ : - (fleet.DevicePage)
	Fold:         func(col string) string { return "lower(" + col + ")" }, // ASCII only, without ICU
}

// Open opens (creating if needed) the database at path and runs migrations. The database and
// its -wal and -shm files are readable by the server's user only (0600), whatever the umask:
// the file is created so before SQLite opens it (SQLite gives its journal files the database
// file's mode), and files made more open by an earlier version are closed again.
func Open(ctx context.Context, path string) (*DB, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	f.Close()
	if err := private(path); err != nil {
		return nil, err
	}
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
	if err := private(path); err != nil {
		db.Close()
		return nil, err
	}
	return sqlstore.New(db, Dialect), nil
}

// private makes the database file and its -wal and -shm files (those that exist) 0600.
func private(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sqlite file mode: %w", err)
		}
	}
	return nil
}
