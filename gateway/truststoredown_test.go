package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// driverRefusedText is what a PostgreSQL driver says when the server does not
// answer: it names the database's host, port and user, which agents must
// not be told.
const driverRefusedText = "failed to connect to `user=sallyport database=sallyport`: 10.9.8.7:5432 (db.internal): dial error: connect: connection refused"

// downStore is a store that does not answer while down is set: its calls
// fail with an error store.Unavailable recognises.
type downStore struct {
	Store
	down atomic.Bool
}

func (s *downStore) err() error {
	return fmt.Errorf("read: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New(driverRefusedText)})
}

func (s *downStore) CAs(ctx context.Context) ([]store.CA, error) {
	if s.down.Load() {
		return nil, s.err()
	}
	return s.Store.CAs(ctx)
}

func (s *downStore) Connector(ctx context.Context, id string) (store.Connector, error) {
	if s.down.Load() {
		return store.Connector{}, s.err()
	}
	return s.Store.Connector(ctx, id)
}

func (s *downStore) CheckToken(ctx context.Context, hash [32]byte, now time.Time) (store.Token, error) {
	if s.down.Load() {
		return store.Token{}, s.err()
	}
	return s.Store.CheckToken(ctx, hash, now)
}

// downGateway is a gateway on an in-memory store behind a downStore, with
// connector c1 of group g enrolled; it returns a TLS state presenting c1's
// certificate.
func downGateway(t *testing.T) (*Gateway, *downStore, *tls.ConnectionState) {
	t.Helper()
	ctx := context.Background()
	mem, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	ds := &downStore{Store: mem}
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: ds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.closeOwnStore() })
	csr, err := pki.CheckCSR(testCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	is, err := g.authority.Issue(ctx, csr, pki.Identity{ConnectorID: "c1", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(is.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.AddConnector(ctx, store.Connector{ID: "c1", Name: "c1", Group: "g", Enrolled: g.now(),
		CertSerial: is.Serial, CertExpires: is.NotAfter}); err != nil {
		t.Fatal(err)
	}
	return g, ds, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
}

// TestTrustStoreDownNotRefusedAtTLS: when the store does not answer while
// an agent's certificate is checked, the TLS handshake is not refused (the
// agent read the bad_certificate alert as "not signed by the gateway's
// connector CA; enroll the agent again"); the session's check refuses it
// inside the protocol, saying the database does not answer, without the
// driver's words (the database's host, port and user). A certificate of
// another CA is still refused at TLS.
func TestTrustStoreDownNotRefusedAtTLS(t *testing.T) {
	g, ds, cs := downGateway(t)
	if err := g.verifyTunnelConn(*cs); err != nil {
		t.Fatalf("store up: %v", err)
	}
	if _, err := g.authenticateSession(cs, ""); err != nil {
		t.Fatalf("store up: session refused: %v", err)
	}
	ds.down.Store(true)
	if err := g.verifyTunnelConn(*cs); err != nil {
		t.Fatalf("store down: the TLS handshake was refused (agents are told to enroll again): %v", err)
	}
	_, err := g.authenticateSession(cs, "")
	if !errors.Is(err, errStoreDown) || strings.Contains(err.Error(), "10.9.8.7") ||
		!strings.Contains(err.Error(), "the gateway's database does not answer; the agent retries by itself") {
		t.Fatalf("store down: session refused with %v; want the database does not answer, without the driver's text", err)
	}
	// A certificate of another CA: refused at TLS, store up or down.
	other := foreignCert(t)
	// A certificate of another CA: refused at TLS while the store answers;
	// while it does not, the CAs cannot be read, and the session refuses.
	ds.down.Store(false)
	if err := g.verifyTunnelConn(*other); !errors.Is(err, pki.ErrUntrusted) {
		t.Fatalf("a certificate of another CA: %v, want refused at TLS", err)
	}
	ds.down.Store(true)
	if _, err := g.authenticateSession(other, ""); !errors.Is(err, errStoreDown) {
		t.Fatalf("store down: another CA's certificate in the session: %v", err)
	}
}

// TestTrustRevokedStillRefused: revoked and retired refusals are not
// changed by the store-down path (the store answers: they are refusals).
func TestTrustRevokedStillRefused(t *testing.T) {
	g, _, cs := downGateway(t)
	if _, _, err := g.Revoke(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.authenticateSession(cs, ""); !errors.Is(err, tunnel.ErrRevoked) {
		t.Fatalf("revoked: %v", err)
	}
}

// foreignCert is a TLS state presenting a self-signed client certificate
// (of no connector CA).
func foreignCert(t *testing.T) *tls.ConnectionState {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "stranger"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
}

// tlsPeerContext is the context of a gRPC call over TLS presenting cs.
func tlsPeerContext(cs *tls.ConnectionState) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000},
		AuthInfo: credentials.TLSInfo{State: *cs},
	})
}

// TestEnrollRenewStoreDown: enrollment and renewal while the store does
// not answer are Unavailable (the agent retries), saying the database
// does not answer (and, for enrollment, that the token was not spent),
// without the driver's words. Renewal was Unauthenticated with them.
func TestEnrollRenewStoreDown(t *testing.T) {
	g, ds, cs := downGateway(t)
	ds.down.Store(true)
	e := &enrollService{g: g}
	_, err := e.Renew(tlsPeerContext(cs), &tunnelv1.RenewRequest{Csr: testCSR(t)})
	if status.Code(err) != grpccodes.Unavailable || strings.Contains(err.Error(), "10.9.8.7") ||
		!strings.Contains(err.Error(), "the gateway's database does not answer; the agent retries by itself") {
		t.Fatalf("renewal, store down: %v; want Unavailable, the database does not answer", err)
	}
	_, err = e.Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: "spt_some", Csr: testCSR(t)})
	if status.Code(err) != grpccodes.Unavailable || strings.Contains(err.Error(), "10.9.8.7") ||
		!strings.Contains(err.Error(), "the gateway's database does not answer; the token was not spent; try again") {
		t.Fatalf("enrollment, store down: %v; want Unavailable, the database does not answer, the token was not spent", err)
	}
	if !grpctunnel.SaysTokenUnspent(err) {
		t.Errorf("enrollment, store down: %v carries no ErrorInfo %s", err, tunnel.ReasonTokenUnspent)
	}
	ds.down.Store(false)
	if _, err := e.Renew(tlsPeerContext(cs), &tunnelv1.RenewRequest{Csr: testCSR(t)}); err != nil {
		t.Fatalf("renewal, store back: %v", err)
	}
}

// closeRecorder is a fakeSession that keeps the reason it was closed with.
type closeRecorder struct {
	*fakeSession
	reason error
}

func (s *closeRecorder) Close(err error) {
	if s.reason == nil {
		s.reason = err
	}
	s.fakeSession.Close(err)
}

// TestRecheckStoreDown: a session registered while the store stops
// answering is closed telling the agent the database does not answer,
// not with the driver's words (the database's host, port and user).
func TestRecheckStoreDown(t *testing.T) {
	g, ds, _ := downGateway(t)
	ds.down.Store(true)
	s := &closeRecorder{fakeSession: newFakeSession("s1", "g")}
	s.info.ConnectorID = "c1"
	if g.addSession(s) {
		t.Fatal("a session whose revocation was not checked was kept")
	}
	if s.reason == nil || !errors.Is(s.reason, errStoreDown) || strings.Contains(s.reason.Error(), "10.9.8.7") {
		t.Fatalf("session closed with %v; want the database does not answer, without the driver's text", s.reason)
	}
}
