package grpctunnel

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// pingConn is the connection gRPC's HTTP/2 runs on, on both ends (the
// TLS connection): it keeps a session that moves data alive on a slow
// link, and gives the agent keepalives shorter than gRPC's floor.
//
// Lifelines (both ends). A keepalive counts anything read from the peer as
// life, and only that: on a dead path writes go into the socket's buffer
// until it is full. A side that only sends on a slow, full link reads
// little: gRPC gives stream credit back every quarter of a stream's window
// (256 KiB) the peer took, 11 s apart at 192 kbit/s, and its own pings
// wait behind its queued data (a 1 MiB download took the whole 44 s). So
// it declared the path dead after keepalive + min(keepalive, 10s) without
// a read (10 s with a keepalive of 5 s; a probe: one 1 MiB download at 192
// kbit/s was cut at 256 KiB after 13 s). The side that receives knows that the path
// works: when it read at least lifelineMinRead bytes since it last wrote,
// and wrote nothing for lifelineEvery, it writes an unsolicited PING
// ACK (lifelineFrame), which the peer reads (a read for its keepalive and
// gRPC's) and otherwise ignores: gRPC drops an ACK that answers none of
// its pings (its BDP pings are off, the windows are fixed), and no ping
// strike is counted for an ACK (the gateway's enforcement policy). On a
// dead path nothing is read, so no lifeline goes out and the sender's
// keepalive ends the session as before. One 17-byte frame every 0.5 to
// 0.75 s, only while data comes in and nothing goes out; a lifeline alone
// (17 bytes) is less than lifelineMinRead, so two idle ends do not keep
// answering each other's.
//
// Own pings (the agent, keepalives below clientMinPingTime; every > 0).
// gRPC pings every 10 s at most, so an agent with a keepalive of 5 s
// noticed a silently dead path after 15 s instead of the 10 s its
// keepalive promises (and the gateway and the other transports keep).
// gRPC offers no way to send a ping of one's own, so pingConn sends HTTP/2
// PING frames itself between gRPC's frames and watches what is read, as
// gRPC's own keepalive does:
//
//   - a ping goes out when nothing was read for `every` (the keepalive;
//     anything read from the gateway counts: its answers, data, window
//     updates, lifelines, its own pings), so a busy session sends none and
//     an idle one one per keepalive, what the keepalive implies; two pings
//     are always at least `every` apart, and the gateway accepts them down
//     to every MinKeepalive. What is written is no sign of life (above);
//   - when nothing at all is read within `timeout` of asking for a ping,
//     the connection is closed, and gRPC ends the session with deadError.
//
// The gateway's gRPC answers the ping with a PING ACK, which the agent's
// gRPC reads and ignores (it is not one of its own pings). gRPC's own
// keepalive (every clientMinPingTime) stays on and finds nothing to do
// while these pings are answered.
//
// Writes: gRPC writes its frames through a buffer that may cut a frame
// between two writes, so pingConn follows the frame boundaries of what
// gRPC writes (frameCursor) and writes a frame of its own only at one: a
// ping at once when the connection is between frames, else right after
// gRPC's write that completes the frame under way; a lifeline only when
// no write of gRPC is under way (one that is tells the peer enough). A
// ping or a lifeline never waits in the goroutine that times the answer:
// a write stuck on a full socket buffer cannot hold the timeout back.
type pingConn struct {
	net.Conn // the TLS connection gRPC's HTTP/2 runs on

	every, timeout time.Duration // own pings; every 0: none (gRPC's keepalive pings)
	last           atomic.Int64  // when a Read last returned bytes (tunnel.MonoNow)
	got            atomic.Int64  // bytes read so far
	dead           atomic.Bool   // the keepalive closed the connection
	// peerEnded: a Read failed before Close, so the peer (or the network)
	// ended the connection, not this end (its gRPC's keepalive, Stop).
	peerEnded atomic.Bool

	mu      sync.Mutex  // serialises writes to Conn; guards the fields below
	cursor  frameCursor // where gRPC's bytes stand in the frame sequence
	pending bool        // a ping waits for the frame under way to be written
	asked   int64       // when the pending ping was asked for (as last)
	wroteAt int64       // when the last Write or lifeline returned (as last)
	// gotThen is got when the last Write or lifeline returned; written
	// under mu, read by Read.
	gotThen atomic.Int64
	// wrote is when the last ping (own or Probe's) was written (as last);
	// 0: none yet. Written under mu, read by Probe.
	wrote atomic.Int64

	// Lifelines are timed only while one is possible (pinger).
	ticking atomic.Bool   // the lifeline timer runs, or wake is set
	wake    chan struct{} // a read made a lifeline possible (capacity 1)
	// timer makes the lifelines' timer (nil: a time.Timer); clock
	// replaces tunnel.MonoNow (nil: it). Tests fake both.
	timer func() lifelineTimer
	clock func() int64

	kick      chan struct{} // a ping is due (capacity 1); read by pinger
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	onClose   func() // called once by Close or abort; nil: none

	probing atomic.Bool // a Probe's ping is asked for and not yet written or left pending
}

