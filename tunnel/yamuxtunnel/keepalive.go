package yamuxtunnel

import (
	"net"
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
// Left: a side that only sends on a full slow link reads only the peer's
// window updates, every 512 KiB the peer took of a stream; when they come
// further apart than keepalive + min(keepalive, 10s) and its own ping's
// answer waits behind its queued data for longer than min(keepalive, 10s),
// it still ends the session (a probe, one 1 MiB download at 256 kbit/s
// and nothing else: the agent ended it after 10 s with a keepalive of 5 s,
// not with the default 15 s).
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
)

// lifeConn is the TLS connection under yamux (below its coalescingConn),
// noting when it last read bytes from the peer.
type lifeConn struct {
	net.Conn
	last atomic.Int64 // when a Read last returned bytes (tunnel.MonoNow)
}

func newLifeConn(c net.Conn) *lifeConn {
	lc := &lifeConn{Conn: c}
	lc.last.Store(lc.now()) // the handshake just read from the peer
	return lc
}

func (c *lifeConn) now() int64 { return tunnel.MonoNow() }

func (c *lifeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(c.now())
	}
	return n, err
}

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
