package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

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

// serveRaw opens a session over transport presenting creds and serves it
// (answering nothing) until the test ends; ended gets Serve's result, and
// logs has the client's log lines.
func (tr *trustRig) serveRaw(transport string, creds *agent.Credentials) (ended <-chan error, logs *observer.ObservedLogs) {
	tr.t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	sess, err := tr.dialRaw(transport, creds, zap.New(core))
	if err != nil {
		tr.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	drain := make(chan struct{})
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- sess.Serve(ctx, &tunnel.Server{}, drain)
	}()
	// Registered after the rig's: runs first, while the gateway is up.
	tr.t.Cleanup(func() {
		close(drain)
		defer cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			tr.t.Error("the raw session did not end")
		}
	})
	return done, logs
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
			ended, clientLogs := tr.serveRaw(transport, creds)
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
			closed := `sallyport_gateway_sessions_closed_total{group="default",reason="certificate",transport="` + transport + `"}`
			scrapeUntil(t, tr.AdminURL()+"/metrics", func(s series) bool { return s[closed] == 1 })
		})
	}
}

// slowBackend answers every request with a first part at once and the rest
// only when release is closed, so an exchange stays in flight as long as
// a test wants.
type slowBackend struct {
	*httptest.Server
	started chan struct{} // gets a value when a request has sent its first part
	release chan struct{}
}

func startSlowBackend(t *testing.T) *slowBackend {
	t.Helper()
	b := &slowBackend{started: make(chan struct{}, 16), release: make(chan struct{})}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first part;")
		w.(http.Flusher).Flush()
		b.started <- struct{}{}
		select {
		case <-b.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second part")
	}))
	t.Cleanup(b.Close)
	return b
}

// TestSessionsMoveAfterRenewal: on every transport, after a renewal each of
// the agent's slots moves to a session presenting the new certificate, one
// slot at a time (RollPause apart), the new session before the old one
// drains; an exchange in flight on an old session finishes there intact.
// Without the move the sessions keep the old certificate until it expires.
func TestSessionsMoveAfterRenewal(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			slow := startSlowBackend(t)
			tr := newTrustRig(t, func(c *gateway.Config) {
				c.Routes = append(c.Routes, gateway.Route{App: "slow", Hosts: []string{"slow.test"},
					Backend: testrig.MustURL(t, slow.URL), Group: testrig.Group})
			})
			const pause = 200 * time.Millisecond
			a := tr.StartAgent(func(c *agent.Config) {
				c.Token, c.DataDir, c.Clock, c.Connections = testrig.Token, t.TempDir(), tr.clock, 2
				c.Transport, c.RollPause = transport, pause
			})
			tr.WaitSessions(testrig.Group, 2)
			old := a.A.Certificate()
			oldSerial := old.Cert.Leaf.SerialNumber.Text(16)

			type result struct {
				code int
				body string
				err  error
			}
			got := make(chan result, 1)
			go func() {
				req, _ := http.NewRequest("GET", tr.URL+"/", nil)
				req.Host = "slow.test"
				res, err := tr.Client().Do(req)
				if err != nil {
					got <- result{err: err}
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				got <- result{res.StatusCode, string(b), err}
			}()
			<-slow.started

			if !tr.clock.WaitForWaiter(1, nil) {
				t.Fatal("no renewal timer")
			}
			tr.clock.Advance(old.RenewAt().Sub(tr.clock.Now()))
			select {
			case <-a.A.Renewed():
			case <-time.After(10 * time.Second):
				t.Fatal("no renewal")
			}
			newSerial := a.A.Certificate().Cert.Leaf.SerialNumber.Text(16)
			// Both slots move; the old session with the exchange drains.
			waitFor(t, "two usable sessions with the new certificate", func() bool {
				n := 0
				for _, s := range tr.connectorSessions(old.ConnectorID) {
					if s.CertSerial == newSerial && !s.Draining {
						n++
					}
				}
				return n == 2 && tr.G.Registry().Count(testrig.Group) == 2
			})
			busy := 0
			for _, s := range tr.connectorSessions(old.ConnectorID) {
				if s.CertSerial == oldSerial && s.InFlight == 1 {
					busy++
				}
			}
			if busy != 1 {
				t.Fatalf("the old session with the exchange is gone: %+v", tr.connectorSessions(old.ConnectorID))
			}
			close(slow.release)
			r := <-got
			if r.err != nil || r.code != 200 || r.body != "first part;second part" {
				t.Fatalf("the exchange across the move: %d %q %v", r.code, r.body, r.err)
			}
			waitFor(t, "the old sessions to end", func() bool {
				for _, s := range tr.connectorSessions(old.ConnectorID) {
					if s.CertSerial != newSerial {
						return false
					}
				}
				return true
			})
			moves := tr.logs.FilterMessage("moving this session to the renewed certificate").All()
			if len(moves) != 2 {
				t.Fatalf("%d moves logged, want one per slot", len(moves))
			}
			if gap := moves[1].Time.Sub(moves[0].Time); gap < pause/2 {
				t.Fatalf("the slots moved %v apart, want at least %v", gap, pause/2)
			}
			if code := tr.get(); code != 200 {
				t.Fatalf("GET after the move = %d", code)
			}
		})
	}
}

