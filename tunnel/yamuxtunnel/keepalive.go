package yamuxtunnel

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// Keepalive. yamux's own keepalive pings every KeepAliveInterval and ends
// the session when the answer does not come within ConnectionWriteTimeout,
// which is also how long any frame may wait to be written. On a saturated
// slow link the answer waits behind everything queued before it (the
// peer's socket buffers, a router's queue): at 1 Mbit/s with two downloads
// under way a probe's small requests waited 5-12 s, so a keepalive of 5 s
// ended the session after 10 s and one of 15 s after 25 s, each time with
// every exchange on it, although the link was moving all along.
//
// So a session keeps alive here as gRPC's do: anything read from the peer
// shows that the path works. A ping goes out when nothing was read for the
// keepalive, and the session ends when nothing at all is read within
// min(keepalive, 10s) of it; a busy session, whose peer sends data, window
// updates or requests, sends no pings and is not ended for a late answer.
// A silently dead path is noticed after keepalive + min(keepalive, 10s),
// as before. What is written is no sign of life: on a dead path writes go
// into the socket's buffer until it is full, the pings too. yamux's
// keepalive is off and its write timeout is writeTimeout, which no longer
// finds dead paths.
//
// A side that only sends on a full slow link reads little: the peer's
// window updates, every 512 KiB the peer took of a stream (22 s apart at
// 192 kbit/s), and the answer to its own ping waits behind its queued
// data. It ended the session after keepalive + min(keepalive, 10s) without
// a read (a probe: one 1 MiB download at 256 kbit/s and nothing else, the
// agent ended it after 10 s with a keepalive of 5 s). So the side that
// receives says that it does: when it read at least lifelineMinRead bytes
// since it last wrote, and wrote nothing for lifelineEvery, it writes a
// lifeline, an unsolicited ping answer (lifelineFrame), which the peer
// reads and otherwise ignores (yamux looks the answer up among its own
// pings and finds none). On a dead path nothing is read, so no lifeline
// goes out and the sender's keepalive ends the session as before. One
// 12-byte frame every 2.5 to 3.75 s, only while data comes in and nothing
// goes out; a lifeline alone is less than lifelineMinRead, so two idle
// ends do not keep answering each other's. A peer of an older version
// ignores lifelines and sends none.
const (
	// maxPingTimeout bounds how long a ping may go without anything read
	// from the peer; shorter keepalives wait the keepalive itself.
	maxPingTimeout = 10 * time.Second
	// writeTimeout is how long a frame may wait to be written (yamux's
	// ConnectionWriteTimeout): a safety valve for a peer that still talks
	// but stopped reading, as the gateway's send_timeout for clients;
	// dead paths end the session by the keepalive first. Behind a frame
	// wait at most yamux's send queue and the socket buffers: 5 minutes
	// spares links above about 15 KB/s.
	writeTimeout = 5 * time.Minute

	// lifelineEvery is half the shortest keepalive a peer may have
	// (MinKeepalive); such a peer ends a session after twice that without
	// a read (10 s), and a side that receives data is heard from at least
	// every 3.75 s (lifelines are checked every lifelineEvery/2).
	lifelineEvery = MinKeepalive / 2
	// lifelineMinRead is what must be read since the last write for a
	// lifeline to go out: more than a few control frames.
	lifelineMinRead = 1 << 10
)

// lifelineFrame is a yamux ping answer (type 2, flag ACK) on stream 0 for
// a ping id that yamux does not use (its own count up from 0 by one per
// keepalive ping): the peer reads it and answers nothing.
var lifelineFrame = [...]byte{0, 2, 0, 2, 0, 0, 0, 0, 0x5a, 0x11, 0xa1, 0x1e}

