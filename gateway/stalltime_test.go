package gateway

import (
	"context"
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/shortskip"
	"github.com/sallyport/sallyport/internal/store"
)

// stallLines counts the rig's "the store stalls" warnings and "the store's
// calls go through again" lines.
func (r *stallRig) stallLines() (stalls, cleared int) {
	return r.logs.FilterMessageSnippet("the store stalls").Len(),
		r.logs.FilterMessage("the store's calls go through again").Len()
}

// TestStoreStallLoggedWhileCallWaits: a call of the store waiting for
// another process's write lock (not the heartbeat: a session start's, an
// enrollment's) has the gateway warn "the store stalls" once it has waited
// store.SlowCall, while it still waits. Before, the warning waited for the
// next replica heartbeat, up to a store sweep (1 min) later, though the
// gauge read 1: the call here ended after SQLite's 5 s busy timeout with
// no line.
func TestStoreStallLoggedWhileCallWaits(t *testing.T) {
	shortskip.Long(t, "waits store.SlowCall for a lock")
	r := newStallRig(t, "sqlite")
	if err := r.g.heartbeat(); err != nil { // at start: the gateway watches its store
		t.Fatal(err)
	}
	unlock := r.lockSQLite(t)
	defer unlock()
	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- r.st.RemoveReplica(context.Background(), "none") }()
	for {
		if n, _ := r.stallLines(); n > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the call ended after %s (%v) and no 'the store stalls' line was logged while it waited (gauge %v)",
				time.Since(began).Round(time.Second), err, r.gauge(t))
		case <-time.After(time.Millisecond):
		}
	}
	r.want(t, "while the call waits", 1, 1, "store stalled: a call to the SQLite database has waited ", 0)
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("the call once the lock is gone: %v", err)
	}
}

