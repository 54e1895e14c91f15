package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testDB is one empty database of a test: a SQLite file in dir, or, when
// dsn is set, a PostgreSQL schema of its own (pgtest.DSN).
type testDB struct {
	dir string
	dsn string
}

// forEachDB runs f once on a new SQLite database and once on a new
// PostgreSQL one (skipped without the test server outside CI): every
// behaviour of the store holds on both.
func forEachDB(t *testing.T, f func(t *testing.T, d testDB)) {
	t.Run("sqlite", func(t *testing.T) { f(t, testDB{dir: t.TempDir()}) })
	t.Run("postgres", func(t *testing.T) { f(t, testDB{dsn: pgtest.DSN(t)}) })
}

// tryOpen opens a new handle on d: what another process or replica would.
func (d testDB) tryOpen(ctx context.Context) (*DB, error) {
	if d.dsn != "" {
		return OpenPostgres(ctx, d.dsn)
	}
	return Open(ctx, d.dir)
}

// open is tryOpen that fails t on an error and closes the handle when t
// ends.
func (d testDB) open(t *testing.T) *DB {
	t.Helper()
	s, err := d.tryOpen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// raw opens d with the driver alone, without migrations.
func (d testDB) raw(t *testing.T) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite", "file:"+filepath.Join(d.dir, FileName)
	if d.dsn != "" {
		driver, dsn = "pgx", d.dsn
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// open opens a SQLite store in dir (the tests of what is SQLite's alone).
func open(t *testing.T, dir string) *DB {
	t.Helper()
	return testDB{dir: dir}.open(t)
}

func TestOpenCreatesPrivateFileAndMigrates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := open(t, dir)
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %v, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(dir)
	if di.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", di.Mode().Perm())
	}
	// The journal files SQLite creates hold the same secrets.
	if err := s.CreateToken(context.Background(), Token{ID: "t", Group: "g", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{FileName + "-wal", FileName + "-shm"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", name, err, fi.Mode().Perm())
		}
	}
	var v int
	if err := s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("schema version %d (%v), want %d", v, err, SchemaVersion)
	}
	// Reopening applies nothing twice.
	s.Close()
	s2 := open(t, dir)
	if err := s2.db.QueryRow(`SELECT COUNT(*) FROM schema_version`).Scan(&v); err != nil || v != 1 {
		t.Fatalf("schema_version rows %d (%v), want 1", v, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		s := d.open(t)
		if _, err := s.db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
			t.Fatal(err)
		}
		s.Close()
		_, err := d.tryOpen(context.Background())
		if err == nil || !contains(err.Error(), "schema version 99") {
			t.Fatalf("Open = %v, want a schema version error", err)
		}
	})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestStateSurvivesReopen(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		now := time.Unix(1700000000, 0).UTC()
		if ok, err := s.AddCA(ctx, CA{ID: "ca1", CertPEM: []byte("c"), KeyPEM: []byte("k"), Active: true, Created: now}, true); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if ok, err := s.AddCA(ctx, CA{ID: "ca-dup", Active: true, Created: now}, true); ok || err != nil {
			t.Fatalf("second AddCA onlyIfNone = %v, %v; want false", ok, err)
		}
		if err := s.AddConnector(ctx, Connector{ID: "c1", Name: "n", Group: "g", Enrolled: now, CertSerial: "01", CertExpires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateToken(ctx, Token{ID: "t1", Hash: sha256.Sum256([]byte("x")), Group: "g", MaxUses: 1, Created: now}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = d.open(t)
		cas, err := s.CAs(ctx)
		if err != nil || len(cas) != 1 || !cas[0].Active || string(cas[0].KeyPEM) != "k" || !cas[0].Created.Equal(now) {
			t.Fatalf("CAs = %+v, %v", cas, err)
		}
		c, err := s.Connector(ctx, "c1")
		if err != nil || c.Group != "g" || !c.CertExpires.Equal(now.Add(time.Hour)) || !c.Revoked.IsZero() {
			t.Fatalf("Connector = %+v, %v", c, err)
		}
		toks, err := s.Tokens(ctx)
		if err != nil || len(toks) != 1 || toks[0].Hash != sha256.Sum256([]byte("x")) {
			t.Fatalf("Tokens = %+v, %v", toks, err)
		}
	})
}

func TestCARotationKeepsOneActive(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		now := time.Now()
		for i := range 3 {
			if _, err := s.AddCA(ctx, CA{ID: fmt.Sprint("ca", i), Active: true, Created: now.Add(time.Duration(i) * time.Second)}, false); err != nil {
				t.Fatal(err)
			}
		}
		cas, _ := s.CAs(ctx)
		if len(cas) != 3 || cas[0].Active || cas[1].Active || !cas[2].Active {
			t.Fatalf("CAs after rotation = %+v", cas)
		}
		if n, err := s.RetireCAs(ctx); n != 2 || err != nil {
			t.Fatalf("RetireCAs = %d, %v", n, err)
		}
		cas, _ = s.CAs(ctx)
		if len(cas) != 1 || cas[0].ID != "ca2" {
			t.Fatalf("CAs after retire = %+v", cas)
		}
	})
}

