package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/storetest"
)

// TestConformance runs the store suite against the real PostgreSQL named by
// UPKEEP_TEST_POSTGRES (CI sets it), each test in a schema of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		db, err := postgres.Open(context.Background(), storetest.PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}

// TestConcurrentMigrations: replicas that start together on a fresh database all come up; the
// migrations run once, under goose's session lock, while the others wait.
func TestConcurrentMigrations(t *testing.T) {
	dsn := freshDatabase(t)
	const replicas = 3
	errs := make(chan error, replicas)
	start := make(chan struct{})
	for range replicas {
		go func() {
			<-start
			db, err := postgres.Open(context.Background(), dsn)
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	close(start)
	for range replicas {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// freshDatabase creates an empty database next to the one UPKEEP_TEST_POSTGRES names, dropped
// when the test ends, and returns its DSN.
func freshDatabase(t *testing.T) string {
	t.Helper()
	dsn := storetest.PostgresServer(t)
	ctx := context.Background()
	b := make([]byte, 6)
	rand.Read(b)
	name := "upkeep_test_" + strings.ToLower(t.Name()) + "_" + hex.EncodeToString(b)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), dsn); err == nil {
			c.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
