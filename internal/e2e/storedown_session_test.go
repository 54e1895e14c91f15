package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// silentStore is the gateway's store whose reads of the connector CAs and
// of connectors fail, while down is set, as a database that does not
// answer does (store.Unavailable: a refused connection).
type silentStore struct {
	*store.DB
	down atomic.Bool
}

func (s *silentStore) silence() error {
	return fmt.Errorf("read: %w", &net.OpError{Op: "dial", Net: "tcp",
		Addr: &net.TCPAddr{IP: net.IPv4(10, 9, 8, 7), Port: 5432}, Err: errors.New("connect: connection refused")})
}

func (s *silentStore) CAs(ctx context.Context) ([]store.CA, error) {
	if s.down.Load() {
		return nil, s.silence()
	}
	return s.DB.CAs(ctx)
}

func (s *silentStore) Connector(ctx context.Context, id string) (store.Connector, error) {
	if s.down.Load() {
		return store.Connector{}, s.silence()
	}
	return s.DB.Connector(ctx, id)
}

// TestStoreDownSessionRefusal: an enrolled agent opens a session while the
// gateway's database does not answer at its check (the TLS handshake lets
// it through, the session's check fails). Over every transport the gateway
// refuses it as unavailable, not unauthenticated: gRPC with the status
// UNAVAILABLE, QUIC and yamux with the error code "unavailable", which the
// transports return as tunnel.ErrUnavailable; the words say that the
// database does not answer. The agent logs that and retries, never told to
// enroll again, and its session comes up once the database answers. The
// refusals count under the reason "error", none as unauthenticated, and
// the gateway logs none as such. Before, every transport refused such a
// session as unauthenticated and the agent recognised it only by its words.
func TestStoreDownSessionRefusal(t *testing.T) {
	for _, transport := range []string{"grpc", "yamux", "quic", "auto"} {
		t.Run(transport, func(t *testing.T) { testStoreDownSessionRefusal(t, transport) })
	}
}

