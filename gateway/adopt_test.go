package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
)

// adoptFirstStore lets another session adopt a certificate just before
// the caller does, as the agent's other connections do when they all
// reconnect at once.
type adoptFirstStore struct{ Store }

func (s adoptFirstStore) AdoptCert(ctx context.Context, id, prev, serial string, issued, expires time.Time) (bool, error) {
	if _, err := s.Store.AdoptCert(ctx, id, prev, serial, issued, expires); err != nil {
		return false, err
	}
	return s.Store.AdoptCert(ctx, id, prev, serial, issued, expires)
}

// TestAdoptRace: after a restored backup, the agent's sessions present a
// certificate newer than the store's at the same time; the one that does
// not adopt it finds it adopted and is accepted too. Without the fix it
// was refused as if the agent's certificate were wrong.
func TestAdoptRace(t *testing.T) {
	ctx := context.Background()
	mem, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: adoptFirstStore{mem}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	id := pki.Identity{ConnectorID: "c1", Group: "g"}
	issue := func() *tls.ConnectionState {
		t.Helper()
		csr, err := pki.CheckCSR(testCSR(t))
		if err != nil {
			t.Fatal(err)
		}
		is, err := g.authority.Issue(ctx, csr, id)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(is.DER)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	}
	old := issue()
	if err := mem.AddConnector(ctx, store.Connector{ID: "c1", Name: "c1", Group: "g", Enrolled: clk.Now(),
		CertSerial: old.PeerCertificates[0].SerialNumber.Text(16), CertExpires: old.PeerCertificates[0].NotAfter}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.identify(ctx, old); err != nil {
		t.Fatalf("the recorded certificate: %v", err)
	}
	clk.Advance(time.Hour)
	newer := issue() // issued after the backup the store came from
	c, _, err := g.identify(ctx, newer)
	if err != nil {
		t.Fatalf("a newer certificate, adopted meanwhile by another session: %v", err)
	}
	if want := newer.PeerCertificates[0].SerialNumber.Text(16); c.CertSerial != want || !c.CertInUse {
		t.Fatalf("connector %+v, want serial %s in use", c, want)
	}
}
