package gateway

import (
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/pgtest"
	"github.com/sallyport/sallyport/internal/shortskip"
	"github.com/sallyport/sallyport/internal/store"
)

// stallRig is a gateway on a real store, SQLite in a data_dir of its own
// or a PostgreSQL schema of its own, with a second handle on the same
// database, as another process or session would hold.
type stallRig struct {
	db   string // "sqlite" or "postgres"
	g    *Gateway
	st   *store.DB
	raw  *sql.DB
	logs *observer.ObservedLogs
	// logged: want has shown a stall warning in the test's log.
	logged bool
}

func newStallRig(t *testing.T, db string) *stallRig {
	t.Helper()
	ctx := context.Background()
	must := mustStore(t)
	r := &stallRig{db: db}
	var err error
	if db == "sqlite" {
		dir := t.TempDir()
		r.st = must(store.Open(ctx, dir))
		r.raw, err = sql.Open("sqlite", "file:"+filepath.Join(dir, store.FileName))
	} else {
		dsn := pgtest.DSN(t)
		r.st = must(store.OpenPostgres(ctx, dsn))
		r.raw, err = sql.Open("pgx", dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.raw.Close() })
	core, logs := observer.New(zap.InfoLevel)
	r.logs = logs
	r.g, err = New(Config{TunnelTLS: &tls.Config{}, Store: r.st, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	r.g.serving.Store(true)
	t.Cleanup(r.g.stopCancel) // the store's watch stops poking r.g before the store closes
	return r
}

// gauge is sallyport_gateway_store_stalled, scraped now.
func (r *stallRig) gauge(t *testing.T) float64 {
	t.Helper()
	mfs, err := r.g.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sallyport_gateway_store_stalled" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no sallyport_gateway_store_stalled in the gateway's metrics")
	return 0
}

// readyz probes /readyz.
func (r *stallRig) readyz() (int, string) {
	w := httptest.NewRecorder()
	r.g.readyz(w, httptest.NewRequest("GET", "/readyz", nil))
	return w.Code, strings.TrimSpace(w.Body.String())
}

// want checks the gauge, /readyz (200 whatever the stall), and the log: the
// stall warnings so far, each naming why, and the lines saying the store's
// calls go through again.
func (r *stallRig) want(t *testing.T, when string, gauge float64, warnings int, why string, cleared int) {
	t.Helper()
	if got := r.gauge(t); got != gauge {
		t.Errorf("%s: sallyport_gateway_store_stalled %v, want %v", when, got, gauge)
	}
	if code, body := r.readyz(); code != http.StatusOK || body != "ready" {
		t.Errorf("%s: /readyz %d %q, want 200 ready: a stalled store does not make a replica unready", when, code, body)
	}
	ws := r.logs.FilterMessageSnippet("the store stalls").AllUntimed()
	if len(ws) != warnings {
		t.Errorf("%s: %d 'the store stalls' lines, want %d", when, len(ws), warnings)
	}
	for i, w := range ws {
		got, _ := w.ContextMap()["error"].(string)
		switch {
		case w.Level != zap.WarnLevel || !strings.Contains(got, why):
			t.Errorf("%s: %s %q error %q; want a warning saying %q", when, w.Level, w.Message, got, why)
		case i == len(ws)-1 && !r.logged:
			t.Logf("%s: %s %s: %s", when, w.Level, w.Message, got)
			r.logged = true
		}
	}
	if n := r.logs.FilterMessage("the store's calls go through again").Len(); n != cleared {
		t.Errorf("%s: %d 'the store's calls go through again' lines, want %d", when, n, cleared)
	}
}

// TestStoreStallLocked: a database where another connection holds a lock
// that blocks the gateway's writes (SQLite: BEGIN IMMEDIATE of another
// process; PostgreSQL: LOCK TABLE replicas IN ACCESS EXCLUSIVE MODE in an
// open transaction) still answers a ping, but the replica heartbeat waits
// for it until its bound: sallyport_gateway_store_stalled turns 1, the
// gateway warns once, naming the wait, while the heartbeat still waits,
// and /readyz stays 200. Once the
// lock is gone and a sweep's memory has passed, the gateway says the
// store's calls go through again. Before, nothing said so: /readyz pinged
// alone and answered 200 while heartbeats and agent registrations hung.
func TestStoreStallLocked(t *testing.T) {
	shortskip.Long(t, "waits store.SlowCall for a lock")
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			r := newStallRig(t, db)
			if err := r.g.heartbeat(); err != nil {
				t.Fatal(err)
			}
			r.want(t, "before the lock", 0, 0, "", 0)

			conn, err := r.raw.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			lock := []string{"BEGIN IMMEDIATE", "DELETE FROM replicas WHERE id = 'none'"}
			if db == "postgres" {
				lock = []string{"BEGIN", "LOCK TABLE replicas IN ACCESS EXCLUSIVE MODE"}
			}
			for _, q := range lock {
				if _, err := conn.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			// The sweep's heartbeat, cut by the gateway's stop context a
			// little after store.SlowCall rather than at trustTimeout, to
			// keep the test short.
			stopCtx := r.g.stopCtx
			cut, cancel := context.WithTimeout(stopCtx, store.SlowCall+500*time.Millisecond)
			r.g.stopCtx = cut
			err = r.g.heartbeat()
			cancel()
			r.g.stopCtx = stopCtx
			if err == nil {
				t.Fatal("the heartbeat went through the lock")
			}
			// Logged while the heartbeat waits, once it has waited
			// store.SlowCall (the store's watch), not after it.
			why := "store stalled: a call to the " + map[string]string{"sqlite": "SQLite", "postgres": "PostgreSQL"}[db] + " database has waited"
			r.want(t, "after a heartbeat that waited for the lock", 1, 1, why, 0)
			r.g.checkStoreStall(time.Now()) // the next sweep's check, the lock still held
			r.want(t, "at the next check", 1, 1, why, 0)

			if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
				t.Fatal(err)
			}
			if err := r.g.heartbeat(); err != nil {
				t.Fatal(err)
			}
			// The slow call is remembered for stallMemory.
			r.want(t, "after the lock, within stallMemory", 1, 1, why, 0)
			r.g.checkStoreStall(time.Now().Add(r.g.stallMemory()))
			if n := r.logs.FilterMessage("the store's calls go through again").Len(); n != 1 {
				t.Errorf("%d 'the store's calls go through again' lines once stallMemory has passed, want 1", n)
			}
		})
	}
}