func testStoreDownSessionRefusal(t *testing.T, transport string) {
	db, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ss := &silentStore{DB: db}
	core, logs := observer.New(zap.DebugLevel)
	rig := testrig.New(t, testrig.Options{
		Log:       zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core())),
		Transport: transport,
		Gateway: func(c *gateway.Config) {
			c.Store = ss
			c.AdminAddr = "127.0.0.1:0"
		},
	})
	tunnelTLS := &tls.Config{RootCAs: rig.Roots, ServerName: "localhost"}
	creds, err := agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: rig.Tunnel, TLS: tunnelTLS, Token: testrig.Token})
	if err != nil {
		t.Fatal(err)
	}
	ss.down.Store(true)

	// The transport's answer.
	tc := tunnelTLS.Clone()
	tc.Certificates = []tls.Certificate{creds.Cert}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hello := &tunnelv1.Hello{Name: "raw-" + transport, Transport: transport}
	switch transport {
	case "grpc":
		cc, err := grpc.NewClient("passthrough:///"+rig.Tunnel, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctrl, err := tunnelv1.NewTunnelServiceClient(cc).Control(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = ctrl.Send(&tunnelv1.ControlRequest{Hello: hello})
		_, err = ctrl.Recv()
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), tunnel.StoreDownText) ||
			strings.Contains(st.Message(), "10.9.8.7") {
			t.Fatalf("the gateway's answer: %v; want Unavailable, saying %q (without the driver's words)", err, tunnel.StoreDownText)
		}
		_, err = grpctunnel.Dial(ctx, grpctunnel.DialConfig{Addr: rig.Tunnel, TLS: tc, Hello: hello})
		wantStoreDown(t, err, errors.Is(err, grpctunnel.ErrUnauthenticated))
	case "yamux":
		_, err := yamuxtunnel.Dial(ctx, yamuxtunnel.DialConfig{Addr: rig.Tunnel, TLS: tc, Hello: hello})
		wantStoreDown(t, err, errors.Is(err, muxtunnel.ErrUnauthenticated))
	case "quic", "auto":
		_, err := quictunnel.Dial(ctx, quictunnel.DialConfig{Addr: rig.Tunnel, TLS: tc, Hello: hello})
		wantStoreDown(t, err, errors.Is(err, muxtunnel.ErrUnauthenticated))
	}

	// The agent's view: it retries, told why, and not to enroll again.
	rig.StartAgent(func(c *agent.Config) {
		c.Token, c.Credentials, c.Transport = "", creds, transport
	})
	const retrying = "the gateway cannot check this agent now: its database does not answer; retrying (do not enroll again)"
	agentLogs := func() *observer.ObservedLogs {
		return logs.Filter(func(e observer.LoggedEntry) bool { return e.LoggerName == "agent" })
	}
	waitFor(t, "the agent's second store-down retry", func() bool {
		return agentLogs().FilterMessage(retrying).Len() >= 2
	})
	lines := agentLogs().FilterMessage(retrying).All()
	for i, e := range lines {
		if msg := fmt.Sprint(e.ContextMap()["error"]); !strings.Contains(msg, tunnel.StoreDownText) {
			t.Errorf("the agent's store-down line has the error %q", msg)
		}
		// It backs off: each retry waits the delay it announced.
		d, _ := e.ContextMap()["retry_in"].(time.Duration)
		if d <= 0 {
			t.Errorf("store-down retry %d: retry_in %v", i, d)
		} else if i+1 < len(lines) && lines[i+1].Time.Sub(e.Time) < d {
			t.Errorf("store-down retry %d came %v after the one announcing retry_in %v", i+1, lines[i+1].Time.Sub(e.Time), d)
		}
	}
	ss.down.Store(false)
	rig.WaitSessions(testrig.Group, 1)
	for _, e := range agentLogs().All() {
		text := e.Message + " " + fmt.Sprint(e.ContextMap())
		// Nor a switch of transport (auto): QUIC works, the gateway
		// answered over it.
		if e.Level >= zap.ErrorLevel || strings.Contains(strings.ToLower(text), "enroll the agent again") ||
			strings.Contains(text, "sallyport agent enroll") || strings.Contains(e.Message, "transport switch") {
			t.Errorf("the agent logged %s %q %v", e.Level, e.Message, e.ContextMap())
		}
	}

	// The gateway's count and log.
	s := scrape(t, rig.AdminURL()+"/metrics")
	if n := s[`sallyport_gateway_session_refusals_total{reason="error"}`]; n < 3 {
		t.Errorf(`session_refusals_total{reason="error"} = %v, want at least 3 (the raw dials and two of the agent's)`, n)
	}
	if n, ok := s[`sallyport_gateway_session_refusals_total{reason="unauthenticated"}`]; ok {
		t.Errorf(`session_refusals_total{reason="unauthenticated"} = %v: the database's silence counted as a refused credential`, n)
	}
	gw := logs.Filter(func(e observer.LoggedEntry) bool { return strings.HasPrefix(e.LoggerName, "gateway") })
	if n := gw.FilterMessage("agent refused: unauthenticated").Len(); n > 0 {
		t.Errorf("the gateway logged %d refusals as unauthenticated", n)
	}
	if gw.FilterMessage("agent refused: unavailable").Len() == 0 {
		t.Error("the gateway logged no refusal as unavailable")
	}
}

// wantStoreDown checks the error of a session the gateway refused because
// its database does not answer; unauthenticated: whether the transport
// took it for a refused credential.
func wantStoreDown(t *testing.T, err error, unauthenticated bool) {
	t.Helper()
	if !errors.Is(err, tunnel.ErrUnavailable) || unauthenticated || !strings.Contains(err.Error(), tunnel.StoreDownText) {
		t.Fatalf("the session's refusal: %v; tunnel.ErrUnavailable %v, unauthenticated %v; want ErrUnavailable saying %q",
			err, errors.Is(err, tunnel.ErrUnavailable), unauthenticated, tunnel.StoreDownText)
	}
}
