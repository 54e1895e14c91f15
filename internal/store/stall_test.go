package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pgtest"
	"github.com/sallyport/sallyport/internal/shortskip"
)

// TestStalledCalls: Stalled says so while a call has waited SlowCall, and
// for memory after one that took that long; not for quick calls, nor once
// memory has passed.
func TestStalledCalls(t *testing.T) {
	s := open(t, t.TempDir())
	const memory = time.Minute
	if err := s.Stalled(time.Now(), memory); err != nil {
		t.Fatalf("a new store: %v", err)
	}
	end := s.calls.begin()
	now := time.Now()
	if err := s.Stalled(now, memory); err != nil {
		t.Fatalf("a call just begun: %v", err)
	}
	err := s.Stalled(now.Add(SlowCall+time.Second), memory)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "has waited 4s") {
		t.Fatalf("a call under way for 4s: %v; want ErrStalled saying it has waited 4s", err)
	}
	end()
	if err := s.Stalled(time.Now(), memory); err != nil {
		t.Fatalf("after a quick call: %v", err)
	}
	// A slow call, as the store records it.
	s.calls.mu.Lock()
	s.calls.slowEnd, s.calls.slowTook = now, 5*time.Second
	s.calls.mu.Unlock()
	err = s.Stalled(now.Add(10*time.Second), memory)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "took 5s, 10s ago") {
		t.Fatalf("10s after a call of 5s: %v; want ErrStalled saying so", err)
	}
	if err := s.Stalled(now.Add(memory), memory); err != nil {
		t.Fatalf("memory after a slow call: %v", err)
	}
}

// TestStalledByLock: a replica heartbeat waiting for a lock that another
// connection holds (PostgreSQL: LOCK TABLE in an open transaction; SQLite:
// another process's write transaction) leaves the store stalled, though
// Ping answers.
func TestStalledByLock(t *testing.T) {
	shortskip.Long(t, "waits SlowCall for a lock")
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		lockStore(t, d, "replicas")
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("ping with a table locked: %v", err)
		}
		hctx, cancel := context.WithTimeout(ctx, SlowCall+500*time.Millisecond)
		defer cancel()
		now := time.Now()
		if err := s.Heartbeat(hctx, "r1", now, now.Add(-time.Minute)); err == nil {
			t.Fatal("the heartbeat went through a held lock")
		}
		err := s.Stalled(time.Now(), time.Minute)
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "a call to the "+s.d.name+" database took") {
			t.Fatalf("after a heartbeat that waited for a lock: %v; want ErrStalled saying a call took long", err)
		}
	})
}

// TestStalledByConnectorsLock: on PostgreSQL a lock on the connectors
// table alone (the heartbeat goes through) stalls the reads of a session
// start: the store is stalled once one has waited SlowCall.
func TestStalledByConnectorsLock(t *testing.T) {
	shortskip.Long(t, "waits SlowCall for a lock")
	ctx := context.Background()
	d := testDB{dsn: pgtest.DSN(t)}
	s := d.open(t)
	if err := s.AddConnector(ctx, Connector{ID: "c1", Name: "edge", Group: "g", Enrolled: time.Now()}); err != nil {
		t.Fatal(err)
	}
	lockStore(t, d, "connectors")
	now := time.Now()
	if err := s.Heartbeat(ctx, "r1", now, now.Add(-time.Minute)); err != nil {
		t.Fatalf("heartbeat with the connectors locked: %v", err)
	}
	if err := s.Stalled(time.Now(), time.Minute); err != nil {
		t.Fatalf("after a heartbeat that went through: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, SlowCall+500*time.Millisecond)
	defer cancel()
	if _, err := s.Connector(cctx, "c1"); err == nil {
		t.Fatal("the connector was read through the lock")
	}
	if err := s.Stalled(time.Now(), time.Minute); !errors.Is(err, ErrStalled) {
		t.Fatalf("after a connector read that waited for the lock: %v; want ErrStalled", err)
	}
}

// lockStore holds, until t ends, a lock on d that blocks the gateway's
// writes: on PostgreSQL an ACCESS EXCLUSIVE lock on table (its reads too),
// on SQLite a write transaction (BEGIN IMMEDIATE) on another connection,
// as another process would.
func lockStore(t *testing.T, d testDB, table string) {
	t.Helper()
	ctx := context.Background()
	conn, err := d.raw(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	begin, lock := "BEGIN", "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"
	if d.dsn == "" {
		begin, lock = "BEGIN IMMEDIATE", "DELETE FROM replicas WHERE id = 'none'"
	}
	if _, err := conn.ExecContext(ctx, begin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.ExecContext(context.Background(), "ROLLBACK") }) //nolint:errcheck // the test's end
	if _, err := conn.ExecContext(ctx, lock); err != nil {
		t.Fatal(err)
	}
}

// TestStalledByRefusedHeartbeat: a database that answers but refuses the
// replica heartbeat's write (a full disk, here a trigger failing as one)
// leaves the store stalled until a heartbeat goes through.
func TestStalledByRefusedHeartbeat(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		raw := d.raw(t)
		refuse := []string{`CREATE TRIGGER refuse BEFORE INSERT ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`}
		if d.dsn != "" {
			refuse = []string{
				`CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full (test)' USING ERRCODE = '53100'; END $$ LANGUAGE plpgsql`,
				`CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON replicas FOR EACH ROW EXECUTE FUNCTION refuse()`,
			}
		}
		for _, q := range refuse {
			if _, err := raw.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		err := s.Heartbeat(ctx, "r1", now, now.Add(-time.Minute))
		if err == nil || Unavailable(err) {
			t.Fatalf("heartbeat on a database refusing writes: %v; want a refusal", err)
		}
		err = s.Stalled(time.Now(), time.Minute)
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "refused the replica heartbeat") ||
			!strings.Contains(err.Error(), "disk full (test)") {
			t.Fatalf("after a refused heartbeat: %v; want ErrStalled saying so", err)
		}
		if _, err := raw.ExecContext(ctx, `DROP TRIGGER refuse`+map[bool]string{true: ` ON replicas`}[d.dsn != ""]); err != nil {
			t.Fatal(err)
		}
		if err := s.Heartbeat(ctx, "r1", now, now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.Stalled(time.Now(), time.Minute); err != nil {
			t.Fatalf("after a heartbeat that went through: %v", err)
		}
	})
}

// waitCallUnderWay returns once a call of s is under way (Stalled sees it
// SlowCall later).
func waitCallUnderWay(t *testing.T, s *DB) {
	t.Helper()
	for s.Stalled(time.Now().Add(SlowCall), 0) == nil {
		time.Sleep(time.Millisecond)
	}
}

// TestStalledCanceledHeartbeat: a replica heartbeat cancelled while it
// waits for a lock (the gateway stops) was not refused by the database:
// the store is not stalled after it, nor an hour later. (Before, the
// cancellation was recorded as a refused heartbeat, and the store read
// stalled until the next heartbeat, which a stopped gateway never makes.)
func TestStalledCanceledHeartbeat(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		s := d.open(t)
		lockStore(t, d, "replicas")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		now := time.Now()
		go func() { done <- s.Heartbeat(ctx, "r1", now, now.Add(-time.Minute)) }()
		waitCallUnderWay(t, s)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("heartbeat cancelled while it waits for a lock: %v; want context.Canceled", err)
		}
		if err := s.Stalled(time.Now(), time.Minute); err != nil {
			t.Errorf("right after a cancelled heartbeat: %v; want not stalled", err)
		}
		if err := s.Stalled(time.Now().Add(time.Hour), time.Minute); err != nil {
			t.Errorf("an hour after a cancelled heartbeat: %v; want not stalled", err)
		}
	})
}

