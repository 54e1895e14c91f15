package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// refusingGateway listens like a gateway's tunnel (TCP for gRPC and yamux,
// UDP for QUIC) on 127.0.0.1 and refuses every client certificate in the
// TLS handshake, as a gateway whose connector CA is not the agent's does
// (its store was replaced). It returns the address and the agent's TLS
// config that trusts its certificate.
func refusingGateway(t *testing.T) (string, *tls.Config) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	addr, leaf := handshakeGateway(t, tmpl, func(c *tls.Config) {
		c.ClientAuth = tls.RequireAnyClientCert
		// As the gateway's verifyTunnelConn does for a certificate of
		// another connector CA: crypto/tls then sends bad_certificate.
		c.VerifyConnection = func(tls.ConnectionState) error { return errors.New("client certificate not trusted") }
	})
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
}

// handshakeGateway listens like a gateway's tunnel (TCP for gRPC and yamux,
// UDP for QUIC, one port number for both, as a gateway has) on 127.0.0.1
// with a self-signed certificate made from tmpl (its names and serial; the
// validity and CA fields are set here), configured further by configure,
// and expects every TLS handshake with it to fail on the agent's side. It
// returns the address and the certificate.
func handshakeGateway(t *testing.T, tmpl *x509.Certificate, configure func(*tls.Config)) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2", yamuxtunnel.ALPN},
	}
	configure(serverTLS)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	// A free TCP port whose UDP twin is taken is given back and another
	// one tried.
	var tcp net.Listener
	var udp net.PacketConn
	for attempt := 0; udp == nil; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			l.Close()
			if attempt == 20 {
				t.Fatalf("no port free for both TCP and UDP in 20 tries: %v", err)
			}
			continue
		}
		tcp, udp = l, u
	}
	context.AfterFunc(ctx, func() { tcp.Close() })
	wg.Go(func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				stop := context.AfterFunc(ctx, func() { c.Close() })
				defer stop()
				if tls.Server(c, serverTLS).HandshakeContext(ctx) == nil {
					t.Error("the handshake succeeded")
				}
				// Read until the agent hangs up, so that it reads the
				// alert rather than a reset for its unread bytes.
				_, _ = io.Copy(io.Discard, c)
			})
		}
	})
	q := &quictunnel.Listener{Server: &muxtunnel.Server{}, TLS: serverTLS.Clone(), Log: zap.NewNop()}
	wg.Go(func() { _ = q.Serve(ctx, udp) })
	return tcp.Addr().String(), leaf
}

// TestRefusedCertificateRecognised: an agent whose client certificate the
// gateway refuses in the TLS handshake (a certificate of another connector
// CA: the gateway's store was replaced) recognises the refusal on every
// transport, logs that its certificate was refused and what to do, and
// auto mode does not switch QUIC → gRPC for it. Before the fix the agent
// logged only "cannot connect to the gateway ... tls: bad certificate", and
// auto mode blamed blocked UDP.
func TestRefusedCertificateRecognised(t *testing.T) {
	addr, clientTLS := refusingGateway(t)
	for _, transport := range []string{TransportGRPC, TransportYamux, TransportQUIC, TransportAuto} {
		t.Run(transport, func(t *testing.T) {
			logs, ok := runAgentUntil(t, Config{Gateway: addr, TLS: clientTLS, Transport: transport, Connections: 1,
				Credentials: testCredentials(t, "c1"), QUICFallback: 10 * time.Second}, func(e zapcore.Entry) bool {
				return strings.Contains(e.Message, "refused this agent's certificate")
			}, 20*time.Second)
			if !ok {
				t.Errorf("no refusal logged; logs: %v", logs.All())
			}
			e := logs.FilterMessageSnippet("refused this agent's certificate").All()
			if len(e) == 0 {
				return
			}
			if msg := e[0].Message; e[0].Level != zapcore.ErrorLevel || !strings.Contains(msg, "enroll the agent again") && !strings.Contains(msg, "Enroll the agent again") ||
				!strings.Contains(msg, "data_dir") {
				t.Errorf("logged %s %q", e[0].Level, msg)
			}
			if n := logs.FilterMessageSnippet("cannot connect to the gateway").Len(); n != 0 {
				t.Errorf("also logged as a connection failure: %v", logs.All())
			}
			if n := logs.FilterMessageSnippet("transport switch").Len(); n != 0 {
				t.Errorf("switched transports for a refused certificate: %v", logs.All())
			}
		})
	}
}

// TestIsCertRefused: the TLS alerts of a refused client certificate as each
// transport reports them, and failures that are not that.
func TestIsCertRefused(t *testing.T) {
	alert := func(a tls.AlertError) error { return a } // crypto/tls reports received alerts with its own (unexported) type; its text is the same
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"tcp bad_certificate", fmt.Errorf("yamux: %w", &net.OpError{Op: "remote error", Err: alert(42)}), true},
		{"tcp unknown_ca", &net.OpError{Op: "remote error", Err: alert(48)}, true},
		{"grpc status text", errors.New(`connect to gateway gw:8443: rpc error: code = Unavailable desc = connection error: desc = "error reading server preface: remote error: tls: bad certificate"`), true},
		{"quic crypto error", errors.New("connect to gateway gw:8443 (quic): CRYPTO_ERROR 0x130 (remote): tls: unknown certificate authority"), true},
		{"nil", nil, false},
		{"other remote alert", &net.OpError{Op: "remote error", Err: alert(40)}, false},
		{"local bad_certificate", &net.OpError{Op: "local error", Err: alert(42)}, false},
		{"gateway certificate not trusted", errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), false},
		{"quic local", errors.New("CRYPTO_ERROR 0x12a (local): tls: bad certificate"), false},
		{"refused", syscall.ECONNREFUSED, false},
	}
	for _, tt := range tests {
		if got := isCertRefused(tt.err); got != tt.want {
			t.Errorf("%s: isCertRefused(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
