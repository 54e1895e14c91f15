package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// yamuxGateway is a gateway's tunnel listener for yamux on 127.0.0.1 that
// takes any client certificate: its sessions, and its log (the lines
// "agent is draining" and "agent session ended" say why).
type yamuxGateway struct {
	addr     string
	tls      *tls.Config // the agent's: trusts the gateway's certificate
	sessions chan tunnel.Session
	logged   chan struct{} // gets a value (if it has room) after each log line
	logs     *observer.ObservedLogs
}

func startYamuxGateway(t *testing.T, replicas uint32) *yamuxGateway {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	g := &yamuxGateway{sessions: make(chan tunnel.Session, 64), logged: make(chan struct{}, 1), logs: logs}
	// The hook runs after the observer recorded the entry.
	log := zap.New(core, zap.Hooks(func(zapcore.Entry) error {
		select {
		case g.logged <- struct{}{}:
		default:
		}
		return nil
	}))
	srv := &muxtunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{Group: "g", ConnectorID: "c1"}, nil
		},
		OnSession: func(s tunnel.Session) { g.sessions <- s },
		Replica:   "r1",
		Replicas:  func() uint32 { return replicas },
		Log:       log,
	}
	var cert tls.Certificate
	g.addr, cert = serveYamuxTunnel(t, srv, 9)
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	g.tls = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	return g
}

// serveYamuxTunnel serves srv as a gateway's yamux tunnel listener on
// 127.0.0.1 (TLS with a self-signed certificate of serial, any client
// certificate asked for) until the test ends. It returns the address and
// the certificate.
func serveYamuxTunnel(t *testing.T, srv *muxtunnel.Server, serial int64) (string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	serverTLS := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{yamuxtunnel.ALPN},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				tc := tls.Server(c, serverTLS)
				if tc.HandshakeContext(ctx) != nil {
					c.Close()
					return
				}
				mc, err := yamuxtunnel.ServerConn(tc, zap.NewNop())
				if err != nil {
					c.Close()
					return
				}
				_ = srv.ServeConn(ctx, mc, muxtunnel.TransportYamux)
				mc.Close("")
			})
		}
	})
	return ln.Addr().String(), cert
}

// endedWith waits for a session's end whose reason is want and fails the
// test if none comes (the ends before it are skipped).
func (g *yamuxGateway) endedWith(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		for _, e := range g.logs.FilterMessage("agent session ended").All() {
			if e.ContextMap()["reason"] == want {
				return
			}
		}
		select {
		case <-timeout:
			t.Fatalf("no session ended with reason %q; the gateway logged %v", want, g.logs.All())
		case <-g.logged:
		}
	}
}

// TestMovedSessionDrainSaysWhy: the gateway's log says why an agent
// drained a session: moving it after the gateway's drain (a rebalance),
// moving to another gateway replica (spread), or stopping. Every agent
// drain was logged "agent is draining {reason: agent shutting down}" and
// its end "drained by the agent (it is stopping)" (docwalk3 B10).
func TestMovedSessionDrainSaysWhy(t *testing.T) {
	t.Run("replaced after the gateway's drain", func(t *testing.T) {
		g := startYamuxGateway(t, 1)
		r := startAgent(t, Config{Gateway: g.addr, TLS: g.tls, Transport: TransportYamux, Connections: 1,
			Credentials: testCredentials(t, "c1"), RollPause: time.Millisecond}, func(zapcore.Entry) bool { return false })
		var first tunnel.Session
		select {
		case first = <-g.sessions:
		case <-time.After(20 * time.Second):
			t.Fatal("the agent did not connect")
		}
		if err := first.(interface{ SendDrain(string) error }).SendDrain("rebalancing"); err != nil {
			t.Fatal(err)
		}
		g.endedWith(t, "drained by the agent ("+drainReplace+")")
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		g.endedWith(t, "drained by the agent (it is stopping)")
		for _, e := range g.logs.FilterMessage("agent is draining").All() {
			if r := e.ContextMap()["reason"]; r != drainReplace && r != "agent shutting down" {
				t.Errorf("agent is draining with reason %q", r)
			}
		}
	})
	t.Run("moving to another replica", func(t *testing.T) {
		// The one listener says it is replica r1 of 2: an agent of two
		// connections lets the second session go and dials again.
		g := startYamuxGateway(t, 2)
		startAgent(t, Config{Gateway: g.addr, TLS: g.tls, Transport: TransportYamux, Connections: 2,
			Credentials: testCredentials(t, "c1")}, func(zapcore.Entry) bool { return false })
		g.endedWith(t, "drained by the agent ("+drainSpread+")")
		if !strings.HasPrefix(drainSpread, "moving to another gateway replica") {
			t.Errorf("drainSpread %q", drainSpread)
		}
	})
}
