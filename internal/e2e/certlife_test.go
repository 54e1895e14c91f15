package e2e

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// rawSession is a tunnel client session of any transport, dialled without
// an agent around it.
type rawSession interface {
	SessionID() string
	Serve(ctx context.Context, srv *tunnel.Server, drain <-chan struct{}) error
}

// dialRaw opens one session over transport presenting creds.
func (tr *trustRig) dialRaw(transport string, creds *agent.Credentials, log *zap.Logger) (rawSession, error) {
	tc := tr.tunnelTLS()
	tc.Certificates = []tls.Certificate{creds.Cert}
	hello := &tunnelv1.Hello{Name: "raw-" + transport, Transport: transport}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch transport {
	case "quic":
		return quictunnel.Dial(ctx, quictunnel.DialConfig{Addr: tr.Tunnel, TLS: tc, Hello: hello, Log: log})
	case "yamux":
		return yamuxtunnel.Dial(ctx, yamuxtunnel.DialConfig{Addr: tr.Tunnel, TLS: tc, Hello: hello, Log: log})
	default:
		return grpctunnel.Dial(ctx, grpctunnel.DialConfig{Addr: tr.Tunnel, TLS: tc, Hello: hello, Log: log})
	}
}

// waitFor waits up to 10 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// connectorSessions are the gateway's live sessions of connector id.
func (tr *trustRig) connectorSessions(id string) []gateway.SessionStatus {
	var out []gateway.SessionStatus
	for _, s := range tr.G.Registry().Sessions() {
		if s.ConnectorID == id {
			out = append(out, s)
		}
	}
	return out
}

// TestSessionEndsAtCertExpiry: on every transport, a session carries its
// certificate's serial and expiry; a minute before the expiry the gateway
// stops picking it and tells the agent it will end it (a Drain naming the
// expiry), and at the expiry it closes the session, logging the connector
// and why. Without the fix the session stays up past its certificate.
func TestSessionEndsAtCertExpiry(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			tr := newTimedTrustRig(t, nil)
			creds, err := agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: tr.Tunnel, TLS: tr.tunnelTLS(), Token: testrig.Token})
			if err != nil {
				t.Fatal(err)
			}
			core, clientLogs := observer.New(zap.InfoLevel)
			sess, err := tr.dialRaw(transport, creds, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ended := make(chan error, 1)
			go func() { ended <- sess.Serve(ctx, &tunnel.Server{}, nil) }()
			tr.WaitSessions(testrig.Group, 1)
			ss := tr.connectorSessions(creds.ConnectorID)
			if len(ss) != 1 || ss[0].CertSerial != creds.Cert.Leaf.SerialNumber.Text(16) || !ss[0].CertExpires.Equal(creds.Expires()) {
				t.Fatalf("sessions = %+v", ss)
			}

			// Just before the drain: nothing happens.
			tr.clock.Advance(creds.Expires().Sub(tr.clock.Now()) - time.Minute - time.Second)
			if n := tr.G.Registry().Count(testrig.Group); n != 1 {
				t.Fatalf("%d usable sessions before the drain time", n)
			}
			tr.clock.Advance(2 * time.Second)
			e := tr.waitLog("draining agent session: its certificate expires soon")
			if e.ContextMap()["connector"] != creds.ConnectorID || e.ContextMap()["transport"] != transport {
				t.Fatalf("drain logged as %v", e.ContextMap())
			}
			waitFor(t, "the agent to get the drain", func() bool {
				es := clientLogs.FilterMessage("the gateway will end this session").All()
				return len(es) == 1 && strings.Contains(es[0].ContextMap()["reason"].(string), "certificate expires at")
			})
			if n := tr.G.Registry().Count(testrig.Group); n != 0 {
				t.Fatalf("the draining session is still picked (%d usable)", n)
			}
			select {
			case err := <-ended:
				t.Fatalf("the session ended at the drain: %v", err)
			default:
			}

			tr.clock.Advance(time.Minute)
			select {
			case err := <-ended:
				if err == nil {
					t.Fatal("Serve = nil; want the session ended by the gateway")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the session outlived its certificate")
			}
			e = tr.waitLog("agent session closed: its certificate expired")
			if e.ContextMap()["connector"] != creds.ConnectorID ||
				!strings.Contains(e.ContextMap()["reason"].(string), "expired at "+creds.Expires().UTC().Format(time.RFC3339)) {
				t.Fatalf("close logged as %v", e.ContextMap())
			}
			waitFor(t, "the session to leave the registry", func() bool { return len(tr.connectorSessions(creds.ConnectorID)) == 0 })
		})
	}
}