// TestEnrollConnectorSpendsToken: each enrollment spends one use; used up,
// expired, unknown and deleted tokens are refused and record nothing.
func TestEnrollConnectorSpendsToken(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		now := time.Unix(1700000000, 0)
		n := 0
		use := func(h [32]byte, at time.Time) (Token, error) {
			n++
			return s.EnrollConnector(ctx, h, at, Connector{ID: fmt.Sprint("c", n), Group: "g", Enrolled: at})
		}
		mk := func(id string, uses int, expires time.Time) [32]byte {
			h := sha256.Sum256([]byte(id))
			if err := s.CreateToken(ctx, Token{ID: id, Hash: h, Group: "g", MaxUses: uses, Expires: expires, Created: now}); err != nil {
				t.Fatal(err)
			}
			return h
		}
		once := mk("once", 1, time.Time{})
		if tok, err := use(once, now); err != nil || tok.Group != "g" || tok.Used != 1 {
			t.Fatalf("first use = %+v, %v", tok, err)
		}
		if _, err := use(once, now); !errors.Is(err, ErrTokenUsedUp) {
			t.Fatalf("second use = %v, want ErrTokenUsedUp", err)
		}
		exp := mk("exp", 0, now.Add(time.Hour))
		if _, err := use(exp, now.Add(time.Hour)); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("expired use = %v, want ErrTokenExpired", err)
		}
		if _, err := use(sha256.Sum256([]byte("nope")), now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown = %v, want ErrNotFound", err)
		}
		multi := mk("multi", 0, time.Time{})
		for range 5 {
			if _, err := use(multi, now); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteToken(ctx, "multi"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteToken(ctx, "multi"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete twice = %v", err)
		}
		if _, err := use(multi, now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted token = %v, want ErrNotFound", err)
		}
	})
}

