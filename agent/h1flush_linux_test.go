//go:build linux

package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
)

// TestH1SyncFreshConnBytesFirst: a backend that speaks first (a banner, as
// a database or mail server on a mistyped port does) and then waits
// silently for its own protocol. Its bytes arrive before the request is
// written; the fast path's wait would not see them and the exchange would
// last until its context ended. A fresh connection's first request takes
// the plain path, which reads them at once.
func TestH1SyncFreshConnBytesFirst(t *testing.T) {
	const banner = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nbanner"
	addr, _ := rawBackend(t, func(c net.Conn) {
		io.WriteString(c, banner)
		io.Copy(io.Discard, c) // the request, never answered
	})
	var d net.Dialer
	s := newTestH1Sync(t)
	s.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// Wait until the banner is in the socket, as it is when the
		// backend is quicker than the agent.
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			c.Close()
			return nil, err
		}
		var b [1]byte
		err = raw.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return n > 0 || err != syscall.EAGAIN
		})
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	_, body, err := roundTripBody(t, s, http.MethodGet, "http://"+addr+"/")
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the exchange waited until its context ended: the fast path missed the bytes that came first")
	}
	if err != nil || body != "banner" {
		t.Fatalf("got %q, %v; want what the backend sent", body, err)
	}
}
