// Package pgtest gives tests a PostgreSQL to use. BALDUR_TEST_PG_DSN names
// it; when the variable is set the database is required and a test fails if
// it cannot connect (CI sets it). When it is unset the machine's default
// (postgres@127.0.0.1:5432/test) is used if something answers there, and
// otherwise the test is skipped with a one-line reason, so `make test` passes
// on a machine with Go alone.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN is the variable that names the test database.
const EnvDSN = "BALDUR_TEST_PG_DSN"

// DefaultDSN is used when EnvDSN is unset and something answers on its address.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

const defaultAddr = "127.0.0.1:5432"

// DSN returns the test database's DSN, skipping tb when EnvDSN is unset and
// nothing answers on the default address.
func DSN(tb testing.TB) string {
	tb.Helper()
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return dsn
	}
	conn, err := net.DialTimeout("tcp", defaultAddr, time.Second)
	if err != nil {
		tb.Skipf("PostgreSQL tests skipped: %s is unset and nothing answers on %s", EnvDSN, defaultAddr)
	}
	conn.Close()
	return DefaultDSN
}

// Schema creates a schema of its own for tb in the test database and returns
// a DSN whose search_path is that schema; the schema is dropped at cleanup.
// prefix names the schema (prefix_<nanoseconds>).
func Schema(tb testing.TB, prefix string) string {
	tb.Helper()
	base := DSN(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("PostgreSQL at %s: %v (set %s)", base, err, EnvDSN)
	}
	defer conn.Close(context.Background())
	schema := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("create schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}
