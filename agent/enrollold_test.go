package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// gatewayWithoutEnrollment is a gateway's tunnel port on loopback that
// serves gRPC over TLS without the enrollment service, as gateways from
// before connector enrollment did (they served the tunnel service alone,
// and gRPC answers "Unimplemented: unknown service
// sallyport.tunnel.v1.EnrollmentService"). It returns the address and the
// number of TLS connections so far.
func gatewayWithoutEnrollment(t *testing.T) (addr string, conns func() int) {
	t.Helper()
	ln, tc, _ := loopbackTLS(t)
	bl := &busyListener{Listener: ln, tls: tc}
	srv := grpc.NewServer() // no service at all: the tunnel service would not answer Enroll either
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(bl) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String(), func() int { return int(bl.n.Load()) }
}

// enrollingAgent is the configuration of an agent with a token and no
// certificate yet that enrolls at addr (any certificate accepted), with
// one connection, a reconnect pace of 1 ms and a renewal pace of an hour.
func enrollingAgent(t *testing.T, addr string) Config {
	return Config{Gateway: addr, TLS: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a test server
		Token: "spt_x", DataDir: t.TempDir(), Connections: 1,
		Backoff: Backoff{Min: time.Millisecond, Max: time.Millisecond}, RenewBackoff: Backoff{Min: time.Hour, Max: time.Hour}}
}

// TestEnrollAtGatewayWithoutEnrollment: `sallyport agent enroll` against a
// gateway too old to enroll agents said only "Unimplemented: unknown
// service sallyport.tunnel.v1.EnrollmentService". It says that the gateway
// does not support enrollment, to upgrade it, and that the token was not
// used; the error is ErrEnrollUnsupported, neither a refusal nor
// "unreachable".
func TestEnrollAtGatewayWithoutEnrollment(t *testing.T) {
	addr, conns := gatewayWithoutEnrollment(t)
	_, err := Enroll(context.Background(), EnrollConfig{Gateway: addr, Token: "spt_x",
		TLS: &tls.Config{InsecureSkipVerify: true}}) //nolint:gosec // a test server
	if err == nil {
		t.Fatal("enrolled at a gateway without enrollment")
	}
	msg := err.Error()
	for _, want := range []string{"enroll at " + addr + ": the gateway does not support enrollment",
		"unknown service sallyport.tunnel.v1.EnrollmentService", "older than connector enrollment",
		"upgrade the gateway", "the token was not used"} {
		if !strings.Contains(msg, want) {
			t.Errorf("enroll at a gateway without enrollment: %v\nwant it to say %q", err, want)
		}
	}
	if !errors.Is(err, ErrEnrollUnsupported) || errors.Is(err, ErrEnrollRefused) || errors.Is(err, ErrGatewayUnreachable) {
		t.Errorf("enroll at a gateway without enrollment: %v; want ErrEnrollUnsupported only (not refused, not unreachable)", err)
	}
	if n := conns(); n != 1 {
		t.Errorf("%d connections, want 1 (no retry for an answer that cannot change)", n)
	}
}

// TestAgentWaitsForGatewayWithEnrollment: an agent with a token and no
// certificate, against a gateway without enrollment, used to try again at
// the reconnect pace (500 ms doubling to 30 s) forever, each time warning
// "cannot enroll yet; retrying" with gRPC's "Unimplemented" text. It logs
// an error saying to upgrade the gateway and waits at the renewal pace (here
// RenewBackoff of an hour), not the reconnect pace (here 1 ms).
func TestAgentWaitsForGatewayWithEnrollment(t *testing.T) {
	addr, conns := gatewayWithoutEnrollment(t)
	r := startAgent(t, enrollingAgent(t, addr), func(e zapcore.Entry) bool {
		return e.Level >= zapcore.WarnLevel && strings.Contains(e.Message, "enroll")
	})
	logs := r.logs
	select {
	case <-r.met:
	case <-r.done:
		t.Fatalf("Run returned %v before it logged the failed enrollment; logs: %v", r.err, logs.All())
	}
	if err := r.stop(); err == nil || !errors.Is(err, ErrEnrollUnsupported) {
		t.Errorf("Run: %v; want the enrollment interrupted, with ErrEnrollUnsupported", err)
	}
	e := logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessageSnippet("does not support enrollment").All()
	if len(e) == 0 {
		t.Fatalf("no error saying the gateway does not support enrollment; logs: %v", logs.All())
	}
	fields := e[0].ContextMap()
	if msg, _ := fields["error"].(string); !strings.Contains(msg, "upgrade the gateway") || !strings.Contains(msg, addr) {
		t.Errorf("logged error %q; want it to name %s and say to upgrade the gateway", msg, addr)
	}
	if wait, _ := fields["retry_in"].(time.Duration); wait < 30*time.Minute {
		t.Errorf("retry_in %v; want the renewal pace (RenewBackoff: 30m to 1h), not the reconnect pace (1ms)", wait)
	}
	if n := logs.FilterMessageSnippet("cannot enroll yet").Len(); n != 0 {
		t.Errorf("also logged %d times as a gateway not reachable yet: %v", n, logs.All())
	}
	if n := conns(); n != 1 {
		t.Errorf("%d connections to the gateway, want 1 (the next attempt comes after retry_in)", n)
	}
}
