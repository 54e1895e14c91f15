package tunneltest

import (
	"net"
	"sync/atomic"
	"testing"
)

// FreezeConn is one end of a path that can die silently: once frozen,
// what is written to it goes nowhere and what comes is read and dropped,
// both ways for good, and nothing tells the peer (no FIN, no RST: Close
// leaves the socket open until the test ends, so a keepalive that gives up
// on its side tells the other nothing either).
type FreezeConn struct {
	net.Conn
	t      testing.TB
	frozen atomic.Bool
}

// NewFreezeConn wraps c, which t's cleanup closes once the path froze.
func NewFreezeConn(t testing.TB, c net.Conn) *FreezeConn { return &FreezeConn{Conn: c, t: t} }

// Freeze kills the path.
func (c *FreezeConn) Freeze() { c.frozen.Store(true) }

func (c *FreezeConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if !c.frozen.Load() || err != nil {
			return n, err
		}
	}
}

func (c *FreezeConn) Write(p []byte) (int, error) {
	if c.frozen.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Close closes the connection, or, once the path froze, leaves that to the
// test's end.
func (c *FreezeConn) Close() error {
	if c.frozen.Load() {
		c.t.Cleanup(func() { c.Conn.Close() })
		return nil
	}
	return c.Conn.Close()
}
