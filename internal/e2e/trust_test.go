package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

const adminToken = "admin-Secret-5d0c2b7a19"

// trustRig is a rig whose gateway keeps its state in a SQLite file (or a
// PostgreSQL database), runs the admin API, and tells time by a fake
// clock; its logs are observed.
type trustRig struct {
	*testrig.Rig
	t     *testing.T
	dir   string // the gateway's data_dir
	dsn   string // when set, the store is this PostgreSQL database instead
	store *store.DB
	clock *clock.Fake
	logs  *observer.ObservedLogs
}

func newTrustRig(t *testing.T, edit func(*gateway.Config)) *trustRig {
	t.Helper()
	return buildTrustRig(t, "", false, edit)
}

// newTimedTrustRig is newTrustRig whose gateway also times the end of
// sessions by the fake clock (Config.Clock): its sessions add waiters to
// it.
func newTimedTrustRig(t *testing.T, edit func(*gateway.Config)) *trustRig {
	t.Helper()
	return buildTrustRig(t, "", true, edit)
}

// buildTrustRig starts a trust rig whose store is in its data_dir or, when
// dsn is set, in that PostgreSQL database (a replica, when several rigs
// name one).
func buildTrustRig(t *testing.T, dsn string, timers bool, edit func(*gateway.Config)) *trustRig {
	t.Helper()
	tr := &trustRig{t: t, dir: t.TempDir(), dsn: dsn, clock: clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))}
	tr.store = tr.openStore()
	core, logs := observer.New(zap.DebugLevel)
	tr.logs = logs
	t.Cleanup(func() {
		// The test's output shows warnings only; a failure (a flaky wait,
		// say) comes with the rig's last lines at every level.
		if !t.Failed() {
			return
		}
		all := logs.All()
		for _, e := range all[max(0, len(all)-200):] {
			t.Logf("log: %s %s %s %s %v", e.Time.Format("15:04:05.000"), e.Level, e.LoggerName, e.Message, e.ContextMap())
		}
	})
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core()))
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "private")
	}))
	t.Cleanup(backend.Close)
	tr.Rig = testrig.New(t, testrig.Options{
		Log:    log,
		Routes: []gateway.Route{{App: "app", Hosts: []string{"app.test"}, Backend: testrig.MustURL(t, backend.URL)}},
		Gateway: func(c *gateway.Config) {
			c.Store = tr.store
			c.Now = tr.clock.Now
			if timers {
				c.Clock = tr.clock
			}
			c.AdminAddr = "127.0.0.1:0"
			c.AdminToken = adminToken
			if edit != nil {
				edit(c)
			}
		},
	})
	return tr
}

func (tr *trustRig) openStore() *store.DB {
	tr.t.Helper()
	var s *store.DB
	var err error
	if tr.dsn != "" {
		s, err = store.OpenPostgres(context.Background(), tr.dsn)
	} else {
		s, err = store.Open(context.Background(), tr.dir)
	}
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.t.Cleanup(func() { s.Close() })
	return s
}

// restartOnSameFile restarts the gateway on a freshly opened handle of
// the same SQLite file.
func (tr *trustRig) restartOnSameFile() {
	tr.Restart(func() gateway.Store {
		tr.store.Close()
		tr.store = tr.openStore()
		return tr.store
	})
}