// pingFrame is an HTTP/2 PING (RFC 9113, 6.7): length 8, type 6, no flags,
// stream 0, and 8 bytes of opaque data that the ACK echoes.
var pingFrame = [...]byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 's', 'p', '-', 'a', 'l', 'i', 'v', 'e'}

// lifelineFrame is an unsolicited HTTP/2 PING ACK (flags 0x1): the peer
// reads it and answers nothing.
var lifelineFrame = [...]byte{0, 0, 8, 6, 1, 0, 0, 0, 0, 's', 'p', '-', 'a', 'l', 'i', 'v', 'e'}

// Lifelines (see pingConn): one goes out when lifelineMinRead bytes or
// more were read since the last write and nothing was written for
// lifelineEvery (and lifelineEvery/2 passed since the read that made it
// possible), so a side that receives data is heard from at least every
// 0.75 s, and every 0.5 s while data keeps coming. Two bounds: a peer with
// the shortest keepalive (MinKeepalive) ends a session after 10 s without
// a read; and the gateway's liveness watch sets a session aside when nothing
// comes from its agent within a second of a new exchange (liveness.go),
// whose probe waits behind the data on a link kept full towards the agent
// (an upload). With lifelines every 2.5 s (half MinKeepalive, which the
// first bound alone asks), a probe at 128 kbit/s, one 200 kB upload and a
// small request every 0.5 s: the session was set aside 4 times in 13.5 s
// (for 1.25 to 2.3 s each, in two runs alike); with 0.5 s, never. A
// lifeline costs about 90 bytes on the wire with TLS and TCP/IP, 1.4
// kbit/s on the way back while data flows one way on a slow link; on a
// fast one the receiver writes stream credit often enough that none goes
// out.
const (
	lifelineEvery   = 500 * time.Millisecond
	lifelineMinRead = 1 << 10
)

// http2PrefaceLen is the length of the client's connection preface ("PRI *
// HTTP/2.0\r\n\r\nSM\r\n\r\n"), which gRPC writes before its first frame.
const http2PrefaceLen = 24