// rawRenew asks for a renewal presenting creds and throws the answer away,
// as if it was lost on its way to the agent.
func (tr *trustRig) rawRenew(creds *agent.Credentials) error {
	_, err := tr.renewKeep(creds)
	return err
}

// renewKeep renews with creds, as rawRenew, and returns the new
// certificate with its key (what a thief holding creds' key would get).
func (tr *trustRig) renewKeep(creds *agent.Credentials) (*agent.Credentials, error) {
	tc := tr.tunnelTLS()
	tc.Certificates = []tls.Certificate{creds.Cert}
	cc, err := grpc.NewClient("passthrough:///"+tr.Tunnel, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	key := p256(tr.t)
	res, err := tunnelv1.NewEnrollmentServiceClient(cc).Renew(context.Background(), &tunnelv1.RenewRequest{Csr: csr(tr.t, key)})
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(res.GetCertificate())
	if err != nil {
		return nil, err
	}
	return &agent.Credentials{Cert: tls.Certificate{Certificate: [][]byte{res.GetCertificate()}, PrivateKey: key, Leaf: leaf},
		ConnectorID: creds.ConnectorID, Group: creds.Group, CABundle: res.GetCaBundle()}, nil
}

// startRollingAgent starts an enrolling agent on the rig's fake clock
// with connections sessions that move quickly after a renewal, and waits
// for its sessions.
func (tr *trustRig) startRollingAgent(connections int) *testrig.Agent {
	tr.t.Helper()
	a := tr.StartAgent(func(c *agent.Config) {
		c.Token, c.DataDir, c.Clock, c.Connections, c.RollPause = testrig.Token, tr.t.TempDir(), tr.clock, connections, 10*time.Millisecond
	})
	tr.WaitSessions(testrig.Group, connections)
	return a
}

// renewNow moves the fake clock to a's renewal time, waits for the
// renewal and returns the new certificate.
func (tr *trustRig) renewNow(a *testrig.Agent) *agent.Credentials {
	tr.t.Helper()
	tr.clock.Advance(a.A.Certificate().RenewAt().Sub(tr.clock.Now()))
	select {
	case <-a.A.Renewed():
	case <-time.After(10 * time.Second):
		tr.t.Fatal("no renewal")
	}
	return a.A.Certificate()
}

// TestRenewalRetiresOldCertificate: after a renewal the previous
// certificate keeps working (for sessions and renewals) until the agent
// presents the new one, so an agent whose renewal answer was lost is not
// locked out; once a session with the newest certificate is up, the older
// ones are refused for new sessions and renewals (also after a gateway
// restart: it is in the store), and the connector's sessions that present
// one are drained and closed after the retire grace. Without the fix the
// old certificate opens sessions until it expires.
func TestRenewalRetiresOldCertificate(t *testing.T) {
	tr := newTimedTrustRig(t, nil)
	a := tr.startRollingAgent(2)
	old := a.A.Certificate()
	// Someone holding the old key keeps a session open.
	ended, clientLogs := tr.serveRaw(tr.Transport, old)
	tr.WaitSessions(testrig.Group, 3)

	// A renewal whose answer is lost: the old certificate still works.
	if err := tr.rawRenew(old); err != nil {
		t.Fatalf("renewal with the current certificate: %v", err)
	}
	if err := tr.dialWith(old); err != nil {
		t.Fatalf("the previous certificate is locked out before its successor was used: %v", err)
	}

	// The agent renews (presenting the old certificate, the only one it
	// has) and moves its sessions: the new certificate is in use.
	cur := tr.renewNow(a)
	e := tr.waitLog("draining agent session: its certificate was replaced by a renewal")
	if e.ContextMap()["connector"] != old.ConnectorID {
		t.Fatalf("drain logged as %v", e.ContextMap())
	}
	waitFor(t, "the raw session's agent to get the drain", func() bool {
		return len(clientLogs.FilterMessage("the gateway will end this session").All()) == 1
	})
	c, err := tr.store.Connector(context.Background(), old.ConnectorID)
	if err != nil || !c.CertInUse || c.CertSerial != cur.Cert.Leaf.SerialNumber.Text(16) {
		t.Fatalf("store: %+v, %v", c, err)
	}
	if err := tr.dialWith(old); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("a session with the retired certificate: %v", err)
	}
	wantStatus(t, tr.rawRenew(old), codes.Unauthenticated, "retired")

	tr.clock.Advance(time.Hour) // retireGrace
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("Serve = nil; want the session ended by the gateway")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the session with the retired certificate was not closed")
	}
	tr.waitLog("agent session closed: its certificate was replaced by a renewal")
	waitFor(t, "only sessions with the new certificate", func() bool {
		ss := tr.connectorSessions(old.ConnectorID)
		for _, s := range ss {
			if s.CertSerial != c.CertSerial {
				return false
			}
		}
		return len(ss) == 2
	})
	if code := tr.get(); code != 200 {
		t.Fatalf("GET after the retirement = %d", code)
	}

	tr.restartOnSameFile()
	tr.WaitSessions(testrig.Group, 2)
	if err := tr.dialWith(old); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("after a restart, a session with the retired certificate: %v", err)
	}
}

