package gateway

import (
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// DefaultMaxStalledExchanges is Config.MaxStalledExchanges when it is 0.
const DefaultMaxStalledExchanges = 512

// stallsPerClient is how many stalled exchanges one client may hold before
// the budget, once full, cuts its exchanges ahead of everybody else's (see
// stallBudget); exchanges listed for the bytes they hold (blocked for
// behindAfter) count too. A browser on a bad link stalls every stream of its one
// HTTP/2 connection at once, a handful to a few dozen; a client that opens
// streams it never reads stalls up to 128 per connection.
const stallsPerClient = 16

// stallsPerAddress is how many stalled exchanges the connections of one IP
// address (IPv6: one /64; see limitKey) may hold together before the
// budget, once full, cuts theirs first: a client must not escape
// stallsPerClient by spreading its streams over connections of 16 each.
// Higher than stallsPerClient, for the users behind one NAT.
const stallsPerAddress = 64

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
// exchange stalled; when more than max are, one is cut as the send timeout
// cuts it: the one stalled longest of the clients that hold more than
// perClient stalled exchanges, or whose IP address holds more than perAddr,
// or, when none does, the one stalled longest. A client is its remote
// address, which is one connection (HTTP/2: all its streams), or the
// client's address behind a trusted proxy; its IP address (IPv6: its /64)
// is all the connections from it. So one client that holds hundreds of
// stalled streams loses its own before anyone else loses one: without it
// the budget could not tell 500 streams of one connection that never reads
// from 500 users on bad links, and cut the users' downloads, stalled first,
// for the attacker's. The count per address stops the attacker from
// spreading its streams over connections of perClient each (8 connections
// of 9 had two users' downloads cut for theirs); its share is higher, for
// the users behind one NAT. Nothing is cut while the budget has room,
// however many one client holds: the budget is what bounds the memory (a
// hard cap per connection would not, clients open more connections), and a
// browser on a bad link stalls all its streams.
// A client that reads, however slowly, unblocks its writes again and again,
// so the exchanges of clients that read nothing are the first to go, and
// slow readers are cut only while stalled exchanges beyond the limit
// remain.
//
// The count alone left two holes, which the bound on held bytes closes
// (stallbytes.go): what an exchange buffers before its second is up, and
// HTTP/2 streams read slowly enough to hold a full window but fast enough
// that no write blocks for a second. So the list holds every exchange
// whose write has blocked for behindAfter (100 ms), each charged what it
// may hold (sendGuard.held); only those blocked for stallAfter count as
// stalled (n, against max). When the charges pass maxHeld, exchanges are
// cut at once: heavy clients' first, stalled or not (which closes both
// holes: a client that holds that many streams it reads slowly or not at
// all is over its share), then stalled ones, those that may hold the most
// first, the oldest blocked write (the slowest reader) among equals. The
// exchanges of clients within their share that are only behind are
// charged but not cut for bytes (see pickLocked).
//
// Upgraded connections (WebSockets) count too: their writes to the client
// go through a sendGuard of their own (upgradeguard.go), and a cut one is
// closed. A stalled WebSocket held about 1.2 MiB on the gateway and
// 0.6 MiB on the agent (a probe, gRPC).
//
// The sendGuard's timer does the work: a write that does not block costs
// nothing more; the guard takes mu only when its timer finds a write
// blocked for behindAfter, while it stays blocked, and when that write ends.
type stallBudget struct {
	max int // stalled exchanges allowed; > 0
	// maxHeld bounds the bytes that the listed exchanges may hold (see
	// stallbytes.go): max × heldPerExchange; > 0.
	maxHeld int64
	// perClient is how many a client may hold before it is cut from
	// first (stallsPerClient); > 0. perAddr is the same for all the
	// clients of one IP address (stallsPerAddress); > 0. Both count the
	// listed exchanges, stalled or only behind.
	perClient int
	perAddr   int
	log       *zap.Logger
	// logs limits the lines of cut exchanges: an attack makes many.
	logs logLimiter

	mu         sync.Mutex
	head, tail *sendGuard // the listed, oldest write first; guarded by mu
	n          int        // the listed that are stalled; guarded by mu
	held       int64      // the charges (sendGuard.held) of the listed; guarded by mu
	// clients counts the listed exchanges of each client (sendGuard.remote)
	// that has any, addrs those of each IP address (stallAddrKey) that has
	// any; heavy is how many clients hold more than perClient plus how
	// many addresses hold more than perAddr. Guarded by mu.
	clients map[string]*stallClient
	addrs   map[string]*stallClient
	heavy   int
}

// stallCut is an exchange the budget gave up, for cutOver: g, whose write
// began at start (tunnel.MonoNow), and why.
type stallCut struct {
	g     *sendGuard // nil: none
	start int64
	// heavy: g's client held more than perClient listed exchanges, or its
	// address more than perAddr. bytes: the listed held more than maxHeld
	// (otherwise more than max were stalled).
	heavy, bytes bool
}

// stallClient is the number of listed exchanges of one client (one
// connection), or of one IP address (addr nil).
type stallClient struct {
	n    int
	addr *stallClient // the client's IP address's count; nil for an address
	key  string       // an address's key in addrs; "" for a client
}

// stallAddrKey is the IP address of a client's remote address (IPv6: its
// /64, as limitKey has it), or the remote address itself when it has none.
// Only on the slow path: a client's first listed exchange.
func stallAddrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return limitKey(host)
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
	return &stallBudget{max: max, maxHeld: maxHeldFor(max), perClient: stallsPerClient, perAddr: stallsPerAddress, log: log,
		logs:    logLimiter{max: refusalLinesPerWindow, window: refusalWindow},
		clients: make(map[string]*stallClient), addrs: make(map[string]*stallClient)}
}

