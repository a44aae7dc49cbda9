package postgres

import (
	"context"
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"upkeep.dev/upkeep/internal/store/storetest"
)

// TestAttributesMigration: migration 25 fills the table of attribute values from the devices
// already stored, so that the console's attribute filter finds them (storetest).
func TestAttributesMigration(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.PostgresDSN(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(pool)
	sub, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 24); err != nil {
		t.Fatal(err)
	}
	for id, attrs := range storetest.AttributesBefore25 {
		if _, err := db.ExecContext(ctx, `INSERT INTO devices (id, public_key, serial, product, hardware_id, attributes, status, enrolled_at)
VALUES ($1, '\x00', 's', 'p', 'h', $2, 'accepted', $3)`, id, storetest.AttributesJSON(attrs), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	pool.Close()
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckAttributesUpgrade(t, s)
}
