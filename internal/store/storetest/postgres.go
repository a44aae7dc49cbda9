package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// PostgresServer returns UPKEEP_TEST_POSTGRES, the DSN of a PostgreSQL for tests. When it is
// unset the test skips, or fails if UPKEEP_REQUIRE_SERVICES=1 (CI sets it: there a missing
// database is a broken run, not a reason to skip).
func PostgresServer(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("UPKEEP_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("UPKEEP_REQUIRE_SERVICES") == "1" {
			t.Fatal("UPKEEP_TEST_POSTGRES is not set, and UPKEEP_REQUIRE_SERVICES=1 requires the PostgreSQL suites to run")
		} else {
			t.Skip("UPKEEP_TEST_POSTGRES is not set")
		}
	}
	return dsn
}

// PostgresDSN returns a DSN for a fresh, empty schema in the PostgreSQL named by
// UPKEEP_TEST_POSTGRES, dropped when the test ends; unset, as PostgresServer.
func PostgresDSN(t *testing.T) string {
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
