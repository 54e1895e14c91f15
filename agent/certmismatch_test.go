package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// certGateway listens like a gateway's tunnel (TCP for gRPC and yamux, UDP
// for QUIC, one port) on 127.0.0.1 with a self-signed certificate for
// dnsName only, and accepts any client certificate. It returns the address
// and the certificate.
func certGateway(t *testing.T, dnsName string) (string, *x509.Certificate) {
	t.Helper()
	return handshakeGateway(t, &x509.Certificate{SerialNumber: big.NewInt(3), DNSNames: []string{dnsName}}, func(*tls.Config) {})
}

// TestPinMismatchRecognised: an agent enrolled with --gateway-fingerprint
// that reaches a gateway presenting another tunnel certificate (a replica
// without the same tunnel.tls files, or a replaced certificate) logs an
// error that says so and what to do, on every transport, and auto mode
// does not blame UDP for it. It used to log the generic warning "cannot
// connect to the gateway; check that the gateway runs and that gateway: is
// its tunnel.addr host:port".
func TestPinMismatchRecognised(t *testing.T) {
	addr, _ := certGateway(t, "gw.lb.local")
	pinned, err := PinnedTLS("sha256:" + strings.Repeat("ab", 32)) // another replica's certificate
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{TransportGRPC, TransportYamux, TransportQUIC, TransportAuto} {
		t.Run(transport, func(t *testing.T) {
			logs, ok := runAgentUntil(t, Config{Gateway: addr, TLS: pinned.Clone(), Transport: transport, Connections: 1,
				Credentials: testCredentials(t, "c1"), QUICFallback: 10 * time.Second}, func(e zapcore.Entry) bool {
				return strings.Contains(e.Message, "cannot connect to the gateway")
			}, 20*time.Second)
			if !ok {
				t.Fatalf("no connection failure logged; logs: %v", logs.All())
			}
			e := logs.FilterMessageSnippet("cannot connect to the gateway").All()[0]
			for _, want := range []string{"presents another tunnel certificate than the one pinned at enrollment",
				"every gateway replica behind one name needs the same tunnel.tls files", "set gateway_ca_file", "enroll again"} {
				if e.Level != zapcore.ErrorLevel || !strings.Contains(e.Message, want) {
					t.Errorf("logged %s %q, want an error containing %q", e.Level, e.Message, want)
				}
			}
			if n := logs.FilterMessageSnippet("transport switch").Len(); n != 0 {
				t.Errorf("switched transports for a pinned certificate mismatch: %v", logs.All())
			}
		})
	}
}

// TestHostMismatchHint: an agent that trusts the gateway's certificate
// (gateway_ca_file) but dials it under a name the certificate does not
// have is told that, with the names it has, on every transport. It used
// to get "set gateway_ca_file to the gateway's tunnel-cert.pem, or enroll
// first with --gateway-fingerprint", which cannot help.
func TestHostMismatchHint(t *testing.T) {
	addr, leaf := certGateway(t, "gw.lb.local")
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	for _, transport := range []string{TransportGRPC, TransportYamux, TransportQUIC} {
		t.Run(transport, func(t *testing.T) {
			// The name checked is "localhost" (as with gateway:
			// localhost:PORT), the dial goes to 127.0.0.1 where the test
			// gateway listens.
			clientTLS := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}
			logs, ok := runAgentUntil(t, Config{Gateway: addr, TLS: clientTLS, Transport: transport, Connections: 1,
				Credentials: testCredentials(t, "c1")}, func(e zapcore.Entry) bool {
				return strings.Contains(e.Message, "cannot connect to the gateway")
			}, 20*time.Second)
			if !ok {
				t.Fatalf("no connection failure logged; logs: %v", logs.All())
			}
			e := logs.FilterMessageSnippet("cannot connect to the gateway").All()[0]
			want := "the gateway's certificate does not name localhost: it names gw.lb.local; set gateway: to one of them, " +
				"or give the gateway a tunnel.tls certificate for localhost"
			if e.Level != zapcore.ErrorLevel || !strings.Contains(e.Message, want) || strings.Contains(e.Message, "--gateway-fingerprint") {
				t.Errorf("logged %s %q, want an error containing %q and no fingerprint advice", e.Level, e.Message, want)
			}
		})
	}
}

// TestHostMismatchText: the host name errors as gRPC and QUIC flatten them
// into text, and errors that are not one.
func TestHostMismatchText(t *testing.T) {
	for _, tc := range []struct {
		err   error
		host  string
		names []string
		ok    bool
	}{
		{errors.New(`rpc error: code = Unavailable desc = connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate is valid for gw.lb.local, gw2.lb.local, not localhost"`),
			"localhost", []string{"gw.lb.local", "gw2.lb.local"}, true},
		{errors.New("CRYPTO_ERROR 0x12a (local): tls: failed to verify certificate: x509: cannot validate certificate for 10.0.0.5 because it doesn't contain any IP SANs"),
			"10.0.0.5", nil, true},
		{errors.New("x509: certificate is not valid for any names, but wanted to match gw.example"), "gw.example", nil, true},
		{errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), "", nil, false},
		{nil, "", nil, false},
	} {
		host, names, ok := hostMismatch(tc.err)
		if ok != tc.ok || host != tc.host || strings.Join(names, ",") != strings.Join(tc.names, ",") {
			t.Errorf("hostMismatch(%v) = %q, %q, %v; want %q, %q, %v", tc.err, host, names, ok, tc.host, tc.names, tc.ok)
		}
	}
	// A pinned mismatch that QUIC flattened is untrusted (no fallback to
	// gRPC) and a pin mismatch.
	quic := errors.New("connect to gateway gw:8443 (quic): CRYPTO_ERROR 0x12a (local): the gateway's certificate has fingerprint sha256:" +
		strings.Repeat("ac", 32) + ", not the pinned sha256:" + strings.Repeat("36", 32))
	if !isPinMismatch(quic) || !isCertUntrusted(quic) {
		t.Errorf("flattened pin mismatch: isPinMismatch %v, isCertUntrusted %v; want both", isPinMismatch(quic), isCertUntrusted(quic))
	}
	if typed := error(&FingerprintMismatchError{Presented: "sha256:a", Pinned: "sha256:b"}); !isPinMismatch(typed) {
		t.Errorf("isPinMismatch(%v) = false", typed)
	}
}