// The agent's keepalive. The gateway's liveness watch (muxtunnel.LiveConn)
// closes a session whose agent sent nothing since an exchange went out for
// longer than a live agent stays silent: an agent acknowledges each new
// stream at once (yamux's window update with ACK, sent when it accepts the
// stream), and one that hears nothing at all (the path towards it stalls)
// pings after its keepalive. So the gateway must know that keepalive, which
// is the agent's setting (5 s to 2 min, need not match the gateway's). The
// agent says it in the very first frame it writes, before yamux's own: an
// unsolicited ping answer whose id is keepaliveMark in the top byte and the
// keepalive in milliseconds in the 24 bits below (keepaliveFrame). The
// gateway's lifeConn reads the first frame of the connection
// (lifeConn.readHead); yamux, there and on a gateway of an older version,
// looks the answer up among its own pings and ignores it, as it does
// lifelines. A gateway that read none (an agent of an older version)
// assumes maxPeerKeepalive.
const (
	// keepaliveMark tags a keepalive announcement's ping id: yamux counts
	// its own ids up from 0, one per ping, so it reaches 0x5b000000 after
	// 1.5 billion pings (a collision would only answer one ping early).
	keepaliveMark = 0x5b
	// maxPeerKeepalive is the longest keepalive an agent may have
	// (internal/config.MaxKeepalive): assumed of an agent that said none.
	maxPeerKeepalive = 2 * time.Minute
)

// keepaliveFrame is the announcement of a keepalive of every (see above).
func keepaliveFrame(every time.Duration) [yamuxHeaderLen]byte {
	ms := min(max(every.Milliseconds(), 0), 1<<24-1)
	f := [yamuxHeaderLen]byte{0, yamuxTypePing, 0, yamuxFlagACK}
	binary.BigEndian.PutUint32(f[8:], keepaliveMark<<24|uint32(ms))
	return f
}

// parseKeepaliveFrame returns the keepalive that f announces, or 0 when f
// is no announcement; an announced keepalive is bounded to MinKeepalive ..
// maxPeerKeepalive (an agent that claims less would only see its sessions
// closed sooner, but the watch's arithmetic wants no zero).
func parseKeepaliveFrame(f []byte) time.Duration {
	if len(f) != yamuxHeaderLen || f[0] != 0 || f[1] != yamuxTypePing || binary.BigEndian.Uint16(f[2:4]) != yamuxFlagACK ||
		binary.BigEndian.Uint32(f[4:8]) != 0 || f[8] != keepaliveMark {
		return 0
	}
	ms := binary.BigEndian.Uint32(f[8:]) & (1<<24 - 1)
	return min(max(time.Duration(ms)*time.Millisecond, MinKeepalive), maxPeerKeepalive)
}

// yamux's frame header (hashicorp/yamux const.go): version, type, flags
// (2 bytes), stream id (4), length (4); only a data frame (type 0) has a
// body, of length bytes.
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
	yamuxTypePing  = 2
	yamuxFlagACK   = 2
)

// lifeConn is the TLS connection under yamux (below its coalescingConn),
// noting when it last read bytes from the peer, and writing lifelines
// between yamux's frames (see the top of this file).
type lifeConn struct {
	net.Conn
	last atomic.Int64 // when a Read last returned bytes (tunnel.MonoNow)
	got  atomic.Int64 // bytes read so far

	// The first frame read (the agent's keepalive announcement, see
	// keepaliveFrame): head and headN are owned by Read (yamux's one
	// reader); peerKeepalive is what it announced, 0 while none was read.
	head          [yamuxHeaderLen]byte
	headN         int
	peerKeepalive atomic.Int64
	// deadFor is how long nothing had come from the peer when the
	// keepalive closed the session (0: it did not); set before the close.
	deadFor atomic.Int64

	mu      sync.Mutex  // serialises writes to Conn; guards the fields below
	cursor  frameCursor // where yamux's bytes stand in its frame sequence
	wroteAt int64       // when the last Write or lifeline returned (as last)
	gotThen int64       // got then
}

func newLifeConn(c net.Conn) *lifeConn {
	lc := &lifeConn{Conn: c}
	lc.last.Store(lc.now()) // the handshake just read from the peer
	lc.wroteAt = lc.now()
	return lc
}

func (c *lifeConn) now() int64 { return tunnel.MonoNow() }

func (c *lifeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(c.now())
		c.got.Add(int64(n))
		if c.headN < yamuxHeaderLen {
			c.readHead(p[:n])
		}
	}
	return n, err
}

// readHead notes the first yamuxHeaderLen bytes read, and the keepalive
// they announce if they do (see keepaliveFrame).
func (c *lifeConn) readHead(b []byte) {
	c.headN += copy(c.head[c.headN:], b)
	if c.headN == yamuxHeaderLen {
		c.peerKeepalive.Store(int64(parseKeepaliveFrame(c.head[:])))
	}
}

