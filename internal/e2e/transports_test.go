package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// gatedUDP is the UDP socket of an agent's QUIC session on a network that
// drops every datagram while the gate is closed (UDP blocked by a
// firewall). It wraps the socket without embedding it, so quic-go cannot
// bypass WriteTo.
type gatedUDP struct {
	c       *net.UDPConn
	blocked *atomic.Bool
	opened  *atomic.Int64
}

func (g gatedUDP) ReadFrom(b []byte) (int, net.Addr, error) { return g.c.ReadFrom(b) }
func (g gatedUDP) WriteTo(b []byte, a net.Addr) (int, error) {
	if g.blocked.Load() {
		return len(b), nil // dropped on the way
	}
	return g.c.WriteTo(b, a)
}
func (g gatedUDP) Close() error                       { return g.c.Close() }
func (g gatedUDP) LocalAddr() net.Addr                { return g.c.LocalAddr() }
func (g gatedUDP) SetDeadline(t time.Time) error      { return g.c.SetDeadline(t) }
func (g gatedUDP) SetReadDeadline(t time.Time) error  { return g.c.SetReadDeadline(t) }
func (g gatedUDP) SetWriteDeadline(t time.Time) error { return g.c.SetWriteDeadline(t) }
func (g gatedUDP) SetReadBuffer(n int) error          { return g.c.SetReadBuffer(n) }
func (g gatedUDP) SetWriteBuffer(n int) error         { return g.c.SetWriteBuffer(n) }

func gatedListen(blocked *atomic.Bool, opened *atomic.Int64) func() (net.PacketConn, error) {
	return func() (net.PacketConn, error) {
		opened.Add(1)
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		return gatedUDP{c: c, blocked: blocked, opened: opened}, nil
	}
}

func echoRig(t *testing.T, transport string) *testrig.Rig {
	backend := startLoopbackBackend(t, demoapp.New())
	return testrig.New(t, testrig.Options{Transport: transport, Routes: []gateway.Route{
		{App: "echo", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
}

func echoOK(t *testing.T, rig *testrig.Rig, c *http.Client, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		body := fmt.Sprintf("exchange %d", i)
		if err := checkSmallEcho(c, appRequest(t, ctx, "POST", rig.URL+"/echo", strings.NewReader(body)), body); err != nil {
			t.Fatal(err)
		}
	}
}

// transportsOf returns the transports of group's live sessions.
func transportsOf(rig *testrig.Rig) map[string]int {
	out := map[string]int{}
	for _, s := range rig.G.Registry().Sessions() {
		if !s.Draining {
			out[s.Transport]++
		}
	}
	return out
}

// TestProxyCarriesAllTunnelTraffic: with `proxy` set, every session of the
// TCP transports reaches the gateway through the CONNECT proxy (the
// gateway sees the proxy's upstream connections as the agent), and `auto`
// goes straight to gRPC through it, even with UDP blocked, and says why.
func TestProxyCarriesAllTunnelTraffic(t *testing.T) {
	for _, transport := range []string{"grpc", "yamux", "auto"} {
		t.Run(transport, func(t *testing.T) {
			rig := echoRig(t, transport)
			proxy := testrig.StartConnectProxy(t, testrig.ProxyOptions{User: "agent", Pass: "pr0xy-Secret-91"})
			core, logs := observer.New(zapcore.InfoLevel)
			var blocked atomic.Bool
			blocked.Store(true)
			var udpOpened atomic.Int64
			rig.StartAgent(func(c *agent.Config) {
				c.Connections = 2
				c.Proxy = proxy.URL("agent", "pr0xy-Secret-91")
				c.ListenPacket = gatedListen(&blocked, &udpOpened)
				c.Log = zap.New(core)
			})
			echoOK(t, rig, rig.Client(), 20)
			sessions := rig.G.Registry().Sessions()
			// One tunnel per session, and one for the agent's enrollment.
			if len(sessions) != 2 || len(proxy.Carried()) != 3 {
				t.Fatalf("%d sessions, %d proxy tunnels; want 2 and 3 (2 sessions, 1 enrollment)", len(sessions), len(proxy.Carried()))
			}
			want := transport
			if transport == "auto" {
				want = "grpc"
			}
			for _, s := range sessions {
				if !proxy.CarriedFrom(s.RemoteAddr) {
					t.Errorf("session %s from %s did not come through the proxy", s.ID, s.RemoteAddr)
				}
				if s.Transport != want {
					t.Errorf("session transport %q, want %q", s.Transport, want)
				}
			}
			if transport == "auto" {
				if udpOpened.Load() != 0 {
					t.Errorf("auto with a proxy tried QUIC %d times", udpOpened.Load())
				}
				if logs.FilterMessageSnippet("QUIC cannot pass an HTTP proxy").Len() == 0 {
					t.Error("auto did not log why it uses gRPC")
				}
			}
			for _, e := range logs.All() {
				if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), "pr0xy-Secret-91") {
					t.Errorf("the proxy password is in the agent log: %s %v", e.Message, e.ContextMap())
				}
			}
		})
	}
}

// TestProxyRefusals: a proxy that refuses the CONNECT (wrong credentials,
// policy, its own failure) gives an agent error naming the proxy, without
// its password, and the proxy's answer.
func TestProxyRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pass   string
		status int
		want   string
	}{
		{"wrong password", "wrong-Secret-55", 0, "407 Proxy Authentication Required"},
		{"forbidden", "pr0xy-Secret-91", http.StatusForbidden, "403 Forbidden"},
		{"bad gateway", "pr0xy-Secret-91", http.StatusBadGateway, "502 Bad Gateway"},
		{"unavailable", "pr0xy-Secret-91", http.StatusServiceUnavailable, "503 Service Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := echoRig(t, "grpc")
			proxy := testrig.StartConnectProxy(t, testrig.ProxyOptions{User: "agent", Pass: "pr0xy-Secret-91", Refuse: tc.status})
			core, logs := observer.New(zapcore.InfoLevel)
			cfg := rig.AgentConfig()
			cfg.Proxy = proxy.URL("agent", tc.pass)
			cfg.Log = zap.New(core)
			a, err := agent.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			deadline := time.Now().Add(10 * time.Second)
			for logs.FilterMessageSnippet("outbound proxy refused").Len() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no log of the proxy's refusal")
				}
				time.Sleep(5 * time.Millisecond) // polling the log; the agent has no event for it
			}
			e := logs.FilterMessageSnippet("outbound proxy refused").All()[0]
			msg := fmt.Sprint(e.ContextMap()["error"])
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, proxy.Addr()) {
				t.Errorf("error %q; want the proxy's address and %q", msg, tc.want)
			}
			if strings.Contains(msg, tc.pass) {
				t.Errorf("error %q shows the proxy password", msg)
			}
			if n := rig.G.Registry().Count(testrig.Group); n != 0 {
				t.Errorf("%d sessions despite the refusal", n)
			}
		})
	}
}

