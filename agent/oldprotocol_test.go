package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// TestYamuxRefusedByOlderGateway: a gateway older than the yamux
// transport offers only gRPC's TLS protocol (h2) and answers the agent's
// yamux protocol with no_application_protocol. The agent says that the
// gateway does not offer the transport and what to do, as an error, instead
// of the bare "tls: no application protocol" of a connection failure it
// used to log every 30 s.
func TestYamuxRefusedByOlderGateway(t *testing.T) {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if tls.Server(c, serverTLS).Handshake() == nil {
					t.Error("the handshake succeeded without the yamux protocol")
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(io.Discard, c) // until the agent hangs up: it reads the alert, not a reset
			})
		}
	})
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	logs, ok := runAgentUntil(t, Config{Gateway: ln.Addr().String(), TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13},
		Transport: TransportYamux, Connections: 1, Credentials: testCredentials(t, "c1")}, func(e zapcore.Entry) bool {
		return strings.Contains(e.Message, "does not offer the yamux transport")
	}, 20*time.Second)
	if !ok {
		t.Errorf("no line saying the gateway does not offer the yamux transport; logs: %v", logs.All())
	}
	for _, e := range logs.FilterMessageSnippet("does not offer the yamux transport").All() {
		if e.Level != zapcore.ErrorLevel || !strings.Contains(e.Message, "upgrade the gateway, or set transport: grpc") {
			t.Errorf("logged %s %q", e.Level, e.Message)
		}
	}
	if n := logs.FilterMessageSnippet("cannot connect to the gateway").Len(); n != 0 {
		t.Errorf("also logged as a plain connection failure: %v", logs.All())
	}
}

// TestIsProtocolRefused: no_application_protocol as each transport reports
// it, and alerts that are not it.
func TestIsProtocolRefused(t *testing.T) {
	alert := func(a tls.AlertError) error { return a }
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "remote error", Err: alert(120)}, true},
		{errors.New("dial gateway gw:8443 (yamux): remote error: tls: no application protocol"), true},
		{errors.New("connect to gateway gw:8443 (quic): CRYPTO_ERROR 0x178 (remote): tls: no application protocol"), true},
		{&net.OpError{Op: "local error", Err: alert(120)}, false},
		{&net.OpError{Op: "remote error", Err: alert(42)}, false},
		{nil, false},
	} {
		if got := isProtocolRefused(tt.err); got != tt.want {
			t.Errorf("isProtocolRefused(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
