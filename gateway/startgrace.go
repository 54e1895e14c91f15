package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Holding exchanges while the agents come back after a start.
//
// The public listener opens before the agents are back: they reconnect
// with a backoff that grows to 30 s after refused dials, so for a second
// or two after a gateway restart each group has no agent, and its apps
// answered 503 no-connector (a soak: 24 exchanges in 1.5 s over yamux).
// Within startGrace of the start, an exchange whose first pick finds no
// agent, for a group that has had none since the start but expects some
// (the store holds an enrolled connector of the group), waits for one to
// connect, up to what it may wait for a stream (the app's StreamWait,
// within its timeout), then goes on as any other; or gets the 503
// no-connector it got before. A group that had an agent and lost it
// answers at once (an outage, not a start), and so does one without an
// enrolled connector (a typo, a group yet to be set up, a gateway on its
// first start or on an in-memory store, whose agents enroll anew);
// nothing is held after the grace. At most maxStartHeld exchanges wait at
// once: more get the 503 at once.
//
// Groups with an agent never come here: roundTrip asks only when its first
// pick failed.

// startGrace is how long after the start exchanges may be held: the
// agents' longest reconnect backoff.
const startGrace = 30 * time.Second

// maxStartHeld bounds the exchanges held at once, gateway wide.
const maxStartHeld = 1024

// startHold is what the gateway keeps to hold exchanges after its start.
// Its zero value holds nothing (a gateway whose Serve has not started).
type startHold struct {
	// start is the start time in Unix nanoseconds on the real clock; zero
	// until Serve. Set by begin.
	start atomic.Int64
	// over is set once an exchange or a session change saw the grace
	// ended: from then on nothing takes mu.
	over atomic.Bool

	mu sync.Mutex
	// expected are the groups with an enrolled connector that is not
	// revoked, at the start. Guarded by mu.
	expected map[string]bool
	// seen are the groups that had an agent since the start. Guarded by mu.
	seen map[string]bool
	// wake holds, for each group with exchanges waiting, a channel closed
	// when the group gets its first agent. Guarded by mu.
	wake map[string]chan struct{}
	held int // exchanges waiting; guarded by mu
}

// beginStartHold starts the grace; Serve calls it before the listeners
// serve. The groups that expect agents are those of the store's
// connectors (a store that does not answer within a few seconds: none, so
// nothing is held). A config token is no sign: on a first start its group
// has no agent yet, and may never have one.
func (g *Gateway) beginStartHold() {
	h := &g.hold
	expected := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), startHoldLoad)
	list, err := g.store.Connectors(ctx)
	cancel()
	if err != nil {
		g.log.Warn("could not list the enrolled connectors: for the first 30 s, apps answer 503 no-connector at once "+
			"until their agents are back, rather than wait for them; check the store",
			zap.Error(err))
	}
	for _, c := range list {
		if c.Revoked.IsZero() {
			expected[c.Group] = true
		}
	}
	h.mu.Lock()
	h.expected = expected
	h.mu.Unlock()
	h.start.Store(time.Now().UnixNano())
}

// startHoldLoad bounds the store's listing of connectors at the start.
const startHoldLoad = 3 * time.Second

// graceLeft is what is left of the grace; 0 or less: none (or no start).
func (h *startHold) graceLeft() time.Duration {
	if h.over.Load() {
		return 0
	}
	start := h.start.Load()
	if start == 0 {
		return 0
	}
	left := startGrace - time.Since(time.Unix(0, start))
	if left <= 0 {
		h.over.Store(true)
	}
	return left
}

// holdForAgent is roundTrip's slow path when its first pick found no agent
// of group: within the grace, for a group that has had no agent since the
// start and expects one, it waits up to wait (and the rest of the grace)
// for one to connect. again reports that roundTrip should pick again: an
// agent of the group connected (maybe just before). err is the request's
// context error when the client left meanwhile.
func (g *Gateway) holdForAgent(ctx context.Context, group string, wait time.Duration) (again bool, err error) {
	left := g.hold.graceLeft()
	if left <= 0 {
		return false, nil
	}
	h := &g.hold
	h.mu.Lock()
	switch {
	case h.seen[group]:
		// An agent connected since the pick, or the group had one and
		// lost it: the pick again says which.
		h.mu.Unlock()
		return true, nil
	case !h.expected[group] || h.held >= maxStartHeld:
		h.mu.Unlock()
		return false, nil
	}
	if h.wake == nil {
		h.wake = make(map[string]chan struct{})
	}
	ch := h.wake[group]
	if ch == nil {
		ch = make(chan struct{})
		h.wake[group] = ch
	}
	h.held++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.held--
		h.mu.Unlock()
	}()
	t := time.NewTimer(min(wait, left))
	defer t.Stop()
	select {
	case <-ch:
		return true, nil
	case <-t.C:
		return false, nil
	case <-g.stopped:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// heldNow is the number of exchanges waiting for an agent (tests).
func (h *startHold) heldNow() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// groupGained wakes the exchanges held for group once it has an agent;
// groupChanged calls it on every change of the group's sessions. Nothing
// after the grace.
func (g *Gateway) groupGained(group string) {
	h := &g.hold
	if h.graceLeft() <= 0 || g.registry.Count(group) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[group] {
		return
	}
	if h.seen == nil {
		h.seen = make(map[string]bool)
	}
	h.seen[group] = true
	if ch := h.wake[group]; ch != nil {
		close(ch)
		delete(h.wake, group)
	}
}
