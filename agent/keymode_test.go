//go:build !windows

package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestLoadWarnsKeyReadableByOthers: an agent whose key file other users
// may read (copied or restored without its mode) says so at start, with
// the chmod to run; Save writes the key 0600, but only at the next
// renewal, so nothing said so for up to twenty days. A 0600 key gets no
// warning.
func TestLoadWarnsKeyReadableByOthers(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("sallyport://connector/c1?group=g")
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "c1"}, URIs: []*url.URL{u},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certificate(der, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o600, 0o644, 0o640} {
		dir := t.TempDir()
		if err := (&Credentials{Cert: cert}).Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, KeyFile), mode); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.WarnLevel)
		a, err := New(Config{Gateway: "127.0.0.1:1", DataDir: dir, Log: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.loadCredentials(context.Background()); err != nil {
			t.Fatal(err)
		}
		warned := logs.FilterMessageSnippet("chmod 600").Len()
		if want := mode&0o077 != 0; (warned == 1) != want {
			t.Errorf("key mode %#o: %d warnings %v, want a warning: %v", mode, warned, logs.All(), want)
		}
	}
}