// TestStoreStallRefusedHeartbeat: a database that answers a ping but
// refuses the replica heartbeat's write (a full disk; here a trigger
// failing as one) turns sallyport_gateway_store_stalled to 1 with a
// warning naming the refusal, until a heartbeat goes through: the gauge
// is 0 again and the gateway says so. /readyz answers 200 throughout.
func TestStoreStallRefusedHeartbeat(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			r := newStallRig(t, db)
			refuse := []string{`CREATE TRIGGER refuse BEFORE INSERT ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`}
			allow := `DROP TRIGGER refuse`
			if db == "postgres" {
				refuse = []string{
					`CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full (test)' USING ERRCODE = '53100'; END $$ LANGUAGE plpgsql`,
					`CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON replicas FOR EACH ROW EXECUTE FUNCTION refuse()`,
				}
				allow = `DROP TRIGGER refuse ON replicas`
			}
			for _, q := range refuse {
				if _, err := r.raw.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.g.heartbeat(); err == nil {
				t.Fatal("the heartbeat went through the trigger")
			}
			why := "refused the replica heartbeat"
			r.want(t, "after a refused heartbeat", 1, 1, why, 0)
			if err := r.g.heartbeat(); err == nil {
				t.Fatal("the heartbeat went through the trigger")
			}
			r.want(t, "after a second refused heartbeat", 1, 1, why, 0)
			if _, err := r.raw.ExecContext(ctx, allow); err != nil {
				t.Fatal(err)
			}
			if err := r.g.heartbeat(); err != nil {
				t.Fatal(err)
			}
			r.want(t, "after a heartbeat that went through", 0, 1, why, 1)
		})
	}
}

