package grpctunnel_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/rawsock"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// TestAgentSocketOptions: the agent's socket keeps the system's
// TCP_USER_TIMEOUT (0) and holds at most notSentLowat unsent bytes. gRPC
// sets TCP_USER_TIMEOUT to its keepalive timeout (5 s with a keepalive of
// 5 s, 10 s by default), and a slow link whose receive window stayed shut
// for longer (a relay or proxy with a full buffer) ended a moving download
// with "read: connection timed out" (TestKeepaliveOneWayLink); the
// keepalive finds dead paths by what it reads instead; also on a connection
// that rawsock wraps, as the agent's are (gRPC does not recognise it, and a
// check for *net.TCPConn alone would leave TCP_NOTSENT_LOWAT unset). Without
// TCP_NOTSENT_LOWAT a download filled the send buffer and the agent's new
// idle streams waited behind it (TestKeepaliveSaturatedLink).
func TestAgentSocketOptions(t *testing.T) {
	ts := startServer(t, nil)
	for _, tt := range []struct {
		keepalive time.Duration
		wrap      bool
	}{{0, false}, {grpctunnel.MinKeepalive, false}, {grpctunnel.MinKeepalive, true}} {
		keepalive := tt.keepalive
		var tc *net.TCPConn
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		cs, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{
			Addr: ts.addr, TLS: ts.tls, Token: goodToken, MinIdle: 1, Keepalive: keepalive,
			Hello: &tunnelv1.Hello{Name: "test-agent", Version: "v-test", AgentId: "agent-1", Platform: "test/os"},
			DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				tc = c.(*net.TCPConn)
				if tt.wrap {
					c = rawsock.Wrap(c)
				}
				return c, nil
			},
		})
		cancel()
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		rc, err := tc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var ms, lowat int
		var gerr, gerr2 error
		if err := rc.Control(func(fd uintptr) {
			ms, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x12)     // TCP_USER_TIMEOUT
			lowat, gerr2 = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x19) // TCP_NOTSENT_LOWAT
		}); err != nil || gerr != nil || gerr2 != nil {
			t.Fatalf("read the socket options: %v %v %v", err, gerr, gerr2)
		}
		// Serve with a cancelled context ends the session.
		sctx, stop := context.WithCancel(context.Background())
		stop()
		_ = cs.Serve(sctx, &tunnel.Server{}, nil)
		if ms != 0 {
			t.Errorf("keepalive %v (0s: the default), wrapped by rawsock %v: the agent's socket has TCP_USER_TIMEOUT %d ms, want 0 (the system's): "+
				"data held back that long by a slow link ends the session", keepalive, tt.wrap, ms)
		}
		if lowat != 64<<10 {
			t.Errorf("keepalive %v, wrapped by rawsock %v: the agent's socket has TCP_NOTSENT_LOWAT %d, want %d: "+
				"a download fills the send buffer and the agent's new streams wait behind it", keepalive, tt.wrap, lowat, 64<<10)
		}
	}
}
