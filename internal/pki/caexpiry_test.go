package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestCheckCSRSaysPEM: a client of its own that sends its CSR as PEM (the
// form openssl writes) is told so, rather than given asn1's "tags don't
// match (16 vs {class:0 tag:13 length:45 …})"; an empty CSR is named too.
// Neither panics, nor does any prefix of a valid request.
func TestCheckCSRSaysPEM(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"pem", pemCSR, "it is PEM text; send the DER bytes"},
		{"pem after a line break", append([]byte("\n"), pemCSR...), "it is PEM text"},
		{"empty", nil, "holds no CSR"},
	} {
		_, err := CheckCSR(tc.in)
		if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrBadCSR saying %q", tc.name, err, tc.want)
		}
	}
	for i := range der {
		if _, err := CheckCSR(der[:i]); !errors.Is(err, ErrBadCSR) {
			t.Fatalf("the first %d bytes: %v, want ErrBadCSR", i, err)
		}
	}
	if _, err := CheckCSR(der); err != nil {
		t.Fatalf("the whole request: %v", err)
	}
}

// TestIssueRefusesWithExpiringCA: a CA about to expire (or expired) is not
// used to sign. Issue capped NotAfter at the CA's expiry, so it signed
// certificates that were due for renewal at once, and with an expired CA
// certificates that had expired before they were issued (NotAfter before
// NotBefore): the enrollment spent the token and the agent could never
// connect. The refusal says to rotate the CA; once rotated, Issue signs.
func TestIssueRefusesWithExpiringCA(t *testing.T) {
	a, c, _ := newAuthority(t)
	ctx := context.Background()
	csr, err := CheckCSR(csrFor(t, p256(t)))
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{ConnectorID: "c1", Group: "g"}
	for _, later := range []time.Duration{CAValidity - 30*time.Minute, CAValidity + 24*time.Hour} {
		c.t = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(later)
		is, err := a.Issue(ctx, csr, id)
		if err == nil || !strings.Contains(err.Error(), "sallyport gateway ca rotate") {
			var life time.Duration
			if err == nil {
				cert, _ := x509.ParseCertificate(is.DER)
				life = cert.NotAfter.Sub(c.t)
			}
			t.Errorf("%v after the CA was made: issued a certificate valid for %v more (%v), want a refusal naming ca rotate",
				later, life, err)
		}
	}
	if _, err := a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	is, err := a.Issue(ctx, csr, id)
	if err != nil {
		t.Fatalf("after rotating: %v", err)
	}
	if want := c.t.Add(DefaultLifetime); !is.NotAfter.Equal(want) {
		t.Fatalf("after rotating: NotAfter %v, want %v", is.NotAfter, want)
	}
}

// FuzzCheckCSR: no request, however malformed, makes CheckCSR panic, and
// any request it accepts carries a key of an accepted type and a valid
// signature.
func FuzzCheckCSR(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"*.example"}}, key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := CheckCSR(in)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error %v is not ErrBadCSR", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a request whose signature does not check: %v", err)
		}
	})
}

// TestIssueShortLifetime: a lifetime set below an hour (tests, an embedding
// program) still signs while the CA outlives it.
func TestIssueShortLifetime(t *testing.T) {
	a, _, _ := newAuthority(t)
	a.Lifetime = time.Minute
	csr, err := CheckCSR(csrFor(t, p256(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Issue(context.Background(), csr, Identity{ConnectorID: "c1", Group: "g"}); err != nil {
		t.Fatal(err)
	}
}

// TestUntrustedAfterRetire: Identify remembers which CA each certificate
// chained to; Untrusted names the certificates whose CA the store no
// longer holds; Forget drops what the caller no longer needs, but not
// what Identify recorded in the last few minutes (a session between its
// handshake and its registration).
func TestUntrustedAfterRetire(t *testing.T) {
	a, c, s := newAuthority(t)
	ctx := context.Background()
	identify := func() string {
		t.Helper()
		csr, err := CheckCSR(csrFor(t, p256(t)))
		if err != nil {
			t.Fatal(err)
		}
		is, err := a.Issue(ctx, csr, Identity{ConnectorID: "c1", Group: "g"})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(is.DER)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Identify(ctx, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); err != nil {
			t.Fatal(err)
		}
		return is.Serial
	}
	old := identify()
	if _, err := a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	cur := identify()
	if got, err := a.Untrusted(ctx, []string{old, cur, "ff"}); err != nil || len(got) != 0 {
		t.Fatalf("before retiring: Untrusted = %v, %v; want none", got, err)
	}
	if _, err := s.RetireCAs(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Untrusted(ctx, []string{old, cur, "ff"}); err != nil || len(got) != 1 || got[0] != old {
		t.Fatalf("after retiring: Untrusted = %v, %v; want [%s]", got, err, old)
	}
	a.Forget(nil)
	if got, _ := a.Untrusted(ctx, []string{old}); len(got) != 1 {
		t.Fatalf("Forget dropped a certificate identified just now")
	}
	c.t = c.t.Add(forgetAfter + time.Second)
	a.Forget(map[string]bool{cur: true})
	if got, _ := a.Untrusted(ctx, []string{old}); len(got) != 0 {
		t.Fatalf("Forget kept a certificate it was not asked to keep: %v", got)
	}
	if _, ok := a.roots.Load(cur); !ok {
		t.Fatal("Forget dropped a certificate it was asked to keep")
	}
}
