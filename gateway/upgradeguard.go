package gateway

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// upgradeWriter is the ResponseWriter of an upgraded exchange (a
// WebSocket; the ReverseProxy path): the connection the ReverseProxy
// hijacks comes back as a sendGuardConn, so that the send timeout covers
// what the backend sends on an upgraded connection as sendGuard covers a
// response. Without it a client that stopped reading a WebSocket held it
// for ever: its tunnel stream, the flow-control windows of data behind it
// (a probe: 7-8.5 MB from the backend, on every transport) and the
// agent's backend connection.
type upgradeWriter struct {
	*statusRecorder
	timeout time.Duration
	conn    *sendGuardConn // set by Hijack, on the handler's goroutine
}

// Hijack takes over the connection through the recorder and guards its
// writes.
func (u *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := u.statusRecorder.Hijack()
	if err != nil {
		return c, rw, err
	}
	u.conn = &sendGuardConn{Conn: c, timeout: u.timeout}
	return u.conn, rw, nil
}

// cut reports whether the send timeout cut the upgraded connection.
func (u *upgradeWriter) cut() bool { return u.conn != nil && u.conn.cut.Load() }

// sendGuardConn is a hijacked client connection whose every write must
// return within timeout: each write sets the write deadline anew, so a
// connection that is idle, or that the client reads however slowly, is
// never cut, and one whose client stopped reading fails its write. The
// ReverseProxy then ends the exchange: it closes the client's connection
// and the tunnel stream. A write deadline per write costs a timer update;
// upgraded connections are not the hot path.
type sendGuardConn struct {
	net.Conn
	timeout time.Duration
	cut     atomic.Bool // a write failed at the timeout
}

func (c *sendGuardConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
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

// upgradeCut records an upgraded exchange that the send timeout cut.
func (h *proxyHandler) upgradeCut(st *exchangeState, remote string, timeout time.Duration) {
	st.errCode = CodeClientClosed
	fields := []zap.Field{zap.Duration("send_timeout", timeout), zap.String("request_id", st.requestID),
		zap.String("remote", remote)}
	if st.route != nil {
		fields = append(fields, zap.String("app", st.route.App))
	}
	h.g.log.Info("client stopped reading: a write to the upgraded connection blocked for the send timeout; cutting it", fields...)
}
