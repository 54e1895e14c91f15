package agent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// TestQUICNoAnswerHint: an agent on transport quic whose gateway address
// gets no QUIC answer (here a UDP socket that reads nothing, as a port
// where no gateway runs, or UDP dropped on the way) says what that can
// mean and what to check. It used to log only "cannot connect to the
// gateway" with "dial gateway …: context deadline exceeded".
func TestQUICNoAnswerHint(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	logs, ok := runAgentUntil(t, Config{Gateway: pc.LocalAddr().String(), Transport: TransportQUIC, Connections: 1,
		QUICFallback: 200 * time.Millisecond, Credentials: testCredentials(t, "c1")}, func(e zapcore.Entry) bool {
		return strings.Contains(e.Message, "cannot connect to the gateway")
	}, 15*time.Second)
	if !ok {
		t.Fatalf("no connection failure logged; logs: %v", logs.All())
	}
	e := logs.FilterMessageSnippet("cannot connect to the gateway").All()[0]
	for _, want := range []string{"(no QUIC answer: gateway not up, wrong port, or UDP blocked)",
		"check that the gateway runs and that gateway: is its tunnel.addr host:port"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("logged %q, want it to contain %q", e.Message, want)
		}
	}
}

// TestRefusedDialHint: a gateway address where nothing listens (TCP
// refused) gets the hint to check the gateway and the address, without
// the QUIC words.
func TestRefusedDialHint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	logs, ok := runAgentUntil(t, Config{Gateway: addr, Transport: TransportGRPC, Connections: 1,
		Credentials: testCredentials(t, "c1")}, func(e zapcore.Entry) bool {
		return strings.Contains(e.Message, "cannot connect to the gateway")
	}, 15*time.Second)
	if !ok {
		t.Fatalf("no connection failure logged; logs: %v", logs.All())
	}
	msg := logs.FilterMessageSnippet("cannot connect to the gateway").All()[0].Message
	if want := "cannot connect to the gateway; check that the gateway runs and that gateway: is its tunnel.addr host:port"; msg != want {
		t.Errorf("logged %q, want %q", msg, want)
	}
}

// TestEnrollUntrustedGatewayHint: an agent with a token that does not
// trust the gateway's tunnel certificate says how to trust it, with the
// fingerprint the gateway presented, as `agent enroll` does. It used to
// retry forever with only "tunnel certificate is not trusted … (it
// presented fingerprint sha256:…)" and no remedy.
func TestEnrollUntrustedGatewayHint(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.EnableHTTP2 = true // offers h2, as the gateway's tunnel listener does to gRPC
	srv.StartTLS()         // with a certificate no system root signed
	defer srv.Close()
	r := startAgent(t, Config{Gateway: strings.TrimPrefix(srv.URL, "https://"), Token: "t", Transport: TransportGRPC,
		Connections: 1}, func(e zapcore.Entry) bool { return strings.Contains(e.Message, "not trusted") })
	select {
	case <-r.met:
	case <-time.After(15 * time.Second):
		t.Fatalf("no untrusted certificate logged; logs: %v", r.logs.All())
	}
	r.stop() // "enrollment interrupted"
	e := r.logs.FilterMessageSnippet("not trusted").All()[0]
	want := "set gateway_ca_file to the gateway's tunnel-cert.pem, or enroll first with sallyport agent enroll --gateway-fingerprint sha256:"
	if e.Level != zapcore.ErrorLevel || !strings.Contains(e.Message, want) {
		t.Errorf("logged %s %q, want an error containing %q", e.Level, e.Message, want)
	}
	if fp := e.Message[strings.Index(e.Message, "sha256:"):]; len(fp) != len("sha256:")+64 {
		t.Errorf("fingerprint in the hint = %q, want sha256: and 64 hex digits", fp)
	}
}

// TestEnrollUnreachableHint: an agent with a token whose gateway address
// refuses connections (no gateway runs there) says what to check while it
// retries. It used to log only "cannot enroll yet; retrying".
func TestEnrollUnreachableHint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	r := startAgent(t, Config{Gateway: addr, Token: "t", Transport: TransportGRPC, Connections: 1},
		func(e zapcore.Entry) bool { return strings.Contains(e.Message, "cannot enroll yet") })
	select {
	case <-r.met:
	case <-time.After(15 * time.Second):
		t.Fatalf("no enrollment failure logged; logs: %v", r.logs.All())
	}
	r.stop() // "enrollment interrupted"
	msg := r.logs.FilterMessageSnippet("cannot enroll yet").All()[0].Message
	if want := "cannot enroll yet; check that the gateway runs and that gateway: is its tunnel.addr host:port; retrying"; msg != want {
		t.Errorf("logged %q, want %q", msg, want)
	}
}
