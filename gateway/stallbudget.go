package gateway

import (
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// DefaultMaxStalledExchanges is Config.MaxStalledExchanges when it is 0.
const DefaultMaxStalledExchanges = 512

// stallAfter is how long a write or flush to the client must block before
// its exchange counts as stalled (see stallBudget); never more than the
// send timeout.
const stallAfter = time.Second

// stallBudget bounds the exchanges whose client stopped reading, gateway
// wide. Each holds, until the send timeout cuts it, its tunnel stream, up
// to a flow-control window of response body read from the tunnel (1 MiB)
// and the agent's side of the exchange with its backend connection: a probe
// (gRPC tunnel) held about 1 MiB per such download on the gateway and
// 0.5-0.8 MiB on the agent, and one HTTP/2 connection could run 250 of
// them (128 now), so that a few clients that never read took gigabytes
// for the 5 minutes of the default send timeout. public.max_connections
// counts connections, not streams.
//
// A write or flush to the client that has blocked for stallAfter makes its
// exchange stalled; when more than max are, the one stalled longest is cut
// as the send timeout cuts it. A client that reads, however slowly, unblocks
// its writes again and again, so the exchanges of clients that read nothing
// are the first to go, and slow readers are cut only while stalled
// exchanges beyond the limit remain.
//
// The sendGuard's timer does the work: a write that does not block costs
// nothing more; the guard takes mu only when its timer finds a write
// blocked for stallAfter, and when that write ends.
type stallBudget struct {
	max int // stalled exchanges allowed; > 0
	log *zap.Logger
	// logs limits the lines of cut exchanges: an attack makes many.
	logs logLimiter

	mu         sync.Mutex
	head, tail *sendGuard // the stalled, oldest write first; guarded by mu
	n          int        // guarded by mu
}

// newStallBudget returns the budget for max stalled exchanges (0 → the
// default), or nil for a negative max: no limit.
func newStallBudget(max int, log *zap.Logger) *stallBudget {
	switch {
	case max < 0:
		return nil
	case max == 0:
		max = DefaultMaxStalledExchanges
	}
	return &stallBudget{max: max, log: log, logs: logLimiter{max: refusalLinesPerWindow, window: refusalWindow}}
}

// add lists g, whose write began at start (tunnel.MonoNow), as stalled, and
// returns the guard to cut when that makes too many, with the start of its
// write: the one whose write began first (maybe g). Stalls are found about
// stallAfter after their write began, so g goes at or near the tail.
func (b *stallBudget) add(g *sendGuard, start int64) (*sendGuard, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addLocked(g, start)
}

// stall lists g, as add does, if its write that began at since (g.since
// as its timer read it) is still under way, negating g.since under b.mu:
// an end that swaps it for 0 before finds the write over here, and one
// after it unlists g once it is linked (its remove waits for b.mu).
// Negating it first and linking after let an end that came in between
// leave g listed with no write under way (counted for ever, and linked
// twice at its next stall).
func (b *stallBudget) stall(g *sendGuard, since int64) (*sendGuard, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !g.since.CompareAndSwap(since, -since) {
		return nil, 0 // the write returned (and maybe another began)
	}
	return b.addLocked(g, since)
}

// addLocked is add with b.mu held.
func (b *stallBudget) addLocked(g *sendGuard, start int64) (*sendGuard, int64) {
	g.stallStart, g.listed = start, true
	at := b.tail
	for at != nil && at.stallStart > start {
		at = at.prev
	}
	// g goes after at (at the head when at is nil).
	g.prev = at
	if at == nil {
		g.next, b.head = b.head, g
	} else {
		g.next, at.next = at.next, g
	}
	if g.next == nil {
		b.tail = g
	} else {
		g.next.prev = g
	}
	b.n++
	if b.n <= b.max {
		return nil, 0
	}
	victim := b.head
	b.unlink(victim)
	return victim, victim.stallStart
}

// remove unlists g if it is listed: its write returned, or it was cut.
func (b *stallBudget) remove(g *sendGuard) {
	b.mu.Lock()
	if g.listed {
		b.unlink(g)
	}
	b.mu.Unlock()
}

// unlink takes g, listed, out of the list. b.mu is held.
func (b *stallBudget) unlink(g *sendGuard) {
	if g.prev == nil {
		b.head = g.next
	} else {
		g.prev.next = g.next
	}
	if g.next == nil {
		b.tail = g.prev
	} else {
		g.next.prev = g.prev
	}
	g.prev, g.next, g.listed = nil, nil, false
	b.n--
}

// stalled is the number of stalled exchanges listed.
func (b *stallBudget) stalled() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// cutOver cuts g, which add returned, if its write that began at start
// (tunnel.MonoNow) is still blocked: the write fails at once, as at the send
// timeout, and serveRelay ends the exchange (HTTP/1.1: the connection is
// closed; HTTP/2: the stream is reset), which frees its tunnel stream and
// the agent's side of it. Called without any guard's mu held.
func (b *stallBudget) cutOver(g *sendGuard, start int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done || g.since.Load() != -start {
		return // the write returned: the client reads again
	}
	_ = http.NewResponseController(g.statusRecorder).SetWriteDeadline(time.Now())
	ok, suppressed := b.logs.allow(time.Now())
	if !ok {
		return
	}
	fields := []zap.Field{zap.Int("max_stalled_exchanges", b.max),
		zap.Duration("blocked", time.Duration(tunnel.MonoNow()-start)),
		zap.String("request_id", g.st.requestID), zap.String("remote", g.remote)}
	if g.st.route != nil {
		fields = append(fields, zap.String("app", g.st.route.App))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int("similar_lines_suppressed", suppressed))
	}
	b.log.Info("client stopped reading: more exchanges are stalled on clients that do not read than public.max_stalled_exchanges; "+
		"cutting the one stalled longest", fields...)
}