// TestEnrollConnectorFailsWhole: when the connector cannot be recorded
// (here its ID is taken), the token's use is not spent either: the spend
// and the insert are one transaction.
func TestEnrollConnectorFailsWhole(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		h := sha256.Sum256([]byte("once"))
		if err := s.CreateToken(ctx, Token{ID: "once", Hash: h, Group: "g", MaxUses: 1, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddConnector(ctx, Connector{ID: "taken", Group: "g"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.EnrollConnector(ctx, h, time.Now(), Connector{ID: "taken", Group: "g"}); err == nil || isTokenErr(err) {
			t.Fatalf("EnrollConnector with a taken ID = %v, want the insert's error", err)
		}
		if toks, _ := s.Tokens(ctx); len(toks) != 1 || toks[0].Used != 0 {
			t.Fatalf("the failed enrollment spent the token: %+v", toks)
		}
		if _, err := s.EnrollConnector(ctx, h, time.Now(), Connector{ID: "c2", Group: "g"}); err != nil {
			t.Fatalf("the retry: %v", err)
		}
	})
}

// TestEnrollConnectorRace: many enrollments race for a single-use token, from two
// store handles on one database (as two processes or replicas would); exactly
// one wins.
func TestEnrollConnectorRace(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		a, b := d.open(t), d.open(t) // two processes, or two replicas
		h := sha256.Sum256([]byte("single"))
		if err := a.CreateToken(ctx, Token{ID: "s", Hash: h, Group: "g", MaxUses: 1, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		wins, usedUp := 0, 0
		alternate(16, a, b, func(i int, s *DB) {
			_, err := s.EnrollConnector(ctx, h, time.Now(), Connector{ID: fmt.Sprint("c", i), Group: "g"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrTokenUsedUp):
				usedUp++
			default:
				t.Errorf("EnrollConnector: %v", err)
			}
		})
		if wins != 1 || usedUp != 15 {
			t.Fatalf("%d wins, %d used up; want 1 and 15", wins, usedUp)
		}
		if list, err := a.Connectors(ctx); err != nil || len(list) != 1 {
			t.Fatalf("Connectors = %+v, %v; want the winner's alone", list, err)
		}
	})
}

// TestEnrollConnectorAllOrNothing: when the connector cannot be recorded
// the token keeps its use; CheckToken never spends one.
func TestEnrollConnectorAllOrNothing(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		now := time.Unix(1700000000, 0)
		h := sha256.Sum256([]byte("once"))
		if err := s.CreateToken(ctx, Token{ID: "once", Hash: h, Group: "g", MaxUses: 1, Created: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddConnector(ctx, Connector{ID: "taken", Group: "g"}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if tok, err := s.CheckToken(ctx, h, now); err != nil || tok.Used != 0 || tok.Group != "g" {
				t.Fatalf("CheckToken = %+v, %v", tok, err)
			}
		}
		if _, err := s.EnrollConnector(ctx, h, now, Connector{ID: "taken", Group: "g"}); err == nil {
			t.Fatal("a second connector with the same id was recorded")
		}
		if toks, _ := s.Tokens(ctx); len(toks) != 1 || toks[0].Used != 0 {
			t.Fatalf("the failed enrollment spent the token: %+v", toks)
		}
		if tok, err := s.EnrollConnector(ctx, h, now, Connector{ID: "new", Group: "g"}); err != nil || tok.Used != 1 {
			t.Fatalf("enroll = %+v, %v", tok, err)
		}
		if _, err := s.CheckToken(ctx, h, now); !errors.Is(err, ErrTokenUsedUp) {
			t.Fatalf("CheckToken after the use = %v, want ErrTokenUsedUp", err)
		}
	})
}

func TestRevokeAndRenew(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s, now := withConnector(t, d, "")
		c, err := s.RenewConnector(ctx, "c1", "02", now.Add(time.Hour), "v2", "linux/amd64")
		if err != nil || c.CertSerial != "02" || c.Version != "v2" {
			t.Fatalf("renew = %+v, %v", c, err)
		}
		if c, err = s.RevokeConnector(ctx, "c1", now); err != nil || !c.Revoked.Equal(now) {
			t.Fatalf("revoke = %+v, %v", c, err)
		}
		if c, _ = s.RevokeConnector(ctx, "c1", now.Add(time.Hour)); !c.Revoked.Equal(now) {
			t.Fatalf("second revoke moved the time to %v", c.Revoked)
		}
		if c, _ = s.RenewConnector(ctx, "c1", "03", now.Add(2*time.Hour), "v3", ""); c.CertSerial != "02" {
			t.Fatalf("a revoked connector was renewed: %+v", c)
		}
		if _, err := s.RevokeConnector(ctx, "nope", now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoke unknown = %v", err)
		}
		list, err := s.Connectors(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("Connectors = %+v, %v", list, err)
		}
	})
}