// TestReadyzWhileStoreStalled: /readyz answers 200 while the store is
// stalled (here: it refused the replica heartbeat, a write), as long as
// the database answers a ping. A stall hits every replica on the
// database at once, and a load balancer taking them all out would turn
// it into an outage for users, whose requests do not wait for the
// database. (A first version answered 503 "store stalled: ...".)
func TestReadyzWhileStoreStalled(t *testing.T) {
	ctx := context.Background()
	r := newStallRig(t, "sqlite")
	if _, err := r.raw.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE INSERT ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`); err != nil {
		t.Fatal(err)
	}
	if err := r.g.heartbeat(); err == nil {
		t.Fatal("the heartbeat went through the trigger")
	}
	if stalled, why := r.g.storeStalled(time.Now()); !stalled {
		t.Fatalf("the store is not stalled after a refused heartbeat (%v)", why)
	}
	for range 2 {
		if code, body := r.readyz(); code != http.StatusOK || body != "ready" {
			t.Fatalf("/readyz with the store stalled: %d %q, want 200 ready", code, body)
		}
	}
	if n := r.logs.FilterMessageSnippet("readiness:").Len(); n != 0 {
		t.Errorf("%d readiness lines with the database answering, want 0", n)
	}
}

// lockSQLite holds the write lock of r's SQLite database on another
// connection (BEGIN IMMEDIATE, as another process would) until unlock.
func (r *stallRig) lockSQLite(t *testing.T) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := r.raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"BEGIN IMMEDIATE", "DELETE FROM replicas WHERE id = 'none'"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			conn.Close()
			t.Fatal(err)
		}
	}
	return func() {
		conn.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // closed next
		conn.Close()
	}
}

// waitCallUnderWay returns once a call of r's store is under way.
func (r *stallRig) waitCallUnderWay() {
	for r.st.Stalled(time.Now().Add(store.SlowCall), 0) == nil {
		time.Sleep(time.Millisecond)
	}
}

// TestReadyzWhileSQLiteWriteWaits: on SQLite, while a write of the
// gateway (here its heartbeat) waits for another process's write lock on
// the store's one connection, /readyz answers 200: the database answers,
// the wait is a stall (the gauge's), not an outage. Before, its ping
// waited for that connection and /readyz answered 503 "store unavailable"
// after 2 s.
func TestReadyzWhileSQLiteWriteWaits(t *testing.T) {
	r := newStallRig(t, "sqlite")
	unlock := r.lockSQLite(t)
	defer unlock()
	done := make(chan error, 1)
	go func() { done <- r.g.heartbeat() }()
	r.waitCallUnderWay()
	code, body := r.readyz()
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("heartbeat once the lock is gone: %v", err)
	}
	if code != http.StatusOK || body != "ready" {
		t.Errorf("/readyz while a write waits for another process's lock: %d %q, want 200 ready", code, body)
	}
	if n := r.logs.FilterMessageSnippet("readiness:").Len(); n != 0 {
		t.Errorf("%d readiness lines with the database answering, want 0", n)
	}
}

// TestStoreStallRemoveReplicasRefused: on SQLite, the first heartbeat
// removes the replica rows of earlier runs; a database refusing that
// write (a full disk; here a trigger failing as one) stalls the store as
// a refused heartbeat does: sallyport_gateway_store_stalled is 1 and the
// gateway warns once. Before, the refusal returned before the heartbeat
// and nothing said so: the gauge stayed 0.
func TestStoreStallRemoveReplicasRefused(t *testing.T) {
	ctx := context.Background()
	r := newStallRig(t, "sqlite")
	now := time.Now()
	if err := r.st.Heartbeat(ctx, "killed-1", now, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TRIGGER refuse_del BEFORE DELETE ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`,
		`CREATE TRIGGER refuse_ins BEFORE INSERT ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`,
	} {
		if _, err := r.raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if err := r.g.heartbeat(); err == nil {
			t.Fatalf("heartbeat %d went through the trigger", i)
		}
		r.want(t, fmt.Sprintf("after refused heartbeat %d", i), 1, 1, "refused the replica heartbeat", 0)
	}
}