// tunnelTLS verifies the rig gateway's tunnel certificate.
func (tr *trustRig) tunnelTLS() *tls.Config {
	return &tls.Config{RootCAs: tr.Roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// admin calls the admin API with token (empty: no Authorization header).
func (tr *trustRig) admin(method, path, token string, body any) (int, []byte) {
	tr.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, tr.AdminURL()+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tr.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// createToken makes an enrollment token through the admin API.
func (tr *trustRig) createToken(group, ttl string, uses int) gateway.APIToken {
	tr.t.Helper()
	code, b := tr.admin("POST", "/api/v1/tokens", adminToken, gateway.APITokenRequest{Group: group, TTL: ttl, Uses: &uses})
	var tok gateway.APIToken
	if code != http.StatusCreated || json.Unmarshal(b, &tok) != nil || !strings.HasPrefix(tok.Token, "spt_") {
		tr.t.Fatalf("create token = %d %s", code, b)
	}
	return tok
}

func (tr *trustRig) connectors() []gateway.APIConnector {
	tr.t.Helper()
	code, b := tr.admin("GET", "/api/v1/connectors", adminToken, nil)
	var cs []gateway.APIConnector
	if code != 200 || json.Unmarshal(b, &cs) != nil {
		tr.t.Fatalf("list connectors = %d %s", code, b)
	}
	return cs
}

// startAgent starts an agent keeping its state in dataDir, enrolling with
// token when it has no certificate, on the fake clock; it waits for its
// sessions unless wait is false.
func (tr *trustRig) startAgent(dataDir, token string, wait bool) *testrig.Agent {
	tr.t.Helper()
	return tr.startAgentConns(dataDir, token, 2, wait)
}

// startAgentConns is startAgent with conns connections.
func (tr *trustRig) startAgentConns(dataDir, token string, conns int, wait bool) *testrig.Agent {
	tr.t.Helper()
	before := tr.G.Registry().Count(testrig.Group)
	a := tr.StartAgent(func(c *agent.Config) {
		c.Token, c.DataDir, c.Clock, c.Connections = token, dataDir, tr.clock, conns
	})
	if wait {
		tr.WaitSessions(testrig.Group, before+conns)
	}
	return a
}

// waitLog waits for a log line containing msg.
func (tr *trustRig) waitLog(msg string) observer.LoggedEntry {
	tr.t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if es := tr.logs.FilterMessageSnippet(msg).All(); len(es) > 0 {
			return es[len(es)-1]
		}
		select {
		case <-tick.C:
		case <-deadline:
			tr.t.Fatalf("no log line %q", msg)
		}
	}
}

// noSecretsLogged fails if any log line (message or field) holds one of
// secrets.
func (tr *trustRig) noSecretsLogged(secrets ...string) {
	tr.t.Helper()
	for _, e := range tr.logs.All() {
		text := e.Message
		for k, v := range e.ContextMap() {
			text += " " + k + "=" + fmt.Sprint(v)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				tr.t.Errorf("log line %q contains a secret", text)
			}
		}
	}
}

func (tr *trustRig) get() int {
	tr.t.Helper()
	req, _ := http.NewRequest("GET", tr.URL+"/", nil)
	req.Host = "app.test"
	res, err := tr.Client().Do(req)
	if err != nil {
		tr.t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestEnrollSurvivesGatewayRestart: an agent enrolls with a single-use
// token into its data_dir; the gateway restarts on the same SQLite file;
// the agent reconnects without enrolling again, and a second run of it with
// no token at all connects with the stored certificate.
func TestEnrollSurvivesGatewayRestart(t *testing.T) {
	tr := newTrustRig(t, nil)
	tok := tr.createToken(testrig.Group, "1h", 1)
	dataDir := filepath.Join(t.TempDir(), "agent")
	a := tr.startAgent(dataDir, tok.Token, true)
	if code := tr.get(); code != 200 {
		t.Fatalf("GET through the enrolled agent = %d", code)
	}
	for name, mode := range map[string]os.FileMode{agent.KeyFile: 0o600, agent.CertFile: 0o644, agent.CABundleFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v mode %v, want %v", name, err, fi.Mode().Perm(), mode)
		}
	}
	if fi, _ := os.Stat(filepath.Join(tr.dir, store.FileName)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode %v", fi.Mode().Perm())
	}
	id := a.A.Certificate().ConnectorID
	cs := tr.connectors()
	if len(cs) != 1 || cs[0].ID != id || cs[0].Sessions != 2 || cs[0].Group != testrig.Group ||
		cs[0].Name != "rig-agent" || cs[0].ConnectedSince == nil || cs[0].RemoteAddr == "" ||
		!cs[0].CertExpires.Equal(a.A.Certificate().Expires()) {
		t.Fatalf("connectors = %+v", cs)
	}

	tr.restartOnSameFile()
	tr.WaitSessions(testrig.Group, 2)
	if code := tr.get(); code != 200 {
		t.Fatalf("GET after the restart = %d", code)
	}
	a.Stop()
	// The gateway sees the stopped agent's sessions end a moment after it
	// exits; startAgent counts from what is left.
	tr.WaitSessions(testrig.Group, 0)
	// The single-use token is spent: a second agent run works only because
	// the certificate is in data_dir.
	tr.startAgent(dataDir, "", true)
	if cs := tr.connectors(); len(cs) != 1 || cs[0].ID != id {
		t.Fatalf("the agent enrolled again: %+v", cs)
	}
	tr.noSecretsLogged(tok.Token, adminToken, "PRIVATE KEY")
}

// rawEnroll calls Enroll with a CSR of the caller's making.
func (tr *trustRig) rawEnroll(token string, csr []byte) error {
	cc, err := grpc.NewClient("passthrough:///"+tr.Tunnel, grpc.WithTransportCredentials(credentials.NewTLS(tr.tunnelTLS())))
	if err != nil {
		tr.t.Fatal(err)
	}
	defer cc.Close()
	_, err = tunnelv1.NewEnrollmentServiceClient(cc).Enroll(context.Background(), &tunnelv1.EnrollRequest{Token: token, Csr: csr})
	return err
}

func csr(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("got %v, want %s %q", err, code, msg)
	}
}

// TestEnrollBadInput: unknown, used and expired tokens, weak and mismatched
// CSRs (which leave the token unspent), and the per-address rate limit.
func TestEnrollBadInput(t *testing.T) {
	tr := newTrustRig(t, nil)
	once := tr.createToken(testrig.Group, "1h", 1)
	short := tr.createToken(testrig.Group, "10m", 0)
	tr.clock.Advance(10 * time.Minute)
	wantStatus(t, tr.rawEnroll(short.Token, csr(t, p256(t))), codes.Unauthenticated, "enrollment token expired")

	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, tr.rawEnroll(once.Token, csr(t, rsaKey)), codes.InvalidArgument, "too weak")
	good, other := csr(t, p256(t)), csr(t, p256(t))
	gc, _ := x509.ParseCertificateRequest(good)
	oc, _ := x509.ParseCertificateRequest(other)
	mismatched := bytes.Replace(good, gc.RawSubjectPublicKeyInfo, oc.RawSubjectPublicKeyInfo, 1)
	wantStatus(t, tr.rawEnroll(once.Token, mismatched), codes.InvalidArgument, "does not match")
	wantStatus(t, tr.rawEnroll(once.Token, []byte("garbage")), codes.InvalidArgument, "bad certificate request")
	// Bad CSRs did not spend the single-use token.
	if err := tr.rawEnroll(once.Token, good); err != nil {
		t.Fatalf("first use after bad CSRs: %v", err)
	}
	wantStatus(t, tr.rawEnroll(once.Token, other), codes.Unauthenticated, "enrollment token already used")
	// Five failures so far: the limit is reached, so even a good token is
	// refused from this address until the window ends.
	fresh := tr.createToken(testrig.Group, "1h", 1)
	wantStatus(t, tr.rawEnroll(fresh.Token, other), codes.ResourceExhausted, "too many failed enrollment attempts")
	tr.waitLog("enrollment attempts from this address are now rate-limited")
	tr.waitLog("enrollment refused: too many failed attempts")
	tr.clock.Advance(time.Minute)
	wantStatus(t, tr.rawEnroll("spt_unknown", other), codes.Unauthenticated, "enrollment token unknown")
	if err := tr.rawEnroll(fresh.Token, other); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	// The agent-side error says what happened.
	_, err = agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: tr.Tunnel, TLS: tr.tunnelTLS(), Token: once.Token})
	if !errors.Is(err, agent.ErrEnrollRefused) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("agent.Enroll with a used token = %v", err)
	}
	tr.noSecretsLogged(once.Token, short.Token, fresh.Token, "spt_unknown", adminToken)
}

