package gateway

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// A database where someone holds a lock on the gateway's tables (a
// migration by hand, VACUUM FULL, LOCK TABLE; on SQLite the write
// transaction of another process), or one that refuses writes (a full
// disk, a read-only standby), still answers a ping, while agent
// registrations, enrollments and the replica heartbeat wait for it or
// fail. The gateway calls the store "stalled" then (store.DB.Stalled) and
// says so in the gauge sallyport_gateway_store_stalled and in its log,
// not in /readyz: such a stall hits every replica sharing the database at
// once, and a load balancer taking them all out together would turn a
// database problem into an outage for the users, whose requests never
// wait for the database (the relay goes on without it).

// stalledStore is a Store that tells whether its calls hang or are
// refused although the database answers a ping (store.DB). A Store
// without it is never reported stalled, and has no gauge.
type stalledStore interface {
	Stalled(now time.Time, memory time.Duration) error
}

// stallMemory is how long a call that waited store.SlowCall or more keeps
// the store reported stalled after it ended: a store sweep, plus the bound
// of the sweep's heartbeat, so that the check after the next heartbeat
// sees it however the call and the sweeps fall. An idle gateway, whose
// only call is that heartbeat, so stays stalled while the lock does.
func (g *Gateway) stallMemory() time.Duration { return g.cfg.storeSweep() + trustTimeout }

// storeStalled reports whether the store is stalled as of now (see
// stalledStore), and why. It only reads what the store's calls recorded;
// now is real time, as their records are.
func (g *Gateway) storeStalled(now time.Time) (stalled bool, why error) {
	ss, ok := g.store.(stalledStore)
	if !ok {
		return false, nil
	}
	err := ss.Stalled(now, g.stallMemory())
	return err != nil, err
}

// checkStoreStall logs, after each replica heartbeat (at start and at
// every store sweep), a warning when the store has become stalled as of
// now, once per stall, and a line when its calls go through again.
func (g *Gateway) checkStoreStall(now time.Time) {
	if _, ok := g.store.(stalledStore); !ok {
		return
	}
	// A database that does not answer (a black hole) times calls out too:
	// that is an outage, which /readyz reports, not a stall. The ping
	// tells the store which it is (store.DB.Ping): while it does not
	// answer, Stalled reports nothing, and the calls that waited for it
	// are forgotten once it answers again.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = g.store.Ping(ctx)
	cancel()
	stalled, why := g.storeStalled(now)
	if g.storeStallSaid.Swap(stalled) == stalled {
		return
	}
	if stalled {
		g.log.Warn("the store stalls: calls to its database wait or are refused although it answers a ping; "+
			"agent session starts, enrollments and renewals wait or fail, the relay goes on; "+
			"/readyz stays 200, sallyport_gateway_store_stalled is 1", zap.Error(why))
		return
	}
	g.log.Info("the store's calls go through again")
}
