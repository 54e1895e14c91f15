package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/store"
)

// sweepStore is a store whose Connector reads fail at once (down: a
// stopped database) or wait for their context to end (hang: a blackholed
// one); it counts them.
type sweepStore struct {
	Store
	down, hang atomic.Bool
	reads      atomic.Int32
	entered    chan struct{}
}

func (s *sweepStore) Connector(ctx context.Context, id string) (store.Connector, error) {
	s.reads.Add(1)
	switch {
	case s.down.Load():
		return store.Connector{}, fmt.Errorf("connector %s: %w", id, context.DeadlineExceeded)
	case s.hang.Load():
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return store.Connector{}, fmt.Errorf("connector %s: %w", id, ctx.Err())
	}
	return s.Store.Connector(ctx, id)
}

// sweepGateway is a gateway on an in-memory store behind a sweepStore,
// holding one session of each of n connectors.
func sweepGateway(t *testing.T, n int) (*Gateway, *sweepStore) {
	t.Helper()
	mem, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	ss := &sweepStore{Store: mem, entered: make(chan struct{}, 1)}
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: ss, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		s := newFakeSession(fmt.Sprintf("s%d", i), "g")
		s.info.ConnectorID = fmt.Sprintf("c%d", i)
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("session not registered")
		}
	}
	return g, ss
}

// TestSweepStopsAtStoreDown: a sweep stops reading connectors at the first
// read the store did not answer; each waited up to 10 s, one after the
// other for every connector with a session here.
func TestSweepStopsAtStoreDown(t *testing.T) {
	g, ss := sweepGateway(t, 5)
	ss.down.Store(true)
	g.sweep()
	if n := ss.reads.Load(); n != 1 {
		t.Fatalf("%d connector reads in a sweep while the store does not answer, want 1", n)
	}
	ss.down.Store(false)
	ss.reads.Store(0)
	g.sweep()
	if n := ss.reads.Load(); n != 5 {
		t.Fatalf("%d connector reads with the store back, want 5", n)
	}
}

// TestSweepEndsAtStop: a sweep waiting for a database that does not
// answer ends when the gateway stops, rather than holding the stop for
// the read's 10 s.
func TestSweepEndsAtStop(t *testing.T) {
	g, ss := sweepGateway(t, 1)
	ss.hang.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.sweep()
	}()
	<-ss.entered
	g.stop()
	select {
	case <-done:
	case <-time.After(trustTimeout / 2):
		t.Fatalf("the sweep still waits for the store after the gateway stopped")
	}
	<-done
}

// TestReplicasOnSQLite: a gateway on SQLite counts itself alone, whatever
// rows the replicas table holds (a kill -9 left its own, or a restored
// backup brought old ones back): it counted them, told agents to spread
// over replicas that do not exist, and waited for them at stop.
func TestReplicasOnSQLite(t *testing.T) {
	mem, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	now := time.Now()
	for _, id := range []string{"killed-1", "killed-2"} {
		if err := mem.Heartbeat(context.Background(), id, now.Add(-time.Second), now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	g := &Gateway{cfg: Config{StoreSweep: time.Minute}, log: zap.NewNop(), store: mem, replica: newReplicaID()}
	g.heartbeat()
	if g.Replicas() != 1 {
		t.Fatalf("%d replicas on SQLite with two rows of earlier runs, want 1", g.Replicas())
	}
	if g.othersAlive() {
		t.Fatal("another replica alive on SQLite")
	}
	if n, err := mem.Replicas(context.Background(), now.Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("%d rows left in the replicas table (%v), want this gateway's alone", n, err)
	}
	// Two gateways of one process on one store (tests do this) count each other.
	g2 := &Gateway{cfg: Config{StoreSweep: time.Minute}, log: zap.NewNop(), store: mem, replica: newReplicaID()}
	g2.heartbeat()
	g.heartbeat()
	if g.Replicas() != 2 || g2.Replicas() != 2 {
		t.Fatalf("two gateways of this process on one SQLite store count %d and %d, want 2", g.Replicas(), g2.Replicas())
	}
	g2.removeReplica()
	g.removeReplica()
}
