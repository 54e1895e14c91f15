package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func newAuthority(t *testing.T) (*Authority, *clock, *store.DB) {
	t.Helper()
	s, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := &Authority{Store: s, Now: c.Now}
	if created, err := a.Init(context.Background()); err != nil || !created {
		t.Fatalf("Init = %v, %v", created, err)
	}
	if created, err := a.Init(context.Background()); err != nil || created {
		t.Fatalf("second Init = %v, %v; want nothing created", created, err)
	}
	return a, c, s
}

func csrFor(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}, key)
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

func issue(t *testing.T, a *Authority, key *ecdsa.PrivateKey, id Identity) *x509.Certificate {
	t.Helper()
	csr, err := CheckCSR(csrFor(t, key))
	if err != nil {
		t.Fatal(err)
	}
	is, err := a.Issue(context.Background(), csr, id)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(is.DER)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestIssueAndIdentify(t *testing.T) {
	a, c, _ := newAuthority(t)
	id := Identity{ConnectorID: "c0ffee", Group: "corp apps"}
	cert := issue(t, a, p256(t), id)
	if got := cert.NotAfter.Sub(c.t); got != DefaultLifetime {
		t.Errorf("lifetime %v, want %v", got, DefaultLifetime)
	}
	got, _, err := a.Identify(context.Background(), &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
	if err != nil || got != id {
		t.Fatalf("Identify = %+v, %v; want %+v", got, err, id)
	}
	// Expired.
	c.t = cert.NotAfter.Add(time.Second)
	_, _, err = a.Identify(context.Background(), &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: Identify = %v", err)
	}
	if _, _, err := a.Identify(context.Background(), &tls.ConnectionState{}); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("no cert: %v", err)
	}
}

func TestLifetimeConfigurable(t *testing.T) {
	a, c, _ := newAuthority(t)
	a.Lifetime = time.Hour
	cert := issue(t, a, p256(t), Identity{ConnectorID: "x", Group: "g"})
	if cert.NotAfter.Sub(c.t) != time.Hour {
		t.Fatalf("NotAfter %v", cert.NotAfter)
	}
}

func TestOtherCARefused(t *testing.T) {
	a, _, _ := newAuthority(t)
	other, _, _ := newAuthority(t)
	cert := issue(t, other, p256(t), Identity{ConnectorID: "x", Group: "g"})
	_, _, err := a.Identify(context.Background(), &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
	if !errors.Is(err, ErrUntrusted) {
		t.Fatalf("cert from another CA: %v", err)
	}
}

func TestRotationKeepsOldCertsValid(t *testing.T) {
	a, _, s := newAuthority(t)
	old := issue(t, a, p256(t), Identity{ConnectorID: "old", Group: "g"})
	if _, err := a.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	renewed := issue(t, a, p256(t), Identity{ConnectorID: "new", Group: "g"})
	if bytes.Equal(old.RawIssuer, renewed.RawIssuer) && bytes.Equal(old.AuthorityKeyId, renewed.AuthorityKeyId) {
		t.Fatal("the new certificate was signed by the old CA")
	}
	for _, c := range []*x509.Certificate{old, renewed} {
		if _, _, err := a.Identify(context.Background(), &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}); err != nil {
			t.Fatalf("after rotation %s: %v", c.Subject.CommonName, err)
		}
	}
	b, _ := a.Bundle(context.Background())
	if n := bytes.Count(b, []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Fatalf("bundle has %d CAs, want 2", n)
	}
	// Retiring the old CA makes its certificates untrusted.
	if _, err := s.RetireCAs(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Identify(context.Background(), &tls.ConnectionState{PeerCertificates: []*x509.Certificate{old}}); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("old cert after retire: %v", err)
	}
}

func TestCheckCSR(t *testing.T) {
	good := csrFor(t, p256(t))
	if _, err := CheckCSR(good); err != nil {
		t.Fatalf("good CSR: %v", err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A CSR whose public key is not the key that signed it.
	other := csrFor(t, p256(t))
	goodCSR, _ := x509.ParseCertificateRequest(good)
	otherCSR, _ := x509.ParseCertificateRequest(other)
	mismatched := bytes.Replace(good, goodCSR.RawSubjectPublicKeyInfo, otherCSR.RawSubjectPublicKeyInfo, 1)

	for name, tc := range map[string]struct {
		der  []byte
		want string
	}{
		"garbage":    {[]byte("not a csr"), "bad certificate request"},
		"rsa 1024":   {csrFor(t, rsa1024), "too weak"},
		"p224":       {csrFor(t, p224), "too weak"},
		"mismatched": {mismatched, "does not match"},
	} {
		_, err := CheckCSR(tc.der)
		if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: CheckCSR = %v, want %q", name, err, tc.want)
		}
	}
}

// TestCheckCSRRefusesRSAOverTLSLimit: crypto/tls refuses a client
// certificate whose RSA key has more than 8192 bits, so a certificate
// issued for one could never open a session and the enrollment token's use
// would be spent for nothing. The CSR (testdata/rsa8704.csr.der, made with
// `openssl genrsa 8704` and `openssl req -new -outform DER`) is properly
// signed; it is refused for its key.
func TestCheckCSRRefusesRSAOverTLSLimit(t *testing.T) {
	der, err := os.ReadFile("testdata/rsa8704.csr.der")
	if err != nil {
		t.Fatal(err)
	}
	_, err = CheckCSR(der)
	if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), "8704-bit RSA key is larger than the 8192 bits") {
		t.Fatalf("CheckCSR(8704-bit RSA CSR) = %v, want ErrBadCSR naming the 8192-bit limit (TLS refuses such a client certificate)", err)
	}
}

func TestIdentityOfForeignCert(t *testing.T) {
	if _, err := IdentityOf(&x509.Certificate{}); err == nil {
		t.Fatal("a certificate without URI was accepted")
	}
}