// TestSingleUseTokenRace: concurrent enrollments race for a single-use
// token; exactly one wins.
func TestSingleUseTokenRace(t *testing.T) {
	tr := newTrustRig(t, func(c *gateway.Config) { c.EnrollFailures = 100 })
	tok := tr.createToken(testrig.Group, "1h", 1)
	if wins := raceEnroll(t, 8, tok.Token, tr); wins != 1 {
		t.Fatalf("%d enrollments won, want exactly 1", wins)
	}
	if cs := tr.connectors(); len(cs) != 1 {
		t.Fatalf("%d connectors recorded, want 1", len(cs))
	}
}

// raceEnroll enrolls n times at once with token, at the gateways in turn,
// and returns how many succeeded; it fails t for an enrollment refused for
// another reason than the token being used up.
func raceEnroll(t *testing.T, n int, token string, at ...*trustRig) int {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		r := at[i%len(at)]
		wg.Go(func() {
			_, errs[i] = agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: r.Tunnel, TLS: r.tunnelTLS(), Token: token})
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, agent.ErrEnrollRefused) || !strings.Contains(err.Error(), "already used"):
			t.Errorf("loser: %v", err)
		}
	}
	return wins
}

// dialWith opens a session presenting creds.
func (tr *trustRig) dialWith(creds *agent.Credentials) error {
	tc := tr.tunnelTLS()
	if creds != nil {
		tc.Certificates = []tls.Certificate{creds.Cert}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{Addr: tr.Tunnel, TLS: tc, Hello: &tunnelv1.Hello{Name: "raw"}})
	if err == nil {
		c, stop := context.WithCancel(context.Background())
		stop()
		cs.Serve(c, &tunnel.Server{}, nil)
	}
	return err
}