// TestStoreStallNotByOutage: a PostgreSQL server that no longer answers
// (a black hole: calls time out, a ping too) is down, not stalled: /readyz
// answers 503, sallyport_gateway_store_stalled stays 0 and no "the store
// stalls" line claims the database answers a ping, then or once the
// database answers again (the outage's timeouts are no stall). Before,
// the heartbeat's timeout read as a stall: gauge 1 and that warning.
func TestStoreStallNotByOutage(t *testing.T) {
	shortskip.Long(t, "waits store.SlowCall for a database that does not answer")
	r, relay := newHoleStallRig(t, 0)
	g, logs := r.g, r.logs
	relay.Hole()
	// The sweep's heartbeat, cut a little after store.SlowCall rather
	// than at trustTimeout, to keep the test short.
	stopCtx := g.stopCtx
	cut, cancel := context.WithTimeout(stopCtx, store.SlowCall+500*time.Millisecond)
	g.stopCtx = cut
	err := g.heartbeat()
	cancel()
	g.stopCtx = stopCtx
	if err == nil {
		t.Fatal("the heartbeat went through the black hole")
	}
	if got := r.gauge(t); got != 0 {
		t.Errorf("sallyport_gateway_store_stalled %v with the database not answering, want 0", got)
	}
	for _, e := range logs.FilterMessageSnippet("the store stalls").AllUntimed() {
		t.Errorf("a database that does not answer logged %s %q: %v", e.Level, e.Message, e.ContextMap()["error"])
	}
	if code, body := r.readyz(); code != http.StatusServiceUnavailable || body != "store unavailable" {
		t.Errorf("/readyz with the database not answering: %d %q, want 503 store unavailable", code, body)
	}
	if got := r.gauge(t); got != 0 {
		t.Errorf("sallyport_gateway_store_stalled %v after /readyz, want 0", got)
	}

	// The database answers again: the outage's timeouts are no stall.
	relay.Mend()
	if code, body := r.readyz(); code != http.StatusOK || body != "ready" {
		t.Fatalf("/readyz once the database answers again: %d %q, want 200 ready", code, body)
	}
	if err := g.heartbeat(); err != nil {
		t.Fatalf("heartbeat once the database answers again: %v", err)
	}
	if got := r.gauge(t); got != 0 {
		t.Errorf("sallyport_gateway_store_stalled %v once the database answers again, want 0", got)
	}
	for _, e := range logs.FilterMessageSnippet("the store stalls").AllUntimed() {
		t.Errorf("the database answering again after an outage logged %s %q: %v", e.Level, e.Message, e.ContextMap()["error"])
	}
}

// newHoleStallRig is a stall rig on the test PostgreSQL reached through a
// hole relay (pgtest.HoleRelay: the network to the database can fail), its
// raw session straight to the database, after the gateway's first
// heartbeat. recheck sets the gateway's stallRecheck (0: the default).
func newHoleStallRig(t *testing.T, recheck time.Duration) (*stallRig, *pgtest.HoleRelay) {
	t.Helper()
	dsn := pgtest.DSN(t)
	_, server := pgtest.Via(t, dsn, "127.0.0.1:1")
	relay := pgtest.StartHoleRelay(t, server)
	via, _ := pgtest.Via(t, dsn, relay.Addr())
	st := mustStore(t)(store.OpenPostgres(context.Background(), via))
	raw, err := sql.Open("pgx", dsn) // another session, not through the relay
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	core, logs := observer.New(zap.InfoLevel)
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: st, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	g.stallRecheck = recheck
	g.serving.Store(true)
	t.Cleanup(g.stopCancel) // the store's watch stops poking g before the store closes
	r := &stallRig{db: "postgres", g: g, st: st, raw: raw, logs: logs}
	if err := g.heartbeat(); err != nil {
		t.Fatal(err)
	}
	return r, relay
}
