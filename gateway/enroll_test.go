package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// holdStore holds every CheckToken until the test lets it proceed.
type holdStore struct {
	Store
	entered chan struct{}
	proceed chan struct{}
}

func (s *holdStore) CheckToken(ctx context.Context, hash [32]byte, now time.Time) (store.Token, error) {
	s.entered <- struct{}{}
	<-s.proceed
	return s.Store.CheckToken(ctx, hash, now)
}

// TestEnrollLimitHoldsForParallelAttempts: wrong tokens sent from one
// address in parallel (many streams at once) get no more guesses than sent
// one after the other: the limit's failures are counted before the next
// attempt is judged.
func TestEnrollLimitHoldsForParallelAttempts(t *testing.T) {
	mem, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	hs := &holdStore{Store: mem, entered: make(chan struct{}), proceed: make(chan struct{})}
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: hs})
	if err != nil {
		t.Fatal(err)
	}
	csr := testCSR(t)
	ctx := peerContext()
	const n = 8
	codes := make(chan grpccodes.Code, n)
	started := make(chan struct{})
	for range n {
		go func() {
			started <- struct{}{}
			_, err := (&enrollService{g: g}).Enroll(ctx, &tunnelv1.EnrollRequest{Token: "spt_guess", Csr: csr})
			codes <- status.Code(err)
		}()
	}
	// Every attempt is under way before the first token check can fail.
	for range n {
		<-started
	}
	got := map[grpccodes.Code]int{}
	for done := 0; done < n; {
		select {
		case <-hs.entered:
			hs.proceed <- struct{}{}
		case c := <-codes:
			got[c]++
			done++
		}
	}
	max := g.limiter.maxFailures()
	if got[grpccodes.Unauthenticated] != max || got[grpccodes.ResourceExhausted] != n-max {
		t.Fatalf("answers %v: want %d token checks (Unauthenticated), then %d refusals (ResourceExhausted)", got, max, n-max)
	}
	if len(g.limiter.turns) != 0 {
		t.Fatalf("%d turns left behind", len(g.limiter.turns))
	}
}

func testCSR(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// peerContext is the context of a gRPC call from 192.0.2.7.
func peerContext() context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000}})
}

// TestEnrollRefusesControlCharacters: the name, version and platform an
// agent sends are stored and shown by `sallyport connector list` and the
// admin API; terminal escape sequences or line breaks in them would let
// a token holder rewrite an administrator's terminal or forge list lines.
func TestEnrollRefusesControlCharacters(t *testing.T) {
	g, err := New(Config{TunnelTLS: &tls.Config{}, Tokens: []Token{{Token: "spt_config", Group: "g"}}, EnrollFailures: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	e := &enrollService{g: g}
	for _, req := range []*tunnelv1.EnrollRequest{
		{Name: "host\x1b]0;owned\x07"},
		{Name: "host\nabc123  evil  default"},
		{Version: "1.0\r"},
		{Platform: "linux/amd64\x7f"},
		{Name: "bad utf-8 \xff"},
		{Name: strings.Repeat("n", maxFieldBytes+1)},
	} {
		req.Token, req.Csr = "spt_config", testCSR(t)
		_, err := e.Enroll(peerContext(), req)
		if status.Code(err) != grpccodes.InvalidArgument || !strings.Contains(err.Error(), "name, version and platform") {
			t.Errorf("%q %q %q: %v, want InvalidArgument naming the fields", req.Name, req.Version, req.Platform, err)
		}
	}
	big := &tunnelv1.EnrollRequest{Token: "spt_config", Csr: make([]byte, maxCSRBytes+1), Name: "host"}
	if _, err := e.Enroll(peerContext(), big); status.Code(err) != grpccodes.InvalidArgument || !strings.Contains(err.Error(), "CSR is larger") {
		t.Errorf("a CSR of %d bytes: %v, want InvalidArgument naming the CSR", len(big.Csr), err)
	}
	res, err := e.Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: "spt_config", Csr: testCSR(t),
		Name: "host-1.example", Version: "1.2.3", Platform: "linux/arm64"})
	if err != nil || res.GetGroup() != "g" {
		t.Fatalf("a plain request: %v, %v", res, err)
	}
	// The version and platform of a live session come from the agent's
	// hello; the connector list does not show them unless plain either.
	live := []SessionStatus{{SessionInfo: tunnel.SessionInfo{ConnectorID: "c", Version: "1.2.3\x1b[2J", Platform: "linux/amd64"}}}
	if v := g.connectorView(store.Connector{ID: "c", Version: "1.2.3", Platform: "linux/amd64"}, live); v.Version != "1.2.3" || v.Sessions != 1 {
		t.Errorf("connector view: %+v", v)
	}
}

// failStore fails the CA read (so issuing fails) or the connector's record
// while its flags are set.
type failStore struct {
	Store
	failCAs    atomic.Bool
	failEnroll atomic.Bool
	lostAnswer atomic.Bool // EnrollConnector applies the write, then fails
	failLookup atomic.Bool // Connector fails
}

func (s *failStore) Connector(ctx context.Context, id string) (store.Connector, error) {
	if s.failLookup.Load() {
		return store.Connector{}, errors.New("test: the store does not answer")
	}
	return s.Store.Connector(ctx, id)
}