// add lists g, whose write began at start (tunnel.MonoNow), as stalled, and
// returns the guard to cut when that makes too many (maybe g), with the
// start of its write and whether its client held more than perClient (or
// its address more than perAddr): the one whose write began first of the
// clients that hold more than perClient and the addresses that hold more
// than perAddr, or of all when none does. Stalls are found about stallAfter
// after their write began, so g goes at or near the tail.
func (b *stallBudget) add(g *sendGuard, start int64) (*sendGuard, int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.addLocked(g, start, true)
	return c.g, c.start, c.heavy
}

// list lists g, as add does, if its write that began at since (g.since
// as its timer read it) is still under way, negating g.since under b.mu:
// an end that swaps it for 0 before finds the write over here, and one
// after it unlists g once it is linked (its remove waits for b.mu).
// Negating it first and linking after let an end that came in between
// leave g listed with no write under way (counted for ever, and linked
// twice at its next stall). stalled: the write blocked for stallAfter
// (otherwise for behindAfter only: promote counts it later).
func (b *stallBudget) list(g *sendGuard, since int64, stalled bool) stallCut {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !g.since.CompareAndSwap(since, -since) {
		return stallCut{} // the write returned (and maybe another began)
	}
	return b.addLocked(g, since, stalled)
}

// promote counts g, listed for its write that began at start, as stalled:
// that write has blocked for stallAfter. Nothing if g was unlisted or
// listed again for a later write meanwhile, or is counted already.
func (b *stallBudget) promote(g *sendGuard, start int64) stallCut {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !g.listed || g.stalled || g.stallStart != start {
		return stallCut{}
	}
	g.stalled = true
	b.n++
	return b.overLocked()
}

// next gives up one more exchange while the budget is still over a bound:
// a cut exchange may have held less than the one whose listing passed
// maxHeld.
func (b *stallBudget) next() stallCut {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.overLocked()
}

// addLocked is list with b.mu held.
func (b *stallBudget) addLocked(g *sendGuard, start int64, stalled bool) stallCut {
	g.stallStart, g.listed, g.stalled = start, true, stalled
	c := b.clients[g.remote]
	if c == nil {
		k := stallAddrKey(g.remote)
		a := b.addrs[k]
		if a == nil {
			a = &stallClient{key: k}
			b.addrs[k] = a
		}
		c = &stallClient{addr: a}
		b.clients[g.remote] = c
	}
	g.client = c
	if c.n++; c.n == b.perClient+1 {
		b.heavy++
	}
	if c.addr.n++; c.addr.n == b.perAddr+1 {
		b.heavy++
	}
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
	if stalled {
		b.n++
	}
	b.held += g.held()
	return b.overLocked()
}

// overLocked unlists and returns the exchange to cut when the listed hold
// more than maxHeld or more than max are stalled, or none. b.mu is held.
func (b *stallBudget) overLocked() stallCut {
	var c stallCut
	if b.held > b.maxHeld {
		c = b.pickLocked(true)
	}
	if c.g == nil && b.n > b.max {
		c = b.pickLocked(false)
	}
	if c.g != nil {
		b.unlink(c.g)
	}
	return c
}

