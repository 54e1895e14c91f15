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

// TestStoreStallWatchRegisteredOnce: the gateway registers with its
// store's stall watch once, at its first check (the heartbeat at start),
// not again at every heartbeat and every poke of the watch; the watch
// still pokes it, and the poke's check still logs the stall. Before,
// every check registered again (here 4 times: three checks and a poke).
func TestStoreStallWatchRegisteredOnce(t *testing.T) {
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
	if n := cw.watches.Load(); n != 1 {
		t.Errorf("the gateway registered with the store's stall watch %d times (two heartbeats, a check, a poke), want once", n)
	}
}