// newPingConn wraps c, the connection of a session that has just shaken
// hands, and starts its goroutines; Close stops them. client: c is the
// agent's (its bytes start with the HTTP/2 preface). every 0: no pings of
// its own, only lifelines.
func newPingConn(c net.Conn, client bool, every, timeout time.Duration) *pingConn {
	p := &pingConn{
		Conn: c, every: every, timeout: timeout,
		kick: make(chan struct{}, 1), done: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	if client {
		p.cursor.preface = http2PrefaceLen
	}
	p.last.Store(p.now()) // the handshake just read from the peer
	p.wroteAt = p.now()
	go p.pinger()
	if every > 0 {
		go p.watch()
	}
	return p
}

func (p *pingConn) now() int64 {
	if p.clock != nil {
		return p.clock()
	}
	return tunnel.MonoNow()
}

func (p *pingConn) Read(b []byte) (int, error) {
	n, err := p.Conn.Read(b)
	if n > 0 {
		p.last.Store(p.now())
		if got := p.got.Add(int64(n)); got-p.gotThen.Load() >= lifelineMinRead &&
			!p.ticking.Load() && p.ticking.CompareAndSwap(false, true) {
			select {
			case p.wake <- struct{}{}: // start the lifelines' timer
			default:
			}
		}
	}
	if err != nil {
		select {
		case <-p.done: // this end closed it first
		default:
			p.peerEnded.Store(true)
		}
		if p.dead.Load() {
			err = p.deadError()
		}
	}
	return n, err
}

// endedHere reports whether this end closed the connection (Close or
// abort) before a Read saw the peer end it, and for how long nothing had
// been read then.
func (p *pingConn) endedHere() (time.Duration, bool) {
	select {
	case <-p.done:
	default:
		return 0, false
	}
	if p.peerEnded.Load() {
		return 0, false
	}
	return time.Duration(p.now() - p.last.Load()), true
}

// deadError is why the keepalive closed the connection; gRPC reports it
// as the end of the session ("error reading from server: …").
func (p *pingConn) deadError() error {
	return fmt.Errorf("keepalive: nothing from the gateway for %v after a ping (%v without a byte from it): "+
		"the network path is dead or the gateway hangs", p.timeout, p.every+p.timeout)
}

func (p *pingConn) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.Conn.Write(b)
	p.cursor.advance(b[:n])
	p.wroteAt = p.now()
	p.gotThen.Store(p.got.Load())
	if err == nil && p.pending && p.cursor.between() {
		p.pending = false
		if p.last.Load() <= p.asked {
			// Nothing was read since it was asked for: still needed.
			p.writePing()
		}
	}
	return n, err
}

// writePing writes one PING frame unless one went out less than every
// ago; p.mu is held and gRPC's bytes are between frames. The gateway's
// gRPC counts a strike for each ping within its minimum interval (5 s, the
// shortest keepalive) of the previous one, and ends the connection after
// three (GOAWAY too_many_pings); a ping left pending behind a frame and the
// next one asked for while that frame's write blocked would otherwise go
// out back to back. A failed write breaks the connection, which gRPC's
// next write or read reports.
func (p *pingConn) writePing() {
	now := p.now()
	if w := p.wrote.Load(); w != 0 && now-w < int64(p.every) {
		return
	}
	p.wrote.Store(now)
	_, _ = p.Conn.Write(pingFrame[:])
}

// Probe asks the agent for an answer (the gateway's liveness watch,
// ProbingPeer): a PING, which a live agent's gRPC answers with
// a PING ACK at once, ahead of its data; the ACK, like anything read, is
// counted by Received. It does not block: pinger writes the PING, at a
// frame boundary (as the agent's own pings are). One at a time: none
// while one is asked for or written and nothing was read since, so a dead
// agent gets one, and a live one at most one per round trip and per
// arming of the watch (once per exchange that finds it idle). The agent's
// gRPC counts no strikes for pings (a client enforces no policy); the
// gateway sends none of its own otherwise (gRPC's keepalive aside).
func (p *pingConn) Probe() {
	if w := p.wrote.Load(); w != 0 && p.last.Load() <= w {
		return // the last one is unanswered
	}
	if !p.probing.CompareAndSwap(false, true) {
		return
	}
	select {
	case p.kick <- struct{}{}:
	default: // the watch's ping is asked for (the agent's end): that one answers too
		p.probing.Store(false)
	}
}

// Received counts the bytes read from the peer (ProbingPeer).
func (p *pingConn) Received() uint64 { return uint64(p.got.Load()) }

// RTT is unknown (ProbingPeer): the watch's floor of a second holds.
func (p *pingConn) RTT() time.Duration { return 0 }

// ask writes a ping now if gRPC's bytes are between frames, else leaves it
// to the Write that completes the frame under way.
func (p *pingConn) ask() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cursor.between() {
		p.writePing()
		return
	}
	p.pending, p.asked = true, p.now()
}

