package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"

	"upkeep.dev/upkeep/internal/testenv"
)

// PostgresServer returns UPKEEP_TEST_POSTGRES, the DSN of a PostgreSQL for tests; unset, the
// test skips, or fails under CI (testenv.Service).
func PostgresServer(t testing.TB) string {
	t.Helper()
	return testenv.Service(t, "UPKEEP_TEST_POSTGRES", "PostgreSQL")
}

// PostgresDSN returns a DSN for a fresh, empty schema in the PostgreSQL named by
// UPKEEP_TEST_POSTGRES, dropped when the test ends; unset, as PostgresServer.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := PostgresServer(t)
	b := make([]byte, 6)
	rand.Read(b)
	schema := "upkeep_test_" + hex.EncodeToString(b)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), dsn); err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