func TestMemoryStore(t *testing.T) {
	s, err := OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// oldSchema writes into d a database of schema version, as a build of
// that version left it, then runs rows.
func oldSchema(t *testing.T, d testDB, version int, rows ...string) {
	t.Helper()
	db := d.raw(t)
	qs := append([]string{`CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		fmt.Sprintf(`INSERT INTO schema_version (version) VALUES (%d)`, version)}, migrations[:version]...)
	for _, q := range append(qs, rows...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
}

// TestMigrateSchema1: a database written by a build with schema version 1
// (no cert_in_use) opens with its connectors intact, each with its
// certificate not yet in use, so nothing is retired by the upgrade.
func TestMigrateSchema1(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		oldSchema(t, d, 1,
			`INSERT INTO connectors (id, name, group_name, version, platform, enrolled_at, cert_serial, cert_expires, revoked_at)
				VALUES ('c1', 'n', 'g', 'v1', 'linux/amd64', 1, '0a', 2, 0)`)
		s := d.open(t)
		c, err := s.Connector(ctx, "c1")
		if err != nil || c.Name != "n" || c.CertSerial != "0a" || c.CertInUse || c.CertExpires.UnixNano() != 2 {
			t.Fatalf("Connector after the migration = %+v, %v", c, err)
		}
		if ok, err := s.CertInUse(ctx, "c1", "0a", time.Time{}); !ok || err != nil {
			t.Fatalf("CertInUse = %v, %v", ok, err)
		}
	})
}

// TestCertInUse: recording the newest certificate in use reports true
// once; an older serial records nothing; a renewal starts over.
func TestCertInUse(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s, now := withConnector(t, d, "01")
		for i, tc := range []struct {
			serial string
			want   bool
		}{{"01", true}, {"01", false}, {"00", false}} {
			if ok, err := s.CertInUse(ctx, "c1", tc.serial, now); ok != tc.want || err != nil {
				t.Fatalf("%d: CertInUse(%s) = %v, %v; want %v", i, tc.serial, ok, err, tc.want)
			}
		}
		if c, _ := s.Connector(ctx, "c1"); !c.CertInUse {
			t.Fatalf("not recorded: %+v", c)
		}
		c, err := s.RenewConnector(ctx, "c1", "02", now.Add(time.Hour), "v2", "")
		if err != nil || c.CertInUse || c.CertSerial != "02" || !c.CertIssued.Equal(now) {
			t.Fatalf("after renewal: %+v, %v; want the issue time of 01 kept", c, err)
		}
		if ok, _ := s.CertInUse(ctx, "c1", "01", now); ok {
			t.Fatal("the replaced certificate was recorded in use")
		}
		if ok, _ := s.CertInUse(ctx, "c1", "02", now.Add(time.Minute)); !ok {
			t.Fatal("the new certificate was not recorded in use")
		}
		if c, _ := s.Connector(ctx, "c1"); !c.CertIssued.Equal(now.Add(time.Minute)) {
			t.Fatalf("issued not recorded: %+v", c)
		}
		if ok, err := s.CertInUse(ctx, "nope", "02", now); ok || err != nil {
			t.Fatalf("unknown connector: %v, %v", ok, err)
		}
	})
}

// TestMigrateSchema2: a database of schema version 2 (cert_in_use without
// cert_issued) opens with each certificate not yet in use again, since
// the time its certificate was issued is unknown; the agent's next
// session records both.
func TestMigrateSchema2(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		oldSchema(t, d, 2,
			`INSERT INTO connectors (id, name, group_name, version, platform, enrolled_at, cert_serial, cert_expires, cert_in_use, revoked_at)
				VALUES ('c1', 'n', 'g', 'v1', 'linux/amd64', 1, '0a', 2, 1, 0)`)
		s := d.open(t)
		c, err := s.Connector(ctx, "c1")
		if err != nil || c.CertSerial != "0a" || c.CertInUse || !c.CertIssued.IsZero() {
			t.Fatalf("Connector after the migration = %+v, %v", c, err)
		}
	})
}

// TestAdoptCert: a newer certificate replaces the recorded one only while
// that is still recorded and the connector is not revoked.
func TestAdoptCert(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s, now := withConnector(t, d, "01")
		if ok, err := s.AdoptCert(ctx, "c1", "00", "02", now, now.Add(time.Hour)); ok || err != nil {
			t.Fatalf("AdoptCert in place of a serial not recorded = %v, %v", ok, err)
		}
		if ok, err := s.AdoptCert(ctx, "c1", "01", "02", now, now.Add(time.Hour)); !ok || err != nil {
			t.Fatalf("AdoptCert = %v, %v", ok, err)
		}
		c, err := s.Connector(ctx, "c1")
		if err != nil || c.CertSerial != "02" || !c.CertInUse || !c.CertIssued.Equal(now) || !c.CertExpires.Equal(now.Add(time.Hour)) {
			t.Fatalf("after AdoptCert: %+v, %v", c, err)
		}
		if _, err := s.RevokeConnector(ctx, "c1", now); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.AdoptCert(ctx, "c1", "02", "03", now, now); ok || err != nil {
			t.Fatalf("AdoptCert of a revoked connector = %v, %v", ok, err)
		}
	})
}

// TestSignOuts: signed-out sessions are kept until they end, listed while
// they last, and deleted once past their end.
func TestSignOuts(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		now := time.Unix(1700000000, 0).UTC()
		if err := s.AddSignOut(ctx, "a", now.Add(time.Hour), now); err != nil {
			t.Fatal(err)
		}
		if err := s.AddSignOut(ctx, "b", now.Add(2*time.Hour), now); err != nil {
			t.Fatal(err)
		}
		if err := s.AddSignOut(ctx, "a", now.Add(time.Hour), now); err != nil { // twice: once
			t.Fatal(err)
		}
		got, err := s.SignOuts(ctx, now)
		if err != nil || len(got) != 2 || !got["a"].Equal(now.Add(time.Hour)) || !got["b"].Equal(now.Add(2*time.Hour)) {
			t.Fatalf("SignOuts = %v, %v", got, err)
		}
		later := now.Add(90 * time.Minute) // a has ended
		if got, err := s.SignOuts(ctx, later); err != nil || len(got) != 1 || got["b"].IsZero() {
			t.Fatalf("SignOuts later = %v, %v", got, err)
		}
		if err := s.AddSignOut(ctx, "c", later.Add(time.Hour), later); err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM signed_out`).Scan(&rows); err != nil || rows != 2 {
			t.Fatalf("%d rows after an add past a's end (want b and c), %v", rows, err)
		}
	})
}

