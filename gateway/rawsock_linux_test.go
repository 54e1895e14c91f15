package gateway

import (
	"net"
	"testing"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/rawsock"
)

// TestListenersRaw: on Linux the public server's connections (with and
// without max_connections) and the tunnel's TCP connections are rawsock's,
// whose reads and writes skip the scheduler's system-call state.
func TestListenersRaw(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Listener) net.Listener
	}{
		{"public", func(l net.Listener) net.Listener { return publicListener(l, 0, zap.NewNop()) }},
		{"public, max_connections 2", func(l net.Listener) net.Listener { return publicListener(l, 2, zap.NewNop()) }},
		{"tunnel", tunnelTCPListener},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := tc.wrap(inner)
			defer ln.Close()
			dialed := make(chan net.Conn, 1)
			go func() {
				c, _ := net.Dial("tcp", inner.Addr().String())
				dialed <- c
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if d := <-dialed; d != nil {
				d.Close()
			}
			if lc, ok := c.(*limitConn); ok {
				c = lc.Conn
			}
			if _, ok := c.(*rawsock.Conn); !ok {
				t.Errorf("accepted a %T, want a *rawsock.Conn", c)
			}
		})
	}
}
