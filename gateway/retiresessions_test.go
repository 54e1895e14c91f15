package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// TestSweepClosesSessionsOfRetiredCA: `ca rotate --retire-previous`
// (--force, to cut off a CA whose key may be known) ends the sessions
// whose certificates chain to a retired CA at the next store sweep, as a
// revocation does. They stayed open until their certificates expired, a
// lifetime later (or, for certificates made with a stolen CA key, whenever
// their maker chose), while every new handshake was refused. Sessions
// with certificates of the remaining CA stay.
func TestSweepClosesSessionsOfRetiredCA(t *testing.T) {
	ctx := context.Background()
	mem, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: mem})
	if err != nil {
		t.Fatal(err)
	}
	secret := NewToken()
	if err := mem.CreateToken(ctx, store.Token{ID: "t1", Hash: sha256.Sum256([]byte(secret)), Group: "g",
		Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// A session of a connector enrolled under the CA in use now, and the
	// session registered as the tunnel does it.
	open := func(id string) *fakeSession {
		t.Helper()
		res, err := (&enrollService{g: g}).Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: secret, Csr: testCSR(t)})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(res.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		ident, err := g.authenticateSession(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}, "")
		if err != nil {
			t.Fatal(err)
		}
		s := newFakeSession(id, ident.Group)
		s.info.ConnectorID, s.info.CertSerial, s.info.CertExpires = ident.ConnectorID, ident.CertSerial, ident.CertExpires
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not registered")
		}
		return s
	}
	old := open("s-old")
	if _, err := g.authority.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	cur := open("s-new")
	g.sweep()
	if isClosed(old.Done()) || isClosed(cur.Done()) {
		t.Fatal("a sweep with both CAs held closed a session")
	}
	if n, err := mem.RetireCAs(ctx); err != nil || n != 1 {
		t.Fatalf("RetireCAs = %d, %v", n, err)
	}
	g.sweep()
	if !isClosed(old.Done()) {
		t.Fatal("the session whose certificate chains to the retired CA is still open after a sweep")
	}
	if isClosed(cur.Done()) {
		t.Fatal("the session with a certificate of the remaining CA was closed")
	}
}