// TestSessionCertificates: a session needs a client certificate of this
// gateway's CA that is valid now; a token alone, a certificate of another
// gateway's CA, and an expired certificate are refused.
func TestSessionCertificates(t *testing.T) {
	tr := newTrustRig(t, nil)
	other := newTrustRig(t, nil)
	mine, err := agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: tr.Tunnel, TLS: tr.tunnelTLS(), Token: testrig.Token})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: other.Tunnel, TLS: other.tunnelTLS(), Token: testrig.Token})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.dialWith(mine); err != nil {
		t.Fatalf("own certificate: %v", err)
	}
	if err := tr.dialWith(nil); !errors.Is(err, grpctunnel.ErrUnauthenticated) || !strings.Contains(err.Error(), "no client certificate") {
		t.Fatalf("no certificate: %v", err)
	}
	if err := tr.dialWith(foreign); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	if e := tr.waitLog("agent refused at TLS"); !strings.Contains(fmt.Sprint(e.ContextMap()["reason"]), "not trusted") {
		t.Fatalf("refusal logged as %v", e.ContextMap())
	}
	tr.clock.Advance(31 * 24 * time.Hour)
	if err := tr.dialWith(mine); err == nil {
		t.Fatal("an expired certificate was accepted")
	}
	if len(tr.logs.FilterMessageSnippet("agent refused at TLS").FilterField(zap.String("reason",
		"client certificate not trusted: it expired at "+mine.Expires().UTC().Format(time.RFC3339))).All()) != 1 {
		t.Fatal("the expired certificate's refusal was not logged with its expiry")
	}
}

// TestTLSRefusalLogIsLimited: a peer that keeps presenting a certificate of
// another CA cannot flood the gateway's log: 20 refusal lines a minute. The
// gateway logs before it sends the alert that fails the dial, so the count
// is exact. Every refusal is counted in session_refusals_total under reason
// certificate all the same, also those whose line the limit held back
// (TLS-handshake refusals were not counted at all before).
func TestTLSRefusalLogIsLimited(t *testing.T) {
	tr := newTrustRig(t, nil)
	other := newTrustRig(t, nil)
	foreign, err := agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: other.Tunnel, TLS: other.tunnelTLS(), Token: testrig.Token})
	if err != nil {
		t.Fatal(err)
	}
	for range 25 {
		if err := tr.dialWith(foreign); err == nil {
			t.Fatal("a certificate of another CA was accepted")
		}
	}
	if n := len(tr.logs.FilterMessage("agent refused at TLS").All()); n != 20 {
		t.Fatalf("%d refusal lines, want 20", n)
	}
	s := scrape(t, tr.AdminURL()+"/metrics")
	wantSeries(t, s, map[string]float64{`sallyport_gateway_session_refusals_total{reason="certificate"}`: 25})
}

// TestExpiredWhileOffline: an agent whose certificate expired while it was
// stopped does not start; it names the expiry date and how to re-enroll.
func TestExpiredWhileOffline(t *testing.T) {
	tr := newTrustRig(t, nil)
	dataDir := t.TempDir()
	a := tr.startAgent(dataDir, testrig.Token, true)
	expires := a.A.Certificate().Expires()
	a.Stop()
	tr.clock.Advance(31 * 24 * time.Hour)
	b := tr.startAgent(dataDir, testrig.Token, false)
	err := b.Exited(t)
	if !errors.Is(err, agent.ErrCertificateExpired) || !strings.Contains(err.Error(), expires.UTC().Format(time.RFC3339)) ||
		!strings.Contains(err.Error(), "sallyport agent enroll --gateway "+tr.Tunnel) ||
		!strings.Contains(err.Error(), "--data-dir "+dataDir) {
		t.Fatalf("Run = %v", err)
	}
}