// TestStoreSweepSeesOtherReplicas: gateway replicas share one store but
// each holds its own sessions. A renewal that retires a certificate and a
// revocation, recorded in the store by another replica (here: another
// handle on the same file), reach this gateway's sessions at its next
// sweep: the old certificate's session is drained, the revoked
// connector's session closed.
func TestStoreSweepSeesOtherReplicas(t *testing.T) {
	tr := newTimedTrustRig(t, func(c *gateway.Config) { c.StoreSweep = 10 * time.Millisecond })
	ctx := context.Background()
	creds, err := agent.Enroll(ctx, agent.EnrollConfig{Gateway: tr.Tunnel, TLS: tr.tunnelTLS(), Token: testrig.Token})
	if err != nil {
		t.Fatal(err)
	}
	ended, _ := tr.serveRaw(testrig.DefaultTransport(), creds)
	tr.WaitSessions(testrig.Group, 1)
	id := creds.ConnectorID
	other := tr.openStore()

	// Another replica renewed the connector and saw the new certificate in use.
	if _, err := other.RenewConnector(ctx, id, "abc123", creds.Expires().Add(time.Hour), "v", "p"); err != nil {
		t.Fatal(err)
	}
	if ok, err := other.CertInUse(ctx, id, "abc123", tr.clock.Now()); err != nil || !ok {
		t.Fatalf("CertInUse = %v, %v", ok, err)
	}
	e := tr.waitLog("draining agent session: its certificate was replaced by a renewal")
	if e.ContextMap()["connector"] != id {
		t.Fatalf("drain logged as %v", e.ContextMap())
	}
	waitFor(t, "the retired session to stop being picked", func() bool { return tr.G.Registry().Count(testrig.Group) == 0 })

	// Another replica revoked it.
	if _, err := other.RevokeConnector(ctx, id, tr.clock.Now()); err != nil {
		t.Fatal(err)
	}
	tr.waitLog("agent sessions closed: the connector was revoked")
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("Serve = nil; want the session ended by the gateway")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked connector's session is still open")
	}
	waitFor(t, "the session to leave the registry", func() bool { return len(tr.connectorSessions(id)) == 0 })
	// Reconnecting is refused as revoked (the store says so).
	if err := tr.dialWith(creds); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a new session of the revoked connector: %v", err)
	}
}
