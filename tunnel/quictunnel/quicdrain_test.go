package quictunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/selfsigned"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
)

// TestShutdownDrainReachesQUICAgents: a gateway that shuts down (the
// gateway's order: DrainAll, then the listener's context ends, then
// CloseAll) with two QUIC sessions up: each agent reads the Drain before
// its session ends, so it takes the end as announced (INFO, no WARN), as
// yamux and gRPC agents do. Without the fix the gateway closed the QUIC
// connection at once, and the agent's QUIC discarded the Drain it had
// received but not yet read: the session ended with "Application error
// 0x0 (remote)" and no Drain, and the agent logged "lost the gateway
// session" at WARN. Several rounds, since the loss depended on timing.
func TestShutdownDrainReachesQUICAgents(t *testing.T) {
	for round := range 25 {
		shutdownWithTwoSessions(t, round)
		if t.Failed() {
			return
		}
	}
}

func shutdownWithTwoSessions(t *testing.T, round int) {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	gwCore, gwLogs := observer.New(zapcore.DebugLevel)
	sessions := make(chan tunnel.Session, 2)
	srv := &muxtunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{Group: "default"}, nil
		},
		OnSession: func(ss tunnel.Session) { sessions <- ss },
		Log:       zap.New(gwCore),
	}
	l := &quictunnel.Listener{Server: srv, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	stopMux, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- l.Serve(stopMux, pc) }()

	backend := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) {
		return nil, errors.New("no backend in this test")
	}}
	type agent struct {
		cs      *muxtunnel.ClientSession
		logs    *observer.ObservedLogs
		err     error
		drained bool // Drained was closed when Serve returned
	}
	agents := make([]*agent, 2)
	var wg sync.WaitGroup
	for i := range agents {
		core, logs := observer.New(zapcore.DebugLevel)
		ctx, dialCancel := context.WithTimeout(context.Background(), hangGuard)
		cs, err := quictunnel.Dial(ctx, quictunnel.DialConfig{Addr: pc.LocalAddr().String(),
			TLS: &tls.Config{RootCAs: roots, ServerName: "localhost"}, Token: goodToken, Log: zap.New(core)})
		dialCancel()
		if err != nil {
			t.Fatal(err)
		}
		a := &agent{cs: cs, logs: logs}
		agents[i] = a
		wg.Go(func() {
			a.err = a.cs.Serve(context.Background(), backend, nil)
			select {
			case <-a.cs.Drained():
				a.drained = true
			default:
			}
		})
		<-sessions
	}

	// The gateway's shutdown, its steps back to back (a lone gateway
	// whose users had no exchange in flight).
	srv.DrainAll("gateway shutting down")
	cancel()
	srv.CloseAll()
	wg.Wait()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}

	for i, a := range agents {
		if !a.drained {
			t.Errorf("round %d, agent %d: its session ended without the gateway's Drain: %v", round, i, a.err)
		}
		heard := a.logs.FilterMessage("the gateway will end this session").FilterField(zap.String("reason", "gateway shutting down"))
		if heard.Len() != 1 {
			t.Errorf("round %d, agent %d: %d lines %q with the reason; want 1", round, i, heard.Len(), "the gateway will end this session")
		}
		for _, e := range a.logs.All() {
			if e.Level >= zapcore.WarnLevel {
				t.Errorf("round %d, agent %d logged at %s: %s %v", round, i, e.Level, e.Message, e.ContextMap())
			}
		}
	}
	if t.Failed() {
		for _, e := range gwLogs.All() {
			t.Logf("gateway: %s %s %v", e.Level, e.Message, e.ContextMap())
		}
	}
}