// TestAutoFallsBackAndReturns: with UDP blocked, `auto` gives up on QUIC
// after QUICFallback and connects over gRPC; once UDP passes again the
// background retry finds QUIC working and every session moves to it, each
// switch logged with its reason, and traffic flows throughout.
func TestAutoFallsBackAndReturns(t *testing.T) {
	rig := echoRig(t, "auto")
	core, logs := observer.New(zapcore.InfoLevel)
	var blocked atomic.Bool
	blocked.Store(true)
	var udpOpened atomic.Int64
	rig.StartAgent(func(c *agent.Config) {
		c.Connections = 2
		c.QUICFallback = 300 * time.Millisecond
		c.QUICRetry = 200 * time.Millisecond
		c.ListenPacket = gatedListen(&blocked, &udpOpened)
		c.Log = zap.New(core)
	})
	c := rig.Client()
	if got := transportsOf(rig); got["grpc"] != 2 {
		t.Fatalf("with UDP blocked: sessions %v; want 2 over grpc", got)
	}
	echoOK(t, rig, c, 10)
	if logs.FilterMessageSnippet("transport switch: QUIC → gRPC").Len() == 0 {
		t.Error("the fallback to gRPC was not logged")
	}

	blocked.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for got := transportsOf(rig); got["quic"] != 2 || got["grpc"] != 0; got = transportsOf(rig) {
		if time.Now().After(deadline) {
			t.Fatalf("after UDP came back: sessions %v; want 2 over quic", got)
		}
		time.Sleep(10 * time.Millisecond) // polling the registry; it has no event for it
	}
	echoOK(t, rig, c, 10)
	if logs.FilterMessageSnippet("transport switch: gRPC → QUIC").Len() == 0 {
		t.Error("the move back to QUIC was not logged")
	}
}

// TestAgentTransports: an agent set to each transport reports it in its
// hello, and the gateway's session says so.
func TestAgentTransports(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			rig := echoRig(t, transport)
			rig.StartAgent(nil)
			echoOK(t, rig, rig.Client(), 3)
			if got := transportsOf(rig); got[transport] != 1 || len(got) != 1 {
				t.Fatalf("sessions %v; want one over %s", got, transport)
			}
		})
	}
}

// TestTunnelPortBadClients: on the tunnel's TCP port, clients that do not
// speak TLS, or speak TLS but then not the protocol their ALPN named, or
// ask for an unknown protocol, are disconnected promptly; agents of every
// transport still connect afterwards.
func TestTunnelPortBadClients(t *testing.T) {
	rig := echoRig(t, "grpc")
	tlsFor := func(alpn string) *tls.Config {
		return &tls.Config{RootCAs: rig.Roots, ServerName: "localhost", NextProtos: []string{alpn}}
	}
	closedSoon := func(name string, c net.Conn) {
		t.Helper()
		c.SetDeadline(time.Now().Add(15 * time.Second)) // hang guard; the gateway closes well before
		_, err := io.Copy(io.Discard, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the gateway kept the connection open", name)
		}
		c.Close()
	}
	// Not TLS at all.
	c, err := net.Dial("tcp", rig.Tunnel)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	closedSoon("plain HTTP", c)
	// TLS, then garbage instead of yamux or HTTP/2.
	for _, alpn := range []string{"sallyport-yamux/1", "h2"} {
		tc, err := tls.Dial("tcp", rig.Tunnel, tlsFor(alpn))
		if err != nil {
			t.Fatalf("%s: %v", alpn, err)
		}
		if got := tc.ConnectionState().NegotiatedProtocol; got != alpn {
			t.Fatalf("ALPN %q negotiated as %q", alpn, got)
		}
		io.WriteString(tc, strings.Repeat("garbage that is no protocol at all\n", 100))
		closedSoon(alpn+" garbage", tc)
	}
	// An unknown protocol fails the handshake itself.
	if _, err := tls.Dial("tcp", rig.Tunnel, tlsFor("spdy/3")); err == nil || !strings.Contains(err.Error(), "no application protocol") {
		t.Errorf("unknown ALPN: %v", err)
	}
	for _, transport := range testrig.Transports {
		rig.StartAgent(func(c *agent.Config) { c.Transport = transport })
	}
	echoOK(t, rig, rig.Client(), 3)
}
