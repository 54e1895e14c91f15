package gateway

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/store"
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

// stallWatcher is a stalledStore that says when a stall may have begun
// or ended (store.DB.WatchStalls), so that the log says so then: a call
// that has waited store.SlowCall tells it at once, and the memory of the
// last slow call ends on time, not at the next heartbeat (up to a sweep
// later).
type stallWatcher interface {
	WatchStalls(ctx context.Context, memory time.Duration, poke func())
	RecheckStalls(d time.Duration)
}

// stallMemory is how long a call that waited store.SlowCall or more keeps
// the store reported stalled after it ended: a store sweep, plus the bound
// of the sweep's heartbeat, so that an idle gateway, whose only call is
// that heartbeat, stays stalled from one heartbeat to the next while the
// lock does. The gauge and the log clear this long after the last slow
// call ended (the log when the store's watch tells it; see stallWatcher).
func (g *Gateway) stallMemory() time.Duration {
	bound := g.stallMemoryBound
	if bound <= 0 {
		bound = trustTimeout
	}
	return g.cfg.storeSweep() + bound
}

// stallRecheckAfter is how soon a check whose ping failed during a stall
// runs again (see checkStoreStall).
func (g *Gateway) stallRecheckAfter() time.Duration {
	if g.stallRecheck > 0 {
		return g.stallRecheck
	}
	return store.SlowCall
}

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

// checkStoreStall logs a warning when the store has become stalled as of
// now, once per stall, and a line when its calls go through again. It runs
// after each replica heartbeat (at start and at every store sweep), and
// when the store's watch says a stall may have begun or ended (a call has
// waited store.SlowCall; the last slow call's memory has passed).
func (g *Gateway) checkStoreStall(now time.Time) { g.checkStall(now, true) }

// checkStall is checkStoreStall; watch: register with the store's watch
// first (watchStoreStalls), which the watch's own pokes need not.
func (g *Gateway) checkStall(now time.Time, watch bool) {
	if _, ok := g.store.(stalledStore); !ok || g.stopping() {
		return
	}
	began := time.Now()
	if watch {
		g.watchStoreStalls()
	}
	g.stallCheck.Lock()
	defer g.stallCheck.Unlock()
	// A database that does not answer (a black hole) times calls out too:
	// that is an outage, which /readyz reports, not a stall. The ping
	// tells the store which it is (store.DB.Ping): while it does not
	// answer, Stalled reports nothing, and the calls that waited for it
	// are not counted once it answers again (those that had waited
	// store.SlowCall when a ping answered are: a stall, which a failed
	// ping does not end).
	ctx, cancel := context.WithTimeout(context.Background(), storePingTimeout)
	perr := g.store.Ping(ctx)
	cancel()
	if g.stopping() {
		// The store's watch poked just before the stop: its check ends
		// unsaid, after the gateway said it stopped.
		return
	}
	// Judge the moment after the ping, not the one before the lock: a
	// check that waited for another one (the heartbeat's and the watch's)
	// would otherwise judge an earlier moment than the check before it, and
	// at the end of a stall's memory say it ended and then began again.
	stalled, why := g.storeStalled(now.Add(time.Since(began)))
	if perr != nil && !stalled {
		// Down, or not known: neither a stall nor its end. The stall said
		// before, if any, stays said until a ping answers; the store's
		// watch checks again soon, so that the gauge reads it again
		// within seconds of a failed ping (a moment's outage).
		if sw, ok := g.store.(stallWatcher); ok && g.storeStallSaid.Load() {
			sw.RecheckStalls(g.stallRecheckAfter())
		}
		return
	}
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

// watchStoreStalls has the store's watch poke the gateway (stallWatcher)
// until the gateway stops. Every check but the watch's own pokes
// registers: the store keeps one watcher, and the same gateway's
// registration only renews poke and memory (a lock and a compare, at each
// heartbeat). Two gateways of a process on one store (tests) take turns:
// each takes the watch back at its next heartbeat, where one registered
// only once lost it for good to the other, and with the other's stop the
// store had no watcher at all. Not in New: the watch keeps the memory it
// is given, and stallMemory comes from the config, which a test may set
// after New but before the first heartbeat.
func (g *Gateway) watchStoreStalls() {
	sw, ok := g.store.(stallWatcher)
	if !ok {
		return
	}
	ctx := g.stopCtx
	if ctx == nil { // a Gateway built by a test without New
		ctx = context.Background()
	}
	sw.WatchStalls(ctx, g.stallMemory(), g.pokeStoreStall)
}

// stopping reports whether the gateway's shutdown has begun.
func (g *Gateway) stopping() bool {
	select {
	case <-g.stopped:
		return true
	default:
		return false
	}
}

// pokeStoreStall is the store watch's call (stallWatcher): the watch that
// pokes is the gateway's, so it does not register again.
func (g *Gateway) pokeStoreStall() { g.checkStall(time.Now(), false) }
