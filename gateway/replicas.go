package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Several replicas behind one load balancer each hold the agent sessions
// that reached them, and a replica holding no session of a connector group
// answers its users 503. So each replica tells its agents in the Welcome
// who it is (a random id per process) and how many replicas are alive on
// the store; an agent whose sessions share a replica while another has none
// dials again until they cover them (agent/spread.go).
//
// The count comes from the store: each replica writes a heartbeat at start
// and at every store sweep, and counts the replicas seen within
// replicaWindow sweeps. A lone gateway on SQLite counts itself: 1, also
// after a kill -9 or a restored backup (see countReplicas).

// ReplicaStore is a Store that knows the gateway replicas alive on it
// (store.DB). A Store without it leaves the count unknown (0): agents do not
// spread their sessions.
type ReplicaStore interface {
	// Heartbeat records that replica id is alive at now and deletes the
	// replicas not seen since prune.
	Heartbeat(ctx context.Context, id string, now, prune time.Time) error
	// Replicas counts the replicas seen at or after since.
	Replicas(ctx context.Context, since time.Time) (int, error)
	// RemoveReplica deletes replica id: it stops.
	RemoveReplica(ctx context.Context, id string) error
}

// replicaWindow is how many store sweeps a replica's heartbeat counts for:
// a replica that misses two sweeps in a row (stopped without removing
// itself, or cut off from the store) drops out of the count.
const replicaWindow = 3

func newReplicaID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Replica is this gateway's replica id, random per process and sent to
// agents in every Welcome.
func (g *Gateway) Replica() string { return g.replica }

// Replicas is the number of gateway replicas alive on the store, as of the
// last store sweep (0 before the first, or with a Store that cannot say).
func (g *Gateway) Replicas() int { return int(g.replicas.Load()) }

func (g *Gateway) replicaCount() uint32 { return g.replicas.Load() }

// heartbeat records this replica as alive in the store and reads how many
// are. A store error leaves the last known count; it is returned (the
// sweep stops when the store does not answer). It then checks whether the
// store is stalled (checkStoreStall), the heartbeat's own wait or refusal
// included.
func (g *Gateway) heartbeat() error {
	rs, ok := g.store.(ReplicaStore)
	if !ok {
		return nil
	}
	ctx, cancel := g.stopContext(trustTimeout)
	defer cancel()
	n, err := g.countReplicas(ctx, rs)
	g.checkStoreStall(time.Now())
	if err != nil {
		g.log.Warn("gateway replicas not counted in the store; agents are told the last known count",
			zap.Error(err), zap.Int("replicas", g.Replicas()))
		return err
	}
	if old := g.replicas.Swap(uint32(n)); old != uint32(n) {
		g.log.Info("gateway replicas on the store", zap.String("replica", g.replica), zap.Int("replicas", n))
	}
	return nil
}

// sharedStore is a store that tells whether other gateway processes may
// use it (store.DB: PostgreSQL yes, SQLite no), and removes the replicas of
// earlier runs from one that they do not.
type sharedStore interface {
	Shared() bool
	RemoveReplicasExcept(ctx context.Context, keep []string) error
}

// processReplicas holds the replica ids of the gateways running in this
// process (usually one; tests run several on one store), each with whether
// it has removed the replicas of earlier runs from an unshared store (see
// countReplicas).
var processReplicas sync.Map

func ownReplicas() []string {
	var ids []string
	processReplicas.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	return ids
}

// countReplicas writes this replica's heartbeat and counts the replicas
// alive on the store, this one included.
//
// On a store that no other process shares (SQLite in data_dir) the rows of
// replicas this process does not run are deleted first, once (at the first
// heartbeat, or the next after it failed): they are from earlier runs, left
// by a process that did not stop cleanly (kill -9, a crash) or brought back
// by restoring a backup, and none appears while this process runs (only
// it writes the database). Counted, they made agents open sessions for
// replicas that do not exist and a stop wait for them ("replicas": 3 after
// two kill -9 and a restart, for three sweeps).
func (g *Gateway) countReplicas(ctx context.Context, rs ReplicaStore) (int, error) {
	window := replicaWindow * g.cfg.storeSweep()
	now := time.Now() // real time, as the sweeps: replicas compare their clocks
	if ss, ok := rs.(sharedStore); ok && !ss.Shared() {
		if cleared, _ := processReplicas.LoadOrStore(g.replica, false); !cleared.(bool) {
			if err := ss.RemoveReplicasExcept(ctx, ownReplicas()); err != nil {
				return 0, err
			}
			processReplicas.Store(g.replica, true)
		}
	}
	if err := rs.Heartbeat(ctx, g.replica, now, now.Add(-window)); err != nil {
		return 0, err
	}
	n, err := rs.Replicas(ctx, now.Add(-window))
	if err != nil {
		return 0, err
	}
	return max(n, 1), nil // this one, even if its clock is behind the store's rows
}

// shutdownCountTimeout bounds the replica count of a shutdown, which holds
// the agent sessions closing.
const shutdownCountTimeout = 2 * time.Second

// othersAlive says, as this replica shuts down, whether another one is
// alive on the store: only then have its agents somewhere to move their
// sessions, and only then is AgentMoveWait worth waiting. The count is
// taken now, not at the last sweep, so a replica that came up since (a
// rolling update starting the new one first) counts. Unknown (a Store that
// cannot count, a store error) counts as alive: waiting is the safe side.
func (g *Gateway) othersAlive() bool {
	rs, ok := g.store.(ReplicaStore)
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownCountTimeout)
	defer cancel()
	n, err := g.countReplicas(ctx, rs)
	if err != nil {
		g.log.Warn("gateway replicas not counted at shutdown; the agents get the whole agent move wait as if another replica were alive",
			zap.Error(err))
		return true
	}
	return n > 1
}

// removeReplica takes this replica out of the store's count as it stops.
// It is the last thing a stopping gateway does, so it waits no longer for
// the store than the count at shutdown (shutdownCountTimeout): a database
// that does not answer (a firewall dropping its packets) held every stop
// for another trustTimeout (10 s) after "gateway stopped", and what it
// saves is little: the other replicas stop counting this one within
// replicaWindow sweeps anyway.
func (g *Gateway) removeReplica() {
	processReplicas.Delete(g.replica)
	rs, ok := g.store.(ReplicaStore)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownCountTimeout)
	defer cancel()
	if err := rs.RemoveReplica(ctx, g.replica); err != nil {
		g.log.Debug("replica not removed from the store; the others stop counting it within 3 sweeps", zap.Error(err))
	}
}