// TestReplicas: replicas sharing a store count each other by their
// heartbeats; one not seen since the window drops out of the count, one
// that stops is removed, and old rows are pruned.
func TestReplicas(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		a, b := d.open(t), d.open(t)
		ctx := context.Background()
		t0 := time.Unix(1_700_000_000, 0)
		if n, err := a.Replicas(ctx, t0); err != nil || n != 0 {
			t.Fatalf("empty store: %d replicas (%v), want 0", n, err)
		}
		if err := a.Heartbeat(ctx, "a", t0, t0.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := b.Heartbeat(ctx, "b", t0.Add(time.Second), t0.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*DB{a, b} {
			if n, err := s.Replicas(ctx, t0.Add(-time.Minute)); err != nil || n != 2 {
				t.Fatalf("%d replicas (%v), want 2", n, err)
			}
		}
		// a again, later: b's heartbeat is too old to count.
		if err := a.Heartbeat(ctx, "a", t0.Add(time.Hour), t0.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Replicas(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
			t.Fatalf("after b's heartbeat is stale: %d replicas (%v), want 1", n, err)
		}
		// A heartbeat that prunes deletes b's row for good.
		if err := a.Heartbeat(ctx, "a", t0.Add(time.Hour), t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Replicas(ctx, t0.Add(-time.Hour)); err != nil || n != 1 {
			t.Fatalf("after pruning: %d replicas (%v), want 1", n, err)
		}
		if err := a.RemoveReplica(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Replicas(ctx, t0.Add(-time.Hour)); err != nil || n != 0 {
			t.Fatalf("after a stopped: %d replicas (%v), want 0", n, err)
		}
	})
}

// withConnector opens d with one connector, c1 of group g, enrolled at the
// returned time with certificate serial (empty: none recorded).
func withConnector(t *testing.T, d testDB, serial string) (*DB, time.Time) {
	t.Helper()
	s := d.open(t)
	now := time.Unix(1700000000, 0).UTC()
	if err := s.AddConnector(context.Background(), Connector{ID: "c1", Group: "g", Enrolled: now, CertSerial: serial}); err != nil {
		t.Fatal(err)
	}
	return s, now
}

// TestConfigTokenUses: EnrollConfigConnector counts each use of a gateway
// config token with the connector's record, both or neither, and
// ConfigTokenUses returns the counts by hash; a new store has none.
func TestConfigTokenUses(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		a, b := sha256.Sum256([]byte("config-a")), sha256.Sum256([]byte("config-b"))
		if uses, err := s.ConfigTokenUses(ctx); err != nil || len(uses) != 0 {
			t.Fatalf("ConfigTokenUses of a new store = %v, %v", uses, err)
		}
		for i, h := range [][32]byte{a, a, b} {
			if err := s.EnrollConfigConnector(ctx, h, Connector{ID: fmt.Sprint("c", i), Group: "g"}); err != nil {
				t.Fatal(err)
			}
		}
		// A connector that cannot be recorded (its ID is taken) is not counted.
		if err := s.EnrollConfigConnector(ctx, b, Connector{ID: "c0", Group: "g"}); err == nil {
			t.Fatal("EnrollConfigConnector with a taken ID succeeded")
		}
		uses, err := s.ConfigTokenUses(ctx)
		if err != nil || len(uses) != 2 || uses[a] != 2 || uses[b] != 1 {
			t.Fatalf("ConfigTokenUses = %v, %v; want a: 2, b: 1", uses, err)
		}
		if list, err := s.Connectors(ctx); err != nil || len(list) != 3 {
			t.Fatalf("Connectors = %+v, %v", list, err)
		}
	})
}

// TestNamedConnectors: NamedConnectors finds the unrevoked connectors of
// one group with one name, oldest first, and no others (another group,
// another name, a revoked one).
func TestNamedConnectors(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		for i, c := range []Connector{
			{ID: "c-new", Name: "web", Group: "g", Enrolled: t0.Add(2 * time.Hour)},
			{ID: "c-old", Name: "web", Group: "g", Enrolled: t0},
			{ID: "c-revoked", Name: "web", Group: "g", Enrolled: t0.Add(time.Hour), Revoked: t0.Add(time.Hour)},
			{ID: "c-other-group", Name: "web", Group: "h", Enrolled: t0},
			{ID: "c-other-name", Name: "web2", Group: "g", Enrolled: t0},
		} {
			if err := s.AddConnector(ctx, c); err != nil {
				t.Fatalf("connector %d: %v", i, err)
			}
		}
		list, err := s.NamedConnectors(ctx, "g", "web")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range list {
			ids = append(ids, c.ID)
		}
		if fmt.Sprint(ids) != "[c-old c-new]" {
			t.Fatalf("NamedConnectors(g, web) = %v, want [c-old c-new]", ids)
		}
		if list, err := s.NamedConnectors(ctx, "g", "nobody"); err != nil || len(list) != 0 {
			t.Fatalf("NamedConnectors(g, nobody) = %+v, %v", list, err)
		}
	})
}
