package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pgtest"
)

// alternate runs f n times at once, on handles a and b in turn (two
// processes or replicas), and waits for all.
func alternate(n int, a, b *DB, f func(i int, s *DB)) {
	var wg sync.WaitGroup
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() { f(i, s) })
	}
	wg.Wait()
}

// TestConcurrentStartsMakeOneCA: gateways starting together on an empty
// database (replicas rolled out at once) migrate it once, side by side
// without failing, and create exactly one connector CA between them.
// SQLite's handles open one after another: a new SQLite file opened by
// several processes at the same instant can refuse one with SQLITE_BUSY
// (switching it to WAL), and SQLite is not for replicas anyway.
func TestConcurrentStartsMakeOneCA(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		const n = 6
		var wg, opened sync.WaitGroup
		created := make([]bool, n)
		start := make(chan struct{}) // closed once every handle is open
		for i := range n {
			wg.Add(1)
			opened.Add(1)
			var s *DB
			var err error
			if d.dsn == "" {
				s, err = d.tryOpen(ctx)
			}
			go func() {
				defer wg.Done()
				if d.dsn != "" {
					s, err = d.tryOpen(ctx)
				}
				opened.Done()
				if err != nil {
					t.Errorf("open %d: %v", i, err)
					return
				}
				defer s.Close()
				// The opens took turns (the migration lock); the CAs are
				// added all at once.
				<-start
				created[i], err = s.AddCA(ctx, CA{ID: fmt.Sprint("ca", i), Active: true, Created: time.Now()}, true)
				if err != nil {
					t.Errorf("AddCA %d: %v", i, err)
				}
			}()
		}
		opened.Wait()
		close(start)
		wg.Wait()
		wins := 0
		for _, c := range created {
			if c {
				wins++
			}
		}
		s := d.open(t)
		cas, err := s.CAs(ctx)
		if wins != 1 || err != nil || len(cas) != 1 || !cas[0].Active {
			t.Fatalf("%d created; CAs = %+v, %v; want exactly one, active", wins, cas, err)
		}
		var rows, v int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_version`).Scan(&rows, &v); err != nil || rows != 1 || v != SchemaVersion {
			t.Fatalf("schema_version: %d rows, version %d (%v); want 1 row of %d", rows, v, err, SchemaVersion)
		}
	})
}

// TestConcurrentRotationsKeepOneActive: CA rotations at once from two
// handles (`gateway ca rotate` run on two replicas) leave every CA in
// the bundle and exactly one of them active.
func TestConcurrentRotationsKeepOneActive(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		a, b := d.open(t), d.open(t)
		const n = 8
		alternate(n, a, b, func(i int, s *DB) {
			if _, err := s.AddCA(ctx, CA{ID: fmt.Sprint("ca", i), Active: true, Created: time.Now()}, false); err != nil {
				t.Errorf("AddCA %d: %v", i, err)
			}
		})
		cas, err := a.CAs(ctx)
		active := 0
		for _, c := range cas {
			if c.Active {
				active++
			}
		}
		if err != nil || len(cas) != n || active != 1 {
			t.Fatalf("%d CAs, %d active (%v); want %d and 1", len(cas), active, err, n)
		}
	})
}

// TestSecretFirstWins: a secret is made once; gateways asking at the same
// moment on one database all get the first one stored.
func TestSecretFirstWins(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		a, b := d.open(t), d.open(t)
		const n = 8
		got := make([]string, n)
		alternate(n, a, b, func(i int, s *DB) {
			v, err := s.Secret(ctx, "k", func() (string, error) { return fmt.Sprint("v", i), nil })
			if err != nil {
				t.Errorf("Secret %d: %v", i, err)
			}
			got[i] = v
		})
		for _, v := range got {
			if v != got[0] || v == "" {
				t.Fatalf("Secret gave %q; want one value for all", got)
			}
		}
		if v, err := b.Secret(ctx, "k", func() (string, error) { return "", errors.New("not asked again") }); err != nil || v != got[0] {
			t.Fatalf("Secret later = %q, %v; want %q without creating", v, err, got[0])
		}
		if _, err := a.Secret(ctx, "other", func() (string, error) { return "", errors.New("no entropy") }); err == nil || err.Error() != "no entropy" {
			t.Fatalf("Secret with a failing create = %v", err)
		}
	})
}

// TestPostgresMigrationWaitsForAnother: a replica that starts while
// another migrates waits for it (the advisory lock) instead of migrating
// beside it, then finds the schema current.
func TestPostgresMigrationWaitsForAnother(t *testing.T) {
	dsn := pgtest.DSN(t)
	d := testDB{dsn: dsn}
	ctx := context.Background()
	raw := d.raw(t)
	// The opener names itself, so that only its wait counts (other
	// packages' tests may wait for locks on the same server).
	opener := testDB{dsn: pgtest.WithParam(dsn, "application_name", "sallyport_migrate_test")}
	// Hold the lock as a migrating replica does.
	holder, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // committed below
	if err := pgLock(ctx, holder, "migrate"); err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		s, err := opener.tryOpen(ctx)
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	// Wait until the opener waits for the lock.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var waiting int
		if err := raw.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = 'sallyport_migrate_test'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-opened:
			t.Fatalf("the store opened (%v) while another migration held the lock", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the opening store never waited for the migration lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("open after the other migration: %v", err)
	}
}

// TestPostgresUnreachable: a database that cannot be reached at start,
// or a DSN that does not parse, gives an error that says where and what
// to check, and never shows the password.
func TestPostgresUnreachable(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		dsn  string
		want []string
	}{
		// Port 1 on loopback refuses at once.
		{"postgres://sallyport:hunter2@127.0.0.1:1/gw?sslmode=disable&connect_timeout=5",
			[]string{`cannot use PostgreSQL at 127.0.0.1:1 database "gw" user "sallyport"`, "check that the server runs"}},
		{"host=127.0.0.1 port=1 dbname=gw user=u password=hunter2 sslmode=disable connect_timeout=5",
			[]string{`127.0.0.1:1 database "gw" user "u"`, "pg_hba.conf"}},
		{"postgres://u:hunter2@127.0.0.1:notaport/gw", []string{"PostgreSQL DSN", "postgres://USER@HOST:PORT/DATABASE"}},
	} {
		s, err := OpenPostgres(ctx, tc.dsn)
		if err == nil {
			s.Close()
			t.Fatalf("OpenPostgres(%s) opened", tc.dsn)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("OpenPostgres(%s) = %v; want it to say %q", tc.dsn, err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// TestPostgresConnectionsLost: when the database drops the store's
// connections (a restart, a failover), calls fail at most once and then
// work again on new connections; nothing panics.
func TestPostgresConnectionsLost(t *testing.T) {
	ctx := context.Background()
	d := testDB{dsn: pgtest.WithParam(pgtest.DSN(t), "application_name", "sallyport_lost_test")}
	s := d.open(t)
	if err := s.CreateToken(ctx, Token{ID: "t", Group: "g", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	raw := d.raw(t)
	var killed int
	if err := raw.QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'sallyport_lost_test' AND pid <> pg_backend_pid()`).Scan(&killed); err != nil || killed == 0 {
		t.Fatalf("terminated %d connections: %v", killed, err)
	}
	failures := 0
	for range 3 {
		toks, err := s.Tokens(ctx)
		if err == nil && len(toks) == 1 {
			break
		}
		if err == nil {
			t.Fatalf("Tokens = %+v", toks)
		}
		if errors.Is(err, sql.ErrConnDone) || failures > 0 {
			t.Fatalf("Tokens after the connections were lost: %v", err)
		}
		failures++
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}