func (s *failStore) CAs(ctx context.Context) ([]store.CA, error) {
	if s.failCAs.Load() {
		return nil, errors.New("test: the CA table is unreadable")
	}
	return s.Store.CAs(ctx)
}

func (s *failStore) EnrollConnector(ctx context.Context, hash [32]byte, now time.Time, c store.Connector) (store.Token, error) {
	if s.failEnroll.Load() {
		return store.Token{}, errors.New("test: disk full")
	}
	t, err := s.Store.EnrollConnector(ctx, hash, now, c)
	if err == nil && s.lostAnswer.Load() {
		return store.Token{}, errors.New("test: connection lost waiting for the commit's answer")
	}
	return t, err
}

// failingGateway is a gateway on an in-memory store behind a failStore,
// with cfg's other settings.
func failingGateway(t *testing.T, cfg Config) (*Gateway, *failStore, *store.DB) {
	t.Helper()
	mem, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	fs := &failStore{Store: mem}
	cfg.TunnelTLS, cfg.Store = &tls.Config{}, fs
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g, fs, mem
}

// addSingleUseToken stores a single-use token of group "g" under id.
func addSingleUseToken(t *testing.T, mem *store.DB, id, token string) {
	t.Helper()
	tok := store.Token{ID: id, Hash: sha256.Sum256([]byte(token)), Group: "g", MaxUses: 1}
	if err := mem.CreateToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
}

// TestEnrollCommitAnswerLost: when the store applies the enrollment but
// its answer is lost (PostgreSQL's connection breaks after COMMIT), the
// agent gets its certificate. It was told the token was not spent, which
// was false: its retry was refused as already used, and the connector
// stayed listed with nobody holding its key (found by a probe against
// PostgreSQL).
func TestEnrollCommitAnswerLost(t *testing.T) {
	g, fs, mem := failingGateway(t, Config{})
	fs.lostAnswer.Store(true)
	ctx := context.Background()
	const token = "spt_once"
	addSingleUseToken(t, mem, "once", token)
	res, err := (&enrollService{g: g}).Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: token, Csr: testCSR(t)})
	if err != nil {
		t.Fatalf("enroll with the commit's answer lost: %v", err)
	}
	cs, _ := mem.Connectors(ctx)
	if len(cs) != 1 || cs[0].ID != res.GetConnectorId() || len(res.GetCertificate()) == 0 {
		t.Fatalf("connectors %+v, response %v: want the one enrolled, with its certificate", cs, res)
	}
	// When the store cannot say, the agent is not told the token is unspent.
	fs.failLookup.Store(true)
	const token2 = "spt_twice"
	addSingleUseToken(t, mem, "twice", token2)
	_, err = (&enrollService{g: g}).Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: token2, Csr: testCSR(t)})
	if status.Code(err) != grpccodes.Internal || !strings.Contains(err.Error(), "did not say whether the token was spent") ||
		strings.Contains(err.Error(), "not spent") {
		t.Fatalf("enroll with the answer and the check lost: %v", err)
	}
}

// TestEnrollFailureKeepsToken: when the gateway fails after the token was
// checked (issuing the certificate, recording the connector), a single-use
// token is not spent and the failure is not held against the agent's
// address; the retry enrolls, and only then is the token used up.
func TestEnrollFailureKeepsToken(t *testing.T) {
	g, fs, mem := failingGateway(t, Config{EnrollFailures: 1})
	ctx := context.Background()
	const token = "spt_once"
	addSingleUseToken(t, mem, "once", token)
	e := &enrollService{g: g}
	enroll := func() error {
		_, err := e.Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: token, Csr: testCSR(t)})
		return err
	}
	for _, tc := range []struct {
		name string
		flag *atomic.Bool
		msg  string
	}{
		{"issuing", &fs.failCAs, "could not issue a certificate (the token was not spent)"},
		{"recording", &fs.failEnroll, "could not record the connector (the token was not spent)"},
	} {
		tc.flag.Store(true)
		err := enroll()
		tc.flag.Store(false)
		if status.Code(err) != grpccodes.Internal || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("%s fails: %v, want Internal %q", tc.name, err, tc.msg)
		}
		if !grpctunnel.SaysTokenUnspent(err) {
			t.Errorf("%s fails: %v carries no ErrorInfo %s", tc.name, err, tunnel.ReasonTokenUnspent)
		}
		if toks, _ := mem.Tokens(ctx); len(toks) != 1 || toks[0].Used != 0 {
			t.Fatalf("%s failed and the token was spent: %+v", tc.name, toks)
		}
	}
	if cs, _ := mem.Connectors(ctx); len(cs) != 0 {
		t.Fatalf("failed enrollments recorded connectors: %+v", cs)
	}
	if err := enroll(); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if err := enroll(); status.Code(err) != grpccodes.Unauthenticated || !strings.Contains(err.Error(), "already used") ||
		grpctunnel.SaysTokenUnspent(err) {
		t.Fatalf("a second use: %v; want Unauthenticated, already used, without ErrorInfo %s", err, tunnel.ReasonTokenUnspent)
	}
}
