package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// replicaStore is a Store whose replica count a test sets; the rest of
// Store is not used.
type replicaStore struct {
	Store
	n      int
	err    error
	beats  []string // replica ids of the heartbeats
	window time.Duration
}

func (s *replicaStore) Heartbeat(_ context.Context, id string, now, prune time.Time) error {
	s.beats = append(s.beats, id)
	s.window = now.Sub(prune)
	return s.err
}

func (s *replicaStore) Replicas(context.Context, time.Time) (int, error) { return s.n, s.err }

func (s *replicaStore) RemoveReplica(context.Context, string) error { return s.err }

// TestHeartbeat: each heartbeat writes this replica's id and reads the
// count, counted over three store sweeps; a store error leaves the last
// known count (and says so), and the count is never below this replica.
func TestHeartbeat(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	rs := &replicaStore{n: 3}
	g := &Gateway{cfg: Config{StoreSweep: time.Second}, log: zap.New(core), store: rs, replica: newReplicaID()}
	if len(g.replica) != 16 {
		t.Fatalf("replica id %q, want 16 hex digits", g.replica)
	}
	g.heartbeat()
	if g.Replicas() != 3 || len(rs.beats) != 1 || rs.beats[0] != g.replica || rs.window != 3*time.Second {
		t.Fatalf("after a heartbeat: %d replicas, heartbeats %v, window %v; want 3, [%s], 3s",
			g.Replicas(), rs.beats, rs.window, g.replica)
	}
	rs.err = errors.New("database down")
	g.heartbeat()
	if g.Replicas() != 3 {
		t.Fatalf("a store error changed the count to %d, want the last known 3", g.Replicas())
	}
	if logs.FilterMessage("gateway replicas not counted in the store; agents are told the last known count").Len() != 1 {
		t.Fatalf("the store error is not logged: %v", logs.All())
	}
	rs.err, rs.n = nil, 0
	g.heartbeat()
	if g.Replicas() != 1 {
		t.Fatalf("%d replicas when the store counts none, want 1 (this one)", g.Replicas())
	}
	if n := logs.FilterMessage("gateway replicas on the store").Len(); n != 2 {
		t.Fatalf("count changes logged %d times, want 2 (3, then 1)", n)
	}
}

// TestOthersAlive: at shutdown the count is taken afresh, with a heartbeat
// of this replica; another replica alive, an unknown count (a store
// error, or a Store that cannot count) all keep the agent move wait, which
// only a count of this replica alone skips.
func TestOthersAlive(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	rs := &replicaStore{n: 2}
	g := &Gateway{cfg: Config{StoreSweep: time.Second}, log: zap.New(core), store: rs, replica: newReplicaID()}
	if !g.othersAlive() {
		t.Fatal("two replicas on the store: another is alive")
	}
	if len(rs.beats) != 1 || rs.beats[0] != g.replica {
		t.Fatalf("heartbeats %v, want this replica's before the count", rs.beats)
	}
	rs.n = 1
	if g.othersAlive() {
		t.Fatal("the store counts this replica alone: no other is alive")
	}
	rs.n = 0
	if g.othersAlive() {
		t.Fatal("the store counts none (this replica's clock behind): no other is alive")
	}
	rs.n, rs.err = 1, errors.New("database down")
	if !g.othersAlive() {
		t.Fatal("a store error must keep the wait")
	}
	if logs.FilterMessage("gateway replicas not counted at shutdown; the agents get the whole agent move wait as if another replica were alive").Len() != 1 {
		t.Fatalf("the store error is not logged: %v", logs.All())
	}
	g.store = rs.Store // nil: a Store without the count
	if !g.othersAlive() {
		t.Fatal("a Store that cannot count must keep the wait")
	}
}
