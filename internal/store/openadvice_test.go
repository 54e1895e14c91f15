package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pgtest"
)

// TestPostgresOpenAdvice: a DSN that requires TLS of a server without it,
// and a search_path naming a schema that does not exist, fail with what to
// do: before, the first said to check that the server runs and accepts
// connections (nothing about sslmode), the second only "schema_version:
// ERROR: no schema has been selected to create in (SQLSTATE 3F000)".
func TestPostgresOpenAdvice(t *testing.T) {
	base := pgtest.ServerDSN(t) // the test server has no TLS
	ctx := context.Background()
	for _, mode := range []string{"require", "verify-full"} {
		dsn := strings.Replace(base, "sslmode=disable", "sslmode="+mode, 1)
		if !strings.Contains(dsn, "sslmode="+mode) {
			dsn = pgtest.WithParam(base, "sslmode", mode)
		}
		s, err := OpenPostgres(ctx, dsn)
		if s != nil {
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "the server does not offer TLS") || !strings.Contains(err.Error(), "set sslmode in the DSN") {
			t.Errorf("sslmode=%s against a server without TLS: %v; want the server does not offer TLS, enable ssl or set sslmode", mode, err)
		}
	}
	b := make([]byte, 6)
	rand.Read(b)
	missing := "missing_" + hex.EncodeToString(b)
	s, err := OpenPostgres(ctx, pgtest.WithParam(base, "search_path", missing))
	if s != nil {
		s.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "the schema named by search_path (\""+missing+"\", from the DSN) does not exist") ||
		!strings.Contains(err.Error(), "CREATE SCHEMA "+missing+" AUTHORIZATION") {
		t.Errorf("search_path naming a missing schema: %v; want what to do", err)
	}
	if testing.Verbose() {
		t.Log(err)
	}
}

// TestShared: only PostgreSQL is shared by gateway replicas; a gateway on
// SQLite counts itself alone (gateway/replicas.go).
func TestShared(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		if got, want := d.open(t).Shared(), d.dsn != ""; got != want {
			t.Fatalf("Shared() = %v, want %v", got, want)
		}
	})
}

// TestRemoveReplicasExcept: the rows of replicas other than those kept go.
func TestRemoveReplicasExcept(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		s := d.open(t)
		ctx := context.Background()
		now := time.Now()
		for _, id := range []string{"a", "b", "c"} {
			if err := s.Heartbeat(ctx, id, now, now.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RemoveReplicasExcept(ctx, []string{"a", "c"}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Replicas(ctx, now.Add(-time.Hour)); err != nil || n != 2 {
			t.Fatalf("%d replicas (%v) after removing b, want 2", n, err)
		}
		if err := s.RemoveReplicasExcept(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Replicas(ctx, now.Add(-time.Hour)); err != nil || n != 0 {
			t.Fatalf("%d replicas (%v) after keeping none, want 0", n, err)
		}
	})
}
