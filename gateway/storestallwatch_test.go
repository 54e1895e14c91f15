package gateway

import (
	"context"
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/store"
)

// countedWatch is a store that counts the watchers registered with its
// stall watch (WatchStalls), and tells poked after each poke of it.
type countedWatch struct {
	*store.DB
	watches atomic.Int32
	poked   chan struct{}
}

func (c *countedWatch) WatchStalls(ctx context.Context, memory time.Duration, poke func()) {
	c.watches.Add(1)
	c.DB.WatchStalls(ctx, memory, func() {
		poke()
		select {
		case c.poked <- struct{}{}:
		default:
		}
	})
}

// TestStoreStallWatchNotRegisteredByPokes: the watch's pokes do not
// register the gateway with the store's stall watch again (the watch that
// pokes is the gateway's); the watch still pokes it, and the poke's check
// still logs the stall. Before, every check registered again, the pokes'
// too (here the poke made a fourth registration).
func TestStoreStallWatchNotRegisteredByPokes(t *testing.T) {
	r := newStallRig(t, "sqlite")
	cw := &countedWatch{DB: r.st, poked: make(chan struct{}, 1)}
	core, logs := observer.New(zap.InfoLevel)
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: cw, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.stop()
	for i := range 2 {
		if err := g.heartbeat(); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
	}
	g.checkStoreStall(time.Now())
	before := cw.watches.Load()
	if _, err := r.raw.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Heartbeat(context.Background(), g.replica, time.Now(), time.Now().Add(-time.Hour)); err == nil {
		t.Fatal("the heartbeat went through the trigger")
	}
	r.st.RecheckStalls(0) // the watch pokes the gateway now
	<-cw.poked
	if n := logs.FilterMessageSnippet("the store stalls").Len(); n != 1 {
		t.Errorf("%d 'the store stalls' lines after the watch's poke with the store refusing writes, want 1", n)
	}
	if n := cw.watches.Load(); n != before || before == 0 {
		t.Errorf("the gateway registered with the store's stall watch %d times at two heartbeats and a check, %d after the watch's poke; "+
			"want at least once before, and no more at the poke", before, n)
	}
}

// TestStoreStallWatchTwoGatewaysOneStore: of two gateways of a process on
// one store, which keeps one watcher, the first takes the watch back at
// its next heartbeat after the second took it and stopped, and is poked
// by it again. When the gateway registered only at its first check, it
// never was: the second's stop left the store without a watcher, and the
// first's log said a stall only at its heartbeats, up to a store sweep
// late.
func TestStoreStallWatchTwoGatewaysOneStore(t *testing.T) {
	r := newStallRig(t, "sqlite")
	cw := &countedWatch{DB: r.st, poked: make(chan struct{}, 1)}
	core, logs := observer.New(zap.InfoLevel)
	first, err := New(Config{TunnelTLS: &tls.Config{}, Store: cw, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer first.stop()
	second, err := New(Config{TunnelTLS: &tls.Config{}, Store: r.st, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []*Gateway{first, second} {
		if err := g.heartbeat(); err != nil {
			t.Fatal(err)
		}
	}
	second.stop()
	if err := first.heartbeat(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.raw.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON replicas BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END`); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Heartbeat(context.Background(), first.replica, time.Now(), time.Now().Add(-time.Hour)); err == nil {
		t.Fatal("the heartbeat went through the trigger")
	}
	r.st.RecheckStalls(0) // the watch pokes its watcher now
	select {
	case <-cw.poked:
	case <-time.After(10 * time.Second):
		t.Fatalf("the first gateway was never poked by the store's watch after the second stopped (registered %d times)", cw.watches.Load())
	}
	if n := logs.FilterMessageSnippet("the store stalls").Len(); n != 1 {
		t.Errorf("%d 'the store stalls' lines after the watch's poke with the store refusing writes, want 1", n)
	}
}
