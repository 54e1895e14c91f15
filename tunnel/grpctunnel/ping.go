package grpctunnel

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// pingConn gives the agent keepalives shorter than gRPC's floor for a
// client's pings (clientMinPingTime): gRPC pings every 10 s at most, so an
// agent with a keepalive of 5 s noticed a silently dead path after 15 s
// instead of the 10 s its keepalive promises (and the gateway and the other
// transports keep). gRPC offers no way to send a ping of one's own, so
// pingConn sends HTTP/2 PING frames itself on the connection gRPC runs on,
// between gRPC's frames, and watches what is read, as gRPC's own keepalive
// does:
//
//   - a ping goes out when nothing was read for `every` (the keepalive;
//     anything read from the gateway counts: its answers, data, window
//     updates, its own pings), so a busy session sends none and an idle
//     one one per keepalive, what the keepalive implies; two pings are
//     always at least `every` apart, and the gateway accepts them down to
//     every MinKeepalive. What is written is no sign of life: on a dead
//     path writes go into the socket's buffer until it is full, the pings
//     too;
//   - when nothing at all is read within `timeout` of asking for a ping,
//     the connection is closed, and gRPC ends the session with deadError.
//
// The gateway's gRPC answers the ping with a PING ACK, which the agent's
// gRPC reads and ignores (it is not one of its own pings).
//
// Writes: gRPC writes its frames through a buffer that may cut a frame
// between two writes, so pingConn follows the frame boundaries of what
// gRPC writes (frameCursor) and writes a ping only at one: at once when
// the connection is between frames, else right after gRPC's write that
// completes the frame under way. A ping never waits in the goroutine that
// times the answer: a write stuck on a full socket buffer cannot hold the
// timeout back.
//
// Used only for keepalives below clientMinPingTime; gRPC's own keepalive
// (every clientMinPingTime) stays on and finds nothing to do while these
// pings are answered.
type pingConn struct {
	net.Conn // the TLS connection gRPC's HTTP/2 runs on

	every, timeout time.Duration
	last           atomic.Int64 // when a Read last returned bytes (tunnel.MonoNow)
	dead           atomic.Bool  // the keepalive closed the connection

	mu      sync.Mutex  // serialises writes to Conn; guards the fields below
	cursor  frameCursor // where gRPC's bytes stand in the frame sequence
	pending bool        // a ping waits for the frame under way to be written
	asked   int64       // when the pending ping was asked for (as last)
	wrote   int64       // when the last ping was written (as last); 0: none yet
	written bool        // a ping was written

	kick      chan struct{} // a ping is due (capacity 1); read by pinger
	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

// pingFrame is an HTTP/2 PING (RFC 9113, 6.7): length 8, type 6, no flags,
// stream 0, and 8 bytes of opaque data that the ACK echoes.
var pingFrame = [...]byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 's', 'p', '-', 'a', 'l', 'i', 'v', 'e'}

// http2PrefaceLen is the length of the client's connection preface ("PRI *
// HTTP/2.0\r\n\r\nSM\r\n\r\n"), which gRPC writes before its first frame.
const http2PrefaceLen = 24

// newPingConn wraps c, the connection of a session that has just shaken
// hands, and starts its goroutines; Close stops them.
func newPingConn(c net.Conn, every, timeout time.Duration) *pingConn {
	p := &pingConn{
		Conn: c, every: every, timeout: timeout,
		cursor: frameCursor{preface: http2PrefaceLen},
		kick:   make(chan struct{}, 1), done: make(chan struct{}),
	}
	p.last.Store(p.now()) // the handshake just read from the gateway
	go p.watch()
	go p.pinger()
	return p
}

func (p *pingConn) now() int64 { return tunnel.MonoNow() }

func (p *pingConn) Read(b []byte) (int, error) {
	n, err := p.Conn.Read(b)
	if n > 0 {
		p.last.Store(p.now())
	}
	if err != nil && p.dead.Load() {
		err = p.deadError()
	}
	return n, err
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
	if p.written && now-p.wrote < int64(p.every) {
		return
	}
	p.written, p.wrote = true, now
	_, _ = p.Conn.Write(pingFrame[:])
}

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

// abort closes a connection the keepalive found dead: at once, without
// close_notify (tlsbatch.Conn.Abort), which would wait behind a full send
// buffer.
func (p *pingConn) abort() {
	p.closeOnce.Do(func() { close(p.done) })
	if a, ok := p.Conn.(interface{ Abort() error }); ok {
		_ = a.Abort()
		return
	}
	_ = p.Conn.Close()
}

func (p *pingConn) Close() error {
	p.closeOnce.Do(func() { close(p.done) })
	return p.Conn.Close()
}

// pinger writes the pings watch asks for, or leaves one to Write when a
// frame is under way.
func (p *pingConn) pinger() {
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
		}
		p.ask()
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
			}
		}
	}
}

// between reports whether the stream stands between two frames, past the
// preface and the client's first frame (SETTINGS must come first, RFC 9113
// section 3.4), where a frame may be inserted.
func (c *frameCursor) between() bool {
	return c.preface == 0 && c.frames > 0 && c.got == 0 && c.payload == 0
}