// Write writes a batch of coalescingConn's; it is no sign of life.
func (c *lifeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.cursor.advance(p[:n])
	c.wroteAt, c.gotThen = c.now(), c.got.Load()
	return n, err
}

// lifeline writes a lifeline if lifelineMinRead bytes or more were read
// since the last write and nothing was written for lifelineEvery, unless a
// batch is being written (it holds c.mu: it waits for the socket, so the
// peer has data to read) or yamux's bytes stand inside a frame. A failed
// write breaks the connection, which yamux's next write or read reports.
func (c *lifeConn) lifeline() {
	if !c.mu.TryLock() {
		return
	}
	defer c.mu.Unlock()
	if c.got.Load()-c.gotThen < lifelineMinRead || c.now()-c.wroteAt < int64(lifelineEvery) || !c.cursor.between() {
		return
	}
	_, _ = c.Conn.Write(lifelineFrame[:])
	c.wroteAt, c.gotThen = c.now(), c.got.Load()
}

// lifelines writes c's lifelines, checking every lifelineEvery/2, until s
// is closed.
func lifelines(s *yamux.Session, c *lifeConn) {
	tick := time.NewTicker(lifelineEvery / 2)
	defer tick.Stop()
	for {
		select {
		case <-s.CloseChan():
			return
		case <-tick.C:
		}
		c.lifeline()
	}
}

// frameCursor follows yamux's byte stream written in arbitrary pieces.
type frameCursor struct {
	header [yamuxHeaderLen]byte // the header being read
	got    int                  // bytes of header read so far
	body   int                  // bytes of the current data frame's body still to come
}

// advance moves the cursor past b.
func (c *frameCursor) advance(b []byte) {
	for len(b) > 0 {
		if c.body > 0 {
			n := min(c.body, len(b))
			c.body -= n
			b = b[n:]
			continue
		}
		n := copy(c.header[c.got:], b)
		c.got += n
		b = b[n:]
		if c.got == len(c.header) {
			c.got = 0
			if c.header[1] == yamuxTypeData {
				c.body = int(binary.BigEndian.Uint32(c.header[8:12]))
			}
		}
	}
}

// between reports whether the stream stands between two frames.
func (c *frameCursor) between() bool { return c.got == 0 && c.body == 0 }

// keepalive pings s when c read nothing for every and closes s when c
// reads nothing within timeout of a ping; it returns when s is closed.
func keepalive(s *yamux.Session, c *lifeConn, every, timeout time.Duration, log *zap.Logger) {
	timer := time.NewTimer(every)
	defer timer.Stop()
	var pinging atomic.Bool // a Ping waits for its answer
	pinged := int64(-1)     // when the ping under way went out; -1: none
	for {
		select {
		case <-s.CloseChan():
			return
		case <-timer.C:
		}
		now, last := c.now(), c.last.Load()
		if pinged >= 0 && last > pinged {
			pinged = -1 // answered, or something else came
		}
		switch {
		case pinged < 0 && now-last < int64(every):
			timer.Reset(time.Duration(last + int64(every) - now))
		case pinged < 0:
			pinged = now
			// The answer is read by yamux's reader and noted by c;
			// Ping's own wait (writeTimeout) does not matter here.
			if pinging.CompareAndSwap(false, true) {
				go func() {
					defer pinging.Store(false)
					_, _ = s.Ping()
				}()
			}
			timer.Reset(timeout)
		case now-pinged < int64(timeout):
			timer.Reset(time.Duration(pinged + int64(timeout) - now))
		default:
			log.Info("keepalive: nothing from the peer after a ping; closing the session: the network path is dead or the peer hangs",
				zap.Duration("ping_timeout", timeout), zap.Duration("silent_for", time.Duration(now-last)))
			c.deadFor.Store(max(now-last, 1))
			if a, ok := c.Conn.(interface{ Abort() error }); ok {
				// At once, without close_notify, which would wait behind
				// a full send buffer (tlsbatch.Conn.Abort).
				_ = a.Abort()
			}
			_ = s.Close()
			return
		}
	}
}
