package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunWithoutCertificateOrToken(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{Gateway: "127.0.0.1:1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no certificate in data_dir") || !strings.Contains(err.Error(), "sallyport agent enroll") {
		t.Fatalf("Run = %v", err)
	}
}

func TestRunWithBrokenCredentials(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, CertFile), []byte("not pem"), 0o644)
	a, err := New(Config{Gateway: "127.0.0.1:1", DataDir: dir, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	// A broken certificate is reported, not silently replaced by a new
	// enrollment.
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "enroll again") {
		t.Fatalf("Run = %v", err)
	}
	if _, err := LoadCredentials(t.TempDir()); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("empty dir: %v", err)
	}
}

func TestPinnedTLS(t *testing.T) {
	for _, bad := range []string{"", "abc", "sha1:00", "sha256:" + strings.Repeat("g", 64), "sha256:" + strings.Repeat("0", 63)} {
		if _, err := PinnedTLS(bad); err == nil {
			t.Errorf("PinnedTLS(%q) accepted", bad)
		}
	}
	c, err := PinnedTLS("SHA256:" + strings.Repeat("AB", 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyConnection(tls.ConnectionState{}); err == nil {
		t.Fatal("no certificate accepted")
	}
}

func TestEnrollNeedsToken(t *testing.T) {
	if _, err := Enroll(context.Background(), EnrollConfig{Gateway: "127.0.0.1:1"}); err == nil {
		t.Fatal("enrolled without a token")
	}
}

// TestCertificateWithUnknownKeyType: a certificate whose public key is of a
// type Go does not know parses with a nil PublicKey; the agent must refuse
// it with an error, not panic.
func TestCertificateWithUnknownKeyType(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	// id-ecPublicKey (1.2.840.10045.2.1) → 1.2.840.10045.2.9, same length.
	ecOID := []byte{0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}
	i := bytes.Index(der, ecOID)
	if i < 0 {
		t.Fatal("no id-ecPublicKey in the certificate")
	}
	der[i+len(ecOID)-1] = 0x09
	if c, err := x509.ParseCertificate(der); err != nil || c.PublicKey != nil {
		t.Fatalf("the doctored certificate: %v, %T", err, c.PublicKey)
	}
	if _, err := certificate(der, key); err == nil {
		t.Fatal("a certificate without a usable public key accepted")
	}
}
