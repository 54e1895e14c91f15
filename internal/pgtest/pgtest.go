// Package pgtest gives each test a PostgreSQL schema of its own on the
// test server that `make postgres` starts, whose DSN make test passes in
// SALLYPORT_TEST_POSTGRES. Without it the test is skipped, except under
// CI=true, where it fails: CI must run the PostgreSQL tests.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// EnvDSN names the variable holding the test server's DSN.
const EnvDSN = "SALLYPORT_TEST_POSTGRES"

// ServerDSN returns the test server's DSN, or skips t (fails it under
// CI=true) when there is none.
func ServerDSN(t testing.TB) string {
	t.Helper()
	dsn := strings.TrimSpace(os.Getenv(EnvDSN))
	if dsn != "" {
		return dsn
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not set under CI: .ci/run must run `make postgres` before `make test`", EnvDSN)
	}
	t.Skipf("no PostgreSQL test server: run `make postgres` (it starts one and make test passes its DSN in %s); "+
		"this test is only skipped outside CI", EnvDSN)
	return ""
}

// DSN returns a DSN whose search path is a new empty schema on the test
// server, dropped when t ends, so tests on one server never see each
// other's tables. Every handle opened with it works in that schema.
func DSN(t testing.TB) string {
	t.Helper()
	base := ServerDSN(t)
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("%s: %v", EnvDSN, err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		db.Close()
		t.Fatalf("the PostgreSQL test server (%s=%s) does not answer: %v; start it with `make postgres`", EnvDSN, base, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
		db.Close()
	})
	return WithParam(base, "search_path", schema)
}

// WithParam adds key=value to a DSN in either form (URL or key=value
// pairs).
func WithParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + key + "=" + value
	}
	return dsn + " " + key + "=" + value
}

// Via returns dsn with its server's address replaced by addr
// (127.0.0.1:PORT), and the address it replaced: for a relay between a
// test's client and the server.
func Via(t testing.TB, dsn, addr string) (viaDSN, server string) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("%s: %v", EnvDSN, err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return WithParam(WithParam(dsn, "host", host), "port", port), net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}