// lifelineTimer times the lifelines (pingConn.timer).
type lifelineTimer struct {
	c     <-chan time.Time
	reset func(time.Duration) bool
	stop  func() bool
}

// newLifelineTimer makes p's lifeline timer, stopped.
func (p *pingConn) newLifelineTimer() lifelineTimer {
	if p.timer != nil {
		return p.timer()
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return lifelineTimer{t.C, t.Reset, t.Stop}
}

// pinger writes the pings asked for (watch's, Probe's), or leaves one to
// Write when a frame is under way, and the lifelines due, until Close.
// The lifeline timer runs only while a lifeline is possible
// (lifelineMinRead bytes or more read since the last write): a Read that
// makes one possible starts it, and it fires once per lifeline while data
// comes in and nothing goes out, or when the one it waited for is due and
// gRPC wrote meanwhile (it waits for the rest); once none is possible any
// more it stops. An idle connection has no timer, nor one whose gRPC
// answers reads of less than lifelineMinRead; one that reads that much
// between its writes wakes about twice a second. (A ticker of lifelineEvery/2 woke a connection
// that only received 5.6 times a second, 3.1 per lifeline; this timer 2.0
// times, 1.1 per lifeline.)
func (p *pingConn) pinger() {
	var t lifelineTimer       // made at the first lifeline possible
	var fire <-chan time.Time // t's while it runs; nil otherwise
	var seen int64            // got when the timer was set
	defer func() {
		if t.stop != nil {
			t.stop()
		}
	}()
	for {
		var wait time.Duration
		select {
		case <-p.done:
			return
		case <-p.kick:
			p.ask()
			p.probing.Store(false)
			continue
		case <-p.wake:
			wait = p.firstLifelineWait()
		case <-fire:
			var possible bool
			wait, possible = p.lifeline()
			if !possible && p.got.Load()-seen >= lifelineMinRead {
				// gRPC wrote, and data still comes at a lifeline's pace
				// (lifelineMinRead or more since the timer was set): look
				// again when the lifeline could be due rather than stop,
				// which the next read would undo (a wakeup more). Less
				// than that (small requests and answers) stops it, as a
				// read must bring lifelineMinRead to start it again.
				possible = true
			}
			if !possible {
				p.ticking.Store(false)
				// A Read that came as the timer stopped found it running
				// and did not wake it: look again.
				if p.got.Load()-p.gotThen.Load() < lifelineMinRead || !p.ticking.CompareAndSwap(false, true) {
					t.stop() // fired: nothing to stop but a test's count
					fire = nil
					continue
				}
				wait = p.firstLifelineWait()
			}
		}
		if t.stop == nil {
			t = p.newLifelineTimer()
		}
		fire, seen = t.c, p.got.Load()
		t.reset(wait)
	}
}

// firstLifelineWait is how long after a read that made a lifeline
// possible to look whether it is due: when nothing was written for
// lifelineEvery, but not before lifelineEvery/2, in which gRPC often
// answers what it read (and then no lifeline is needed).
func (p *pingConn) firstLifelineWait() time.Duration {
	if !p.mu.TryLock() {
		return lifelineEvery / 2 // gRPC is writing
	}
	defer p.mu.Unlock()
	return max(time.Duration(p.wroteAt+int64(lifelineEvery)-p.now()), lifelineEvery/2)
}

// lifeline writes a lifeline if lifelineMinRead bytes or more were read
// since the last write and nothing was written for lifelineEvery, unless
// gRPC is writing (its Write holds p.mu: it waits for the socket, so the
// peer has data to read) or stands inside a frame. It reports when to
// look again: when the next lifeline could be due (after the one that
// went out, or gRPC's last write; lifelineEvery/2 on while gRPC is
// writing or inside a frame), and whether one is possible without
// another read.
func (p *pingConn) lifeline() (time.Duration, bool) {
	if !p.mu.TryLock() {
		return lifelineEvery / 2, true
	}
	defer p.mu.Unlock()
	now := p.now()
	left := time.Duration(p.wroteAt + int64(lifelineEvery) - now)
	if p.got.Load()-p.gotThen.Load() < lifelineMinRead {
		return max(left, lifelineEvery/2), false
	}
	if left > 0 {
		return left, true
	}
	if !p.cursor.between() {
		return lifelineEvery / 2, true
	}
	_, _ = p.Conn.Write(lifelineFrame[:])
	p.wroteAt = p.now()
	p.gotThen.Store(p.got.Load())
	return lifelineEvery, true
}

// abort closes a connection the keepalive found dead: at once, without
// close_notify (tlsbatch.Conn.Abort), which would wait behind a full send
// buffer.
func (p *pingConn) abort() {
	p.closeOnce.Do(p.closed)
	if a, ok := p.Conn.(interface{ Abort() error }); ok {
		_ = a.Abort()
		return
	}
	_ = p.Conn.Close()
}

func (p *pingConn) Close() error {
	p.closeOnce.Do(p.closed)
	return p.Conn.Close()
}

// closed stops the goroutines and runs onClose; once.
func (p *pingConn) closed() {
	close(p.done)
	if p.onClose != nil {
		p.onClose()
	}
}

// watch asks for a ping after every without a read and closes the
// connection when nothing is read within timeout of asking.
func (p *pingConn) watch() {
	timer := time.NewTimer(p.every)
	defer timer.Stop()
	pinged := int64(-1) // when the ping under way was asked for; -1: none
	for {
		select {
		case <-p.done:
			return
		case <-timer.C:
		}
		now, last := p.now(), p.last.Load()
		if pinged >= 0 && last > pinged {
			pinged = -1 // answered, or something else came
		}
		switch {
		case pinged < 0 && now-last < int64(p.every):
			timer.Reset(time.Duration(last + int64(p.every) - now))
		case pinged < 0:
			pinged = now
			select {
			case p.kick <- struct{}{}:
			default: // the previous one is still waiting to be written
			}
			timer.Reset(p.timeout)
		case now-pinged < int64(p.timeout):
			timer.Reset(time.Duration(pinged + int64(p.timeout) - now))
		default:
			p.dead.Store(true)
			p.abort()
			return
		}
	}
}

// frameCursor follows an HTTP/2 byte stream written in arbitrary pieces:
// first the preface, then frames of a 9-byte header, whose first three
// bytes are the payload's length, and the payload.
type frameCursor struct {
	preface int     // bytes of the preface still to come
	frames  int     // frame headers read: the first is the client's SETTINGS
	header  [9]byte // the header being read
	got     int     // bytes of header read so far
	payload int     // bytes of the current frame's payload still to come
	// inBlock: a HEADERS or PUSH_PROMISE frame without END_HEADERS went
	// out, and its CONTINUATION frames must follow it with nothing between
	// (RFC 9113 section 6.10) until the one with END_HEADERS.
	inBlock bool
}

// advance moves the cursor past b.
func (c *frameCursor) advance(b []byte) {
	for len(b) > 0 {
		switch {
		case c.preface > 0:
			n := min(c.preface, len(b))
			c.preface -= n
			b = b[n:]
		case c.payload > 0:
			n := min(c.payload, len(b))
			c.payload -= n
			b = b[n:]
		default:
			n := copy(c.header[c.got:], b)
			c.got += n
			b = b[n:]
			if c.got == len(c.header) {
				c.got = 0
				c.frames++
				c.payload = int(c.header[0])<<16 | int(c.header[1])<<8 | int(c.header[2])
				switch c.header[3] { // type
				case 0x1, 0x5, 0x9: // HEADERS, PUSH_PROMISE, CONTINUATION
					c.inBlock = c.header[4]&0x4 == 0 // no END_HEADERS
				}
			}
		}
	}
}

// between reports whether the stream stands between two frames, past the
// preface and the client's first frame (SETTINGS must come first, RFC 9113
// section 3.4), where a frame may be inserted.
func (c *frameCursor) between() bool {
	return c.preface == 0 && c.frames > 0 && c.got == 0 && c.payload == 0 && !c.inBlock
}