// TestStalledNotByOutage: a PostgreSQL server that no longer answers (a
// black hole) times the replica heartbeat out after SlowCall and more,
// and the ping fails: that is an outage, which /readyz reports, not a
// stall. Once the ping has failed, Stalled forgets the calls that waited
// for the outage, ended or under way, so that their timeouts do not read
// as a stall when the database answers again.
func TestStalledNotByOutage(t *testing.T) {
	shortskip.Long(t, "waits SlowCall for a database that does not answer")
	dsn := pgtest.DSN(t)
	_, server := pgtest.Via(t, dsn, "127.0.0.1:1")
	relay := pgtest.StartHoleRelay(t, server)
	via, _ := pgtest.Via(t, dsn, relay.Addr())
	s, err := OpenPostgres(context.Background(), via)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	relay.Hole()

	ctx, cancel := context.WithTimeout(context.Background(), SlowCall+time.Second)
	now := time.Now()
	err = s.Heartbeat(ctx, "r1", now, now.Add(-time.Minute))
	cancel()
	if !Unavailable(err) {
		t.Fatalf("heartbeat through a black hole: %v; want a timeout", err)
	}
	if err := s.Stalled(time.Now(), time.Minute); !errors.Is(err, ErrStalled) {
		t.Fatalf("before any ping, after a heartbeat that waited %s: %v; want ErrStalled (a lock wait looks the same)", SlowCall+time.Second, err)
	}
	// A call under way through the hole when the ping fails.
	callCtx, callCancel := context.WithCancel(context.Background())
	defer callCancel()
	called := make(chan error, 1)
	go func() {
		_, err := s.Connector(callCtx, "c1")
		called <- err
	}()
	waitCallUnderWay(t, s)

	pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
	perr := s.Ping(pctx)
	pcancel()
	if perr == nil {
		t.Fatal("ping through a black hole answered")
	}
	if err := s.Stalled(time.Now().Add(SlowCall), time.Minute); err != nil {
		t.Errorf("after the ping failed: %v; want not stalled: the calls waited for an outage", err)
	}
	callCancel()
	<-called
	if err := s.Stalled(time.Now(), time.Minute); err != nil {
		t.Errorf("after the call under way ended: %v; want not stalled", err)
	}
}

// TestStalledPoolFullOfLockWaits: on PostgreSQL, when every pooled
// connection of the store is held by a call waiting for a lock, Ping still
// answers (it has a connection of its own), and Stalled goes on counting
// the calls that wait for the lock.
func TestStalledPoolFullOfLockWaits(t *testing.T) {
	d := testDB{dsn: pgtest.DSN(t)}
	s := d.open(t)
	lockStore(t, d, "replicas")
	ctx, cancel := context.WithCancel(context.Background())
	max := s.db.Stats().MaxOpenConnections
	done := make(chan error, max)
	for i := range max {
		go func() {
			now := time.Now()
			done <- s.Heartbeat(ctx, fmt.Sprintf("r%d", i), now, now.Add(-time.Minute))
		}()
	}
	defer func() {
		cancel()
		for range max {
			<-done
		}
	}()
	for s.db.Stats().InUse < max {
		time.Sleep(time.Millisecond)
	}
	// Ping has a connection of its own: the database answers, so /readyz
	// stays 200 (it timed out waiting for a pooled connection before).
	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := s.Ping(pctx)
	pcancel()
	if err != nil {
		t.Fatalf("ping with every pooled connection held by calls waiting for a lock: %v; want an answer", err)
	}
	if err := s.Stalled(time.Now().Add(SlowCall), time.Minute); !errors.Is(err, ErrStalled) {
		t.Fatalf("calls waiting for a lock, after a ping that answered: %v; want ErrStalled", err)
	}
}