// TestRenewal: at two thirds of the lifetime the agent renews over mutual
// TLS, retrying while the gateway is away; new sessions use the new
// certificate, which the gateway accepts after the old one expired.
func TestRenewal(t *testing.T) {
	tr := newTrustRig(t, nil)
	a := tr.startAgent(t.TempDir(), testrig.Token, true)
	old := a.A.Certificate()
	if !tr.clock.WaitForWaiter(1, nil) {
		t.Fatal("no renewal timer")
	}
	// The gateway is away when renewal is due: the agent retries.
	if err := tr.StopGateway(); err != nil {
		t.Fatal(err)
	}
	tr.clock.Advance(old.RenewAt().Sub(tr.clock.Now()))
	if !tr.clock.WaitForWaiter(1, nil) { // the retry timer
		t.Fatal("no retry after a failed renewal")
	}
	tr.waitLog("certificate renewal failed; retrying")
	tr.StartGateway(nil)
	tr.clock.Advance(time.Minute)
	select {
	case <-a.A.Renewed():
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal")
	}
	cur := a.A.Certificate()
	if cur.ConnectorID != old.ConnectorID || cur.Cert.Leaf.SerialNumber.Cmp(old.Cert.Leaf.SerialNumber) == 0 ||
		!cur.Expires().After(old.Expires()) {
		t.Fatalf("renewed %+v from %+v", cur.Cert.Leaf.SerialNumber, old.Cert.Leaf.SerialNumber)
	}
	c, err := tr.store.Connector(context.Background(), cur.ConnectorID)
	if err != nil || c.CertSerial != cur.Cert.Leaf.SerialNumber.Text(16) || !c.CertExpires.Equal(cur.Expires()) {
		t.Fatalf("store after renewal: %+v, %v", c, err)
	}
	// Past the old certificate's expiry, new sessions use the new one.
	tr.clock.Advance(old.Expires().Sub(tr.clock.Now()) + time.Hour)
	if err := tr.dialWith(old); err == nil {
		t.Fatal("the old certificate still opens sessions after it expired")
	}
	tr.WaitSessions(testrig.Group, 2)
	if n := tr.G.Registry().CloseConnector(cur.ConnectorID, errors.New("test: reconnect")); n != 2 {
		t.Fatalf("closed %d sessions", n)
	}
	tr.WaitSessions(testrig.Group, 2)
	if code := tr.get(); code != 200 {
		t.Fatalf("GET after renewal = %d", code)
	}
}

