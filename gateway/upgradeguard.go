package gateway

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
)

// upgradeWriter is the ResponseWriter of an upgraded exchange (a
// WebSocket; the ReverseProxy path): the connection the ReverseProxy
// hijacks comes back as a sendGuardConn, whose writes a sendGuard watches
// as it watches a relayed response's: a write to the client that blocks
// for the send timeout is cut, and one that blocks for a second counts
// against the budget of stalled exchanges (stallBudget), which cuts the
// longest stalled beyond it. Without the send timeout a client that
// stopped reading a WebSocket held it for ever: its tunnel stream, the
// flow-control windows of data behind it (a probe: 7-8.5 MB from the
// backend, on every transport) and the agent's backend connection.
// Without the budget many did for the send timeout: 100 WebSockets to an
// app that sends, whose client never read, held 114 MiB of the gateway's
// RSS and 56 MiB of the agent's, and 500 goroutines, for its 5 minutes.
//
// A backend that does not switch protocols (a 200 to a request that only
// says "Connection: Upgrade") has its response written through the
// embedded sendGuard, the exchange's, as a relayed response is: before,
// it went straight to the recorder, so that a client that added that
// header to any download and never read it was neither counted as stalled
// nor cut at the send timeout.
type upgradeWriter struct {
	*sendGuard                // the exchange's: the response, when the backend does not switch protocols
	conn       *sendGuardConn // set by Hijack, on the handler's goroutine
	// writeFailed: a write or flush to the client of a response that did
	// not switch protocols failed (the guard cut it, or the client left),
	// and the ReverseProxy aborts the handler, which is the client's
	// doing, not the tunnel's. Owned by the handler's goroutine.
	writeFailed bool
}

// Write writes the body of a response that did not switch protocols
// through the guard, and notes a failed write.
func (u *upgradeWriter) Write(p []byte) (int, error) {
	n, err := u.sendGuard.Write(p)
	if err != nil {
		u.writeFailed = true
	}
	return n, err
}

// FlushError flushes through the guard, and notes a failed flush. The
// ReverseProxy flushes with a ResponseController.
func (u *upgradeWriter) FlushError() error {
	err := u.sendGuard.FlushError()
	if err != nil {
		u.writeFailed = true
	}
	return err
}

// Hijack takes over the connection through the recorder and guards its
// writes.
func (u *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := u.statusRecorder.Hijack()
	if err != nil {
		return c, rw, err
	}
	u.conn = &sendGuardConn{Conn: c}
	u.conn.guard.init(u.h, u.statusRecorder, u.st, u.remote)
	u.conn.guard.conn = u.conn
	return u.conn, rw, nil
}

// release ends the guard of the hijacked connection once the ReverseProxy
// has returned (or panicked), and reports whether the send timeout or the
// stall budget cut the connection. The ReverseProxy returns when one
// direction of the copy ends, and closes the connection: the other, maybe
// writing still, ends with an error, and writes no more once released.
// The embedded sendGuard is the exchange's, which ServeHTTP releases.
func (u *upgradeWriter) release() (cut bool) {
	c := u.conn
	if c == nil {
		return false
	}
	_ = c.Conn.Close() // a write still blocked on it returns
	c.mu.Lock()
	c.released = true
	c.mu.Unlock()
	c.guard.release()
	return c.cut.Load()
}

// sendGuardConn is a hijacked client connection whose writes guard
// watches: a write that does not return within the send timeout, or that
// the stall budget cuts, fails (the guard sets a write deadline in the
// past). The ReverseProxy then ends the exchange: it closes the client's
// connection and the tunnel stream. A connection that is idle, or that the
// client reads however slowly, is never cut for its send timeout. The
// ReverseProxy writes from one goroutine (its copy from the backend), as
// the guard wants.
type sendGuardConn struct {
	net.Conn
	guard sendGuard
	cut   atomic.Bool // a write failed at its deadline

	mu       sync.Mutex // held by a write; serialises it with release
	released bool       // the exchange ended; guarded by mu
}

func (c *sendGuardConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return 0, net.ErrClosed
	}
	c.guard.begin()
	n, err := c.Conn.Write(p)
	c.guard.end()
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.cut.Store(true)
	}
	return n, err
}

// errNoHalfClose is what CloseWrite reports for a connection that cannot
// be half-closed; like any error, it makes the ReverseProxy end the
// exchange, as it does itself for such a connection.
var errNoHalfClose = errors.New("the client's connection cannot be half-closed")

// CloseWrite passes the backend's half-close on to the client.
func (c *sendGuardConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}
