package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
)

// TestQUICAgentHearsGatewayShutdown: a lone gateway shuts down (DrainAll,
// then its QUIC listener's context ends, then CloseAll: the gateway's order,
// back to back) while an agent has two QUIC sessions up. The agent logs the
// end of each as announced ("the gateway closed the session it drained",
// info), as over yamux and gRPC. Before the fix the gateway's
// CONNECTION_CLOSE made the agent's QUIC discard the Drain it had not read
// yet, and the agent logged "lost the gateway session; reconnecting" at
// WARN with "session ended: Application error 0x0 (remote)". The same
// over yamux, whose sessions the gateway now ends the same way.
func TestQUICAgentHearsGatewayShutdown(t *testing.T) {
	for _, transport := range []string{TransportQUIC, TransportYamux} {
		t.Run(transport, func(t *testing.T) {
			for round := range 8 {
				agentThroughShutdown(t, transport, round)
				if t.Failed() {
					return
				}
			}
		})
	}
}

func agentThroughShutdown(t *testing.T, transport string, round int) {
	srv := &muxtunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{Group: "g", ConnectorID: "c1"}, nil
		},
	}
	var (
		addr     string
		agentTLS *tls.Config
		stopMux  = func() {}
	)
	if transport == TransportQUIC {
		cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(cert.Leaf)
		agentTLS = &tls.Config{RootCAs: roots, ServerName: "localhost"}
		l := &quictunnel.Listener{Server: srv, TLS: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stopMux = cancel
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { _ = l.Serve(ctx, pc) })
		addr = pc.LocalAddr().String()
	} else {
		var cert tls.Certificate
		addr, cert = serveYamuxTunnel(t, srv, 9)
		roots := x509.NewCertPool()
		roots.AddCert(cert.Leaf)
		agentTLS = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	}

	const (
		drainedEnd = "the gateway closed the session it drained; reconnecting"
		lostEnd    = "lost the gateway session; reconnecting"
	)
	var ends, connected atomic.Int32
	allEnded, allConnected := make(chan struct{}), make(chan struct{})
	r := startAgent(t, Config{Gateway: addr, TLS: agentTLS, Transport: transport, Connections: 2, Credentials: testCredentials(t, "c1"),
		// No reconnect in the test's time: the gateway is gone.
		Backoff: Backoff{Min: time.Hour, Max: time.Hour}},
		func(e zapcore.Entry) bool {
			switch {
			case (e.Message == drainedEnd || e.Message == lostEnd) && ends.Add(1) == 2:
				close(allEnded)
			case e.Message == "connected to the gateway" && connected.Add(1) == 2:
				// Serve reads the Drain only once the slot is connected.
				close(allConnected)
			}
			return false
		})
	select {
	case <-allConnected:
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent's two sessions did not come up: %v", r.logs.All())
	}

	srv.DrainAll("gateway shutting down")
	stopMux()
	srv.CloseAll()
	select {
	case <-allEnded:
	case <-time.After(10 * time.Second):
		t.Fatalf("round %d: the agent did not log the end of both sessions: %v", round, r.logs.All())
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	for _, e := range r.logs.All() {
		switch {
		case e.Message == lostEnd:
			t.Errorf("round %d: the agent logged %s %q %v; want %q (info)", round, e.Level, e.Message, e.ContextMap(), drainedEnd)
		case e.Message == drainedEnd && e.Level != zapcore.InfoLevel:
			t.Errorf("round %d: %q logged at %s", round, e.Message, e.Level)
		}
	}
	if n := r.logs.FilterMessage("the gateway will end this session").Len(); n != 2 && !t.Failed() {
		t.Errorf("round %d: %d lines %q; want 2", round, n, "the gateway will end this session")
	}
}