// TestRevoke: revoking a connector closes its sessions within a second;
// its reconnects and its renewals are refused with `revoked`, and the
// agent stops saying so. Other connectors are untouched.
func TestRevoke(t *testing.T) {
	tr := newTrustRig(t, nil)
	victim := tr.startAgent(t.TempDir(), testrig.Token, true)
	bystander := tr.startAgent(t.TempDir(), testrig.Token, true)
	id := victim.A.Certificate().ConnectorID

	start := time.Now()
	code, b := tr.admin("POST", "/api/v1/connectors/"+id+"/revoke", adminToken, nil)
	if code != 200 {
		t.Fatalf("revoke = %d %s", code, b)
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for tr.G.Registry().Count(testrig.Group) != 2 {
		if time.Since(start) > time.Second {
			t.Fatalf("the revoked connector still has sessions after 1s")
		}
		<-tick.C
	}
	err := victim.Exited(t)
	if !errors.Is(err, tunnel.ErrRevoked) || !strings.Contains(err.Error(), "connector "+id+" was revoked") {
		t.Fatalf("revoked agent's Run = %v", err)
	}
	tr.waitLog("agent refused: revoked")
	if code := tr.get(); code != 200 {
		t.Fatalf("the bystander does not serve: %d", code)
	}
	_ = bystander

	// Renewal with the revoked certificate.
	creds := victim.A.Certificate()
	tc := tr.tunnelTLS()
	tc.Certificates = []tls.Certificate{creds.Cert}
	cc, err := grpc.NewClient("passthrough:///"+tr.Tunnel, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = tunnelv1.NewEnrollmentServiceClient(cc).Renew(context.Background(), &tunnelv1.RenewRequest{Csr: csr(t, p256(t))})
	wantStatus(t, err, codes.PermissionDenied, "revoked")
	tr.waitLog("renewal refused")

	cs := tr.connectors()
	for _, c := range cs {
		if (c.ID == id) != (c.Revoked != nil) {
			t.Fatalf("connector %s revoked = %v", c.ID, c.Revoked)
		}
	}
	if code, _ := tr.admin("POST", "/api/v1/connectors/nope/revoke", adminToken, nil); code != 404 {
		t.Fatalf("revoke unknown = %d", code)
	}
}

// TestAdminAPI: authentication (401 with no detail), health, and tokens.
func TestAdminAPI(t *testing.T) {
	tr := newTrustRig(t, nil)
	for _, tc := range []struct{ name, header string }{
		{"none", ""},
		{"wrong", "Bearer wrong"},
		{"prefix of the token", "Bearer " + adminToken[:len(adminToken)-1]},
		{"basic", "Basic " + adminToken},
		{"no scheme", adminToken},
	} {
		for _, path := range []string{"/api/v1/tokens", "/api/v1/connectors", "/api/v1/nope"} {
			req, _ := http.NewRequest("GET", tr.AdminURL()+path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 401 || string(b) != "unauthorized\n" {
				t.Fatalf("%s %s: %d %q, want 401 without detail", tc.name, path, res.StatusCode, b)
			}
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := tr.admin("GET", p, "", nil); code != 200 {
			t.Fatalf("%s = %d", p, code)
		}
	}
	tok := tr.createToken("default", "24h", 3)
	if tok.Uses != 3 || tok.Expires == nil || !tok.Expires.Equal(tr.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("created %+v", tok)
	}
	never := tr.createToken("default", "0s", 0)
	code, b := tr.admin("GET", "/api/v1/tokens", adminToken, nil)
	if code != 200 || strings.Contains(string(b), tok.Token) || strings.Contains(string(b), never.Token) {
		t.Fatalf("list = %d %s (must not show secrets)", code, b)
	}
	var list []gateway.APIToken
	json.Unmarshal(b, &list)
	byID := map[string]gateway.APIToken{}
	for _, x := range list {
		byID[x.ID] = x
	}
	if len(list) != 3 || byID["config-0"].Source != "config" || byID[tok.ID].Uses != 3 || byID[never.ID].Expires != nil {
		t.Fatalf("list = %+v", list)
	}
	for _, bad := range []gateway.APITokenRequest{{Group: ""}, {Group: "a b"}, {Group: "g", TTL: "soon"}, {Group: "g", TTL: "-1h"}} {
		if code, b := tr.admin("POST", "/api/v1/tokens", adminToken, bad); code != 400 || !strings.Contains(string(b), `"error"`) {
			t.Fatalf("create %+v = %d %s", bad, code, b)
		}
	}
	if code, _ := tr.admin("DELETE", "/api/v1/tokens/"+tok.ID, adminToken, nil); code != 204 {
		t.Fatalf("delete = %d", code)
	}
	if code, _ := tr.admin("DELETE", "/api/v1/tokens/"+tok.ID, adminToken, nil); code != 404 {
		t.Fatalf("delete again = %d", code)
	}
	if err := tr.rawEnroll(tok.Token, csr(t, p256(t))); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("enroll with a deleted token: %v", err)
	}
	tr.noSecretsLogged(tok.Token, never.Token, adminToken)
}

// TestSelfEnrollSameNameWarns: an agent that enrolls itself (token: in its
// config) under a name that a live connector of its group already has logs
// which ones, and how to revoke the one it replaces, as `agent enroll`
// prints. It used to say nothing; only the gateway logged it.
func TestSelfEnrollSameNameWarns(t *testing.T) {
	rig := testrig.New(t, testrig.Options{})
	first := rig.StartAgent(func(cfg *agent.Config) { cfg.Name = "web-1" })
	core, logs := observer.New(zap.WarnLevel)
	rig.StartAgent(func(cfg *agent.Config) {
		cfg.Name = "web-1"
		cfg.Log = zap.New(core)
	})
	lines := logs.FilterMessageSnippet("enrolled under a name that other connectors of the group have").All()
	if len(lines) != 1 {
		t.Fatalf("%d same-name warnings from the second agent; want 1: %v", len(lines), logs.All())
	}
	f := lines[0].ContextMap()
	ids, _ := f["same_name_connectors"].([]any)
	if f["name"] != "web-1" || len(ids) != 1 || ids[0] != first.A.Certificate().ConnectorID {
		t.Errorf("warning fields %v; want name web-1 and the first agent's connector %q", f, first.A.Certificate().ConnectorID)
	}
}