// TestStoreStallClearsOnTime: once the calls go through again, the gauge
// reads 0 stallMemory after the last slow call ended, and the gateway
// says "the store's calls go through again" then, without waiting for a
// replica heartbeat. Before, the line came at the first heartbeat after
// that, up to a store sweep later (about 130 s after the slow call by
// default): here, with no heartbeat, never.
func TestStoreStallClearsOnTime(t *testing.T) {
	shortskip.Long(t, "waits store.SlowCall for a lock, then stallMemory")
	r := newStallRig(t, "sqlite")
	r.g.cfg.StoreSweep = time.Millisecond // stallMemory: 2 s
	r.g.stallMemoryBound = 2 * time.Second
	if err := r.g.heartbeat(); err != nil {
		t.Fatal(err)
	}
	unlock := r.lockSQLite(t)
	ctx, cancel := context.WithTimeout(context.Background(), store.SlowCall+500*time.Millisecond)
	err := r.st.RemoveReplica(ctx, "none")
	cancel()
	unlock()
	ended := time.Now()
	if err == nil {
		t.Fatal("the call went through the lock")
	}
	r.want(t, "after a call that waited for the lock", 1, 1, "store stalled", 0)
	for {
		if _, n := r.stallLines(); n > 0 {
			break
		}
		if d := time.Since(ended); d > r.g.stallMemory()+10*time.Second {
			t.Fatalf("no 'the store's calls go through again' line %s after the slow call ended (gauge %v since %s after)",
				d.Round(time.Second), r.gauge(t), r.g.stallMemory())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.gauge(t); got != 0 {
		t.Errorf("sallyport_gateway_store_stalled %v when the gateway says the calls go through again, want 0", got)
	}
	r.want(t, "after stallMemory", 0, 1, "store stalled", 1)
}

// TestStoreStallBriefPingFailure: on PostgreSQL, while a call waits for a
// lock another session holds (a stall the gateway has logged), the
// network to the database fails for a moment (a ping fails; the
// connections made before are gone once it is back). While the ping fails
// the store reads down (gauge 0), but the gateway does not say the
// store's calls go through again; once the database answers (the gateway
// checks again store.SlowCall after the failed check), the call that
// waited for the lock (a ping answered during its wait) keeps the store
// stalled: gauge 1. Before, the failed check logged "the store's calls go
// through again" and the stall was erased: gauge 0 with the lock held.
func TestStoreStallBriefPingFailure(t *testing.T) {
	shortskip.Long(t, "waits store.SlowCall for a lock")
	ctx := context.Background()
	r, relay := newHoleStallRig(t, 100*time.Millisecond)
	g, raw, st := r.g, r.raw, r.st

	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"BEGIN", "LOCK TABLE replicas IN ACCESS EXCLUSIVE MODE"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	defer conn.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // the test's end
	// A call waiting for the lock (a store call of the gateway's, not its
	// heartbeat, which checks for a stall as it ends).
	beat := make(chan error, 1)
	go func() { beat <- st.Heartbeat(ctx, "other", time.Now(), time.Now().Add(-time.Hour)) }()
	for r.gauge(t) != 1 { // the call has waited store.SlowCall
		select {
		case err := <-beat:
			t.Fatalf("the call ended (%v) before the gauge read 1", err)
		case <-time.After(time.Millisecond):
		}
	}
	g.checkStoreStall(time.Now()) // a check meanwhile: its ping answers
	if stalls, _ := r.stallLines(); stalls != 1 {
		t.Fatalf("%d 'the store stalls' lines with a call waiting for the lock, want 1", stalls)
	}

	relay.Hole()
	g.checkStoreStall(time.Now()) // its ping fails
	if got := r.gauge(t); got != 0 {
		t.Errorf("sallyport_gateway_store_stalled %v while the ping fails, want 0 (down, not stalled)", got)
	}
	relay.Mend() // the call's connection is gone: it fails
	<-beat
	// No ping but the store watch's recheck, which the failed check
	// asked for (no /readyz probe, no heartbeat) tells that the
	// database answers again.
	mended := time.Now()
	for r.gauge(t) != 1 {
		if d := time.Since(mended); d > 3*store.SlowCall {
			t.Fatalf("sallyport_gateway_store_stalled still 0 %s after the database answers again, the lock still held; want 1",
				d.Round(time.Second))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body := r.readyz(); code != 200 {
		t.Fatalf("/readyz once the database answers again: %d %q", code, body)
	}
	g.checkStoreStall(time.Now())
	if stalls, cleared := r.stallLines(); stalls != 1 || cleared != 0 {
		t.Errorf("%d 'the store stalls' and %d 'the store's calls go through again' lines, want 1 and 0: "+
			"the stall went on through the failed ping", stalls, cleared)
	}
}

// heldPing is a store whose second Ping waits until hold is closed,
// having closed entered.
type heldPing struct {
	*store.DB
	pings   atomic.Int32
	entered chan struct{}
	hold    chan struct{}
}

func (p *heldPing) Ping(ctx context.Context) error {
	if p.pings.Add(1) == 2 {
		close(p.entered)
		<-p.hold
	}
	return p.DB.Ping(ctx)
}

// TestStoreStallSilentAfterStop: a check the store's watch began just
// before the gateway's stop (its ping under way) logs nothing once the
// gateway has stopped. Before, it warned "the store stalls" after the
// gateway said it stopped: the watch's goroutine outlives the stop.
func TestStoreStallSilentAfterStop(t *testing.T) {
	r := newStallRig(t, "sqlite")
	hp := &heldPing{DB: r.st, entered: make(chan struct{}), hold: make(chan struct{})}
	core, logs := observer.New(zap.InfoLevel)
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: hp, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	g.checkStoreStall(time.Now()) // the first ping: the watch starts, no stall
	if _, err := r.raw.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Heartbeat(context.Background(), g.replica, time.Now(), time.Now().Add(-time.Hour)); err == nil {
		t.Fatal("the heartbeat went through the trigger")
	}
	r.st.RecheckStalls(0) // the watch pokes the gateway now
	<-hp.entered          // its check pings
	g.stop()
	close(hp.hold)
	g.stallCheck.Lock() // the check has ended
	g.stallCheck.Unlock()
	if n := logs.FilterMessageSnippet("the store stalls").Len(); n != 0 {
		t.Errorf("%d 'the store stalls' lines logged by a check that ended after the gateway's stop, want 0", n)
	}
}
