package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pgtest"
	"github.com/sallyport/sallyport/internal/shortskip"
)

// outageGuard is how long a test waits for a store call that must end
// by CallTimeout before it says the call hangs: far beyond it, so that a
// slow machine never fails the test, and far below the operating
// system's own timeouts (minutes), which the old code waited for.
const outageGuard = 6 * CallTimeout

// openViaHoleRelay opens the PostgreSQL test database through a HoleRelay,
// closed when t ends.
func openViaHoleRelay(t *testing.T) (*DB, *pgtest.HoleRelay) {
	t.Helper()
	dsn := pgtest.DSN(t)
	_, server := pgtest.Via(t, dsn, "127.0.0.1:1")
	r := pgtest.StartHoleRelay(t, server)
	via, _ := pgtest.Via(t, dsn, r.Addr())
	s, err := OpenPostgres(context.Background(), via)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, r
}

// TestPostgresBlackholeCallsEnd: a database whose packets are dropped
// (no answer, no reset) fails the store's calls after CallTimeout, also
// calls whose context has no deadline (the admin API's) and those that
// need a new connection, and says so as Unavailable. Before, they waited
// as long as the caller's context: forever for the admin API.
func TestPostgresBlackholeCallsEnd(t *testing.T) {
	shortskip.Long(t, "waits for the store's call timeout through a black hole")
	s, r := openViaHoleRelay(t)
	r.Hole()
	ctx := context.Background()
	now := time.Now()
	calls := map[string]func() error{
		"Tokens":    func() error { _, err := s.Tokens(ctx); return err },
		"Connector": func() error { _, err := s.Connector(ctx, "c1"); return err },
		"CAs":       func() error { _, err := s.CAs(ctx); return err },
		"Heartbeat": func() error { return s.Heartbeat(ctx, "r1", now, now.Add(-time.Minute)) },
		"Ping":      func() error { return s.Ping(ctx) },
		"ClaimRefresh": func() error {
			_, _, _, err := s.ClaimRefresh(ctx, "x", "o", now.Add(time.Minute), now)
			return err
		},
	}
	type result struct {
		name string
		err  error
	}
	done := make(chan result, len(calls))
	for name, call := range calls {
		go func() { done <- result{name, call()} }()
	}
	guard := time.NewTimer(outageGuard)
	defer guard.Stop()
	for range calls {
		select {
		case res := <-done:
			if res.err == nil || !Unavailable(res.err) {
				t.Errorf("%s through a black hole: %v; want an error that Unavailable reports", res.name, res.err)
			}
		case <-guard.C:
			t.Errorf("store calls through a black hole have not returned after %v (CallTimeout %v)", outageGuard, CallTimeout)
			return
		}
	}
}

// TestPostgresTerminatedConnectionsReplaced: connections of the pool (and
// Ping's own) that the server ended (pg_terminate_backend, a restart, a failover) are
// replaced at the next call, which succeeds, however recently they were
// used. Before, the first call on each failed with the server's "FATAL:
// terminating connection due to administrator command (SQLSTATE 57P01)"
// when the connection had been used within the last second.
func TestPostgresTerminatedConnectionsReplaced(t *testing.T) {
	b := make([]byte, 6)
	rand.Read(b)
	app := "pgchaos_" + hex.EncodeToString(b)
	s, err := OpenPostgres(context.Background(), pgtest.WithParam(pgtest.DSN(t), "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// Two connections in the pool, both just used.
	var wg sync.WaitGroup
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tokens(ctx); err != nil { // a second connection beside tx's
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil { // and Ping's own
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("pgx", pgtest.ServerDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// With a timeout, pg_terminate_backend waits until each has ended.
	// In the select list it runs only for the rows the WHERE kept (in
	// the WHERE, PostgreSQL may call it before the name's test, on every
	// backend of the server).
	n := 0
	rows, err := admin.QueryContext(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = $1`, app)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ok bool
		if err := rows.Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if ok {
			n++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if n < 1 {
		t.Fatalf("terminated %d connections of the store; want at least 1", n)
	}
	for i := range 2 * n {
		wg.Go(func() {
			if _, err := s.Connector(ctx, fmt.Sprint("c", i)); !errors.Is(err, ErrNotFound) {
				t.Errorf("call %d after the server ended %d connections: %v; want ErrNotFound (a new connection)", i, n, err)
			}
		})
	}
	wg.Wait()
	if _, err := s.Tokens(ctx); err != nil {
		t.Errorf("Tokens after the server ended the connections: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after the server ended its connection: %v; want a new one (/readyz would answer 503)", err)
	}
}

// TestUnavailable: Unavailable tells a database that does not answer from
// one that answers no.
func TestUnavailable(t *testing.T) {
	s, r := openViaHoleRelay(t)
	ctx := context.Background()
	_, err := s.Connector(ctx, "none")
	if !errors.Is(err, ErrNotFound) || Unavailable(err) {
		t.Fatalf("Connector of an unknown id = %v (Unavailable %v); want ErrNotFound, not Unavailable", err, Unavailable(err))
	}
	if _, err := s.db.ExecContext(ctx, `SELEC 1`); err == nil || Unavailable(err) {
		t.Fatalf("a syntax error = %v (Unavailable %v); want an error, not Unavailable", err, Unavailable(err))
	}
	r.Close() // the server is gone: connections closed, new ones refused
	if _, err := s.Tokens(ctx); !Unavailable(err) {
		t.Fatalf("Tokens with the server gone = %v; want an error that Unavailable reports", err)
	}
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-short.Done()
	if _, err := s.Tokens(short); !Unavailable(err) {
		t.Fatalf("Tokens past its deadline = %v; want an error that Unavailable reports", err)
	}
}

// TestPostgresClosedConnectionsReplaced: connections of the pool that
// were closed without a word from the server (a proxy or the network
// between restarted) are replaced by the next reads, which succeed, though
// the connections were used within pingAfterIdle and so are not checked.
// Before, each such connection failed one call with "unexpected EOF" (the
// admin API's connector list answered 503 right after a database outage).
func TestPostgresClosedConnectionsReplaced(t *testing.T) {
	s, r := openViaHoleRelay(t)
	ctx := context.Background()
	reads := map[string]func() error{
		"Connectors": func() error { _, err := s.Connectors(ctx); return err },
		"Tokens":     func() error { _, err := s.Tokens(ctx); return err },
		"CAs":        func() error { _, err := s.CAs(ctx); return err },
		"Connector": func() error {
			if _, err := s.Connector(ctx, "c1"); !errors.Is(err, ErrNotFound) {
				return err
			}
			return nil
		},
	}
	for name, read := range reads {
		// Two connections in the pool (its idle limit), both just used.
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Tokens(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		r.Mend() // closes every connection made so far
		start := time.Now()
		err = read()
		if err != nil {
			t.Errorf("%s right after the pool's connections were closed: %v; want it read on a new connection", name, err)
		}
		if d := time.Since(start); d > pingAfterIdle {
			t.Logf("%s took %v: the pool may have checked its connections, which proves less", name, d)
		}
	}
}