// pickLocked chooses the exchange to cut, the slow path of the slow path,
// only while the budget is over a bound; it scans the list at most once.
// Over max (bytes false): the stalled exchange whose write began first of
// the clients and addresses over their share, or of all when none is. Over
// maxHeld (bytes true): of the heavy clients' listed exchanges and the
// stalled ones, the heavy clients' first as well, then the one that may
// hold the most (sendGuard.held), the oldest blocked write among equals:
// the slowest reader, as its write blocks the longest, and cutting a small
// response frees little for the user who loses it. An exchange that is
// only behind (blocked for behindAfter, not stalled) of a client within
// its share is charged but not cut for bytes: a download bound by its
// client's link, however fast, blocks its writes for hundreds of
// milliseconds (stallbytes.go), and a gateway that serves more such
// downloads at once than max would have them cut at normal home speeds.
// None: nothing may be cut for bytes now (overLocked then looks at the
// count).
func (b *stallBudget) pickLocked(bytes bool) stallCut {
	var best *sendGuard
	bestHeavy := false
	for at := b.head; at != nil; at = at.next {
		heavy := b.heavy > 0 && (at.client.n > b.perClient || at.client.addr.n > b.perAddr)
		if !at.stalled && !(bytes && heavy) {
			continue
		}
		if best == nil || heavy && !bestHeavy || bytes && heavy == bestHeavy && at.held() > best.held() {
			best, bestHeavy = at, heavy
		}
		if (bestHeavy || b.heavy == 0) && (!bytes || best.held() == heldPerExchange) {
			break // nothing later comes first
		}
	}
	if best == nil {
		return stallCut{}
	}
	return stallCut{g: best, start: best.stallStart, heavy: bestHeavy, bytes: bytes}
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
	if g.stalled {
		g.stalled = false
		b.n--
	}
	b.held -= g.held()
	c := g.client
	g.client = nil
	if c.n == b.perClient+1 {
		b.heavy--
	}
	if c.n--; c.n == 0 {
		delete(b.clients, g.remote)
	}
	a := c.addr
	if a.n == b.perAddr+1 {
		b.heavy--
	}
	if a.n--; a.n == 0 {
		delete(b.addrs, a.key)
	}
}

// stalled is the number of stalled exchanges listed.
func (b *stallBudget) stalled() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// cutOver cuts c.g, which the budget gave up, if its write that began at
// c.start (tunnel.MonoNow) is still blocked: the write fails at once, as at
// the send timeout, and serveRelay ends the exchange (HTTP/1.1: the
// connection is closed; HTTP/2: the stream is reset; an upgrade: the
// connection is closed), which frees its tunnel stream, the response bytes
// buffered for it and the agent's side of it. Called without any guard's
// mu held.
func (b *stallBudget) cutOver(c stallCut) {
	g, start := c.g, c.start
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done || g.since.Load() != -start {
		return // the write returned: the client reads again
	}
	g.cutWrite()
	ok, suppressed := b.logs.allow(time.Now())
	if !ok {
		return
	}
	fields := []zap.Field{zap.Int("max_stalled_exchanges", b.max),
		zap.Duration("blocked", time.Duration(tunnel.MonoNow()-start)),
		zap.String("request_id", g.st.requestID), zap.String("remote", g.remote)}
	if c.bytes {
		fields = append(fields, zap.Int64("max_held_bytes", b.maxHeld))
	}
	if g.st.route != nil {
		fields = append(fields, zap.String("app", g.st.route.App))
	}
	if g.conn != nil {
		fields = append(fields, zap.Bool("upgraded", true))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int("similar_lines_suppressed", suppressed))
	}
	b.log.Info(cutMessage(c, b.perClient, b.perAddr), fields...)
}

// cutMessage is the log line of a cut exchange: which bound, whom it was
// cut from and, when no client held more than its share (the cut may be a
// user's download on a slow link, not an attacker's stream), what to do.
func cutMessage(c stallCut, perClient, perAddr int) string {
	msg := "client stopped reading: more exchanges are stalled on clients that do not read than public.max_stalled_exchanges; " +
		"cutting the one stalled longest"
	if c.bytes {
		msg = "client reads too slowly: the response bytes held for clients that read slower than their apps send passed " +
			"1 MiB per public.max_stalled_exchanges; cutting the slowest reader"
	}
	if c.heavy {
		return msg + " of a client that holds more than " + strconv.Itoa(perClient) +
			" on one connection or " + strconv.Itoa(perAddr) + " from one address"
	}
	return msg + "; if the gateway serves this many slow downloads at once on purpose, raise public.max_stalled_exchanges " +
		"(each allows about 1 MiB more on the gateway and on the agent)"
}
