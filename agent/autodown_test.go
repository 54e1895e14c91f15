package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestAutoGatewayNotUp: with transport auto and no gateway up yet (nothing
// listens: TCP is refused), the agent does not stay on gRPC until the
// QUIC prober's next try: the refused gRPC dial sends the next try back to
// QUIC, so it switches QUIC → gRPC again soon, and the switch does not
// blame UDP alone. It used to switch once and stay on gRPC for
// QUICRetry (3 minutes), saying "UDP may be blocked".
func TestAutoGatewayNotUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	var switches atomic.Int32
	logs, ok := runAgentUntil(t, Config{Gateway: addr, Transport: TransportAuto, Connections: 1,
		Credentials: testCredentials(t, "c1"), QUICFallback: 300 * time.Millisecond, QUICRetry: time.Hour,
		Backoff: Backoff{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond}}, func(e zapcore.Entry) bool {
		return strings.Contains(e.Message, "transport switch: QUIC → gRPC") && switches.Add(1) >= 2
	}, 10*time.Second)
	if !ok {
		t.Errorf("auto mode stayed on gRPC although the gateway refused TCP too; logs: %v", logs.All())
	}
	e := logs.FilterMessageSnippet("transport switch: QUIC → gRPC").All()
	if len(e) > 0 && !strings.Contains(e[0].Message, "the gateway not up yet") {
		t.Errorf("switch logged as %q, want it to name a gateway not up yet", e[0].Message)
	}
}

// TestUntrustedGatewayIsNoFallback: a QUIC dial that failed because the
// agent does not trust the gateway's certificate is no reason to switch to
// gRPC, which fails the same way. Auto mode used to switch and blame UDP.
func TestUntrustedGatewayIsNoFallback(t *testing.T) {
	for _, err := range []error{
		errors.New("connect to gateway gw:8443 (quic): CRYPTO_ERROR 0x12a (local): tls: failed to verify certificate: x509: certificate signed by unknown authority"),
		fmt.Errorf("dial: %w", x509.UnknownAuthorityError{}),
	} {
		a := &Agent{mode: TransportAuto, log: zap.NewNop()}
		a.auto.useQUIC = true
		a.auto.probing = true // no prober goroutine
		if a.fallBack(context.Background(), TransportQUIC, err) || !a.auto.useQUIC {
			t.Errorf("an untrusted gateway certificate made auto mode fall back to gRPC: %v", err)
		}
	}
}
