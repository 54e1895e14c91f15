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
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
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

// testCredentials are credentials with a fresh key and a self-signed
// certificate that names a connector.
func testCredentials(t *testing.T, id string) *Credentials {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(connectorPrefix + id + "?group=g")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certificate(der, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCredentials(cert, []byte("bundle"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSaveCrashKeepsAPair: a renewal writes a new key and certificate; an
// agent stopped between the two writes (crash, power loss) must find a key
// and a certificate that belong together when it starts again, not the new
// key next to the old certificate.
func TestSaveCrashKeepsAPair(t *testing.T) {
	dir := t.TempDir()
	old, next := testCredentials(t, "old"), testCredentials(t, "new")
	if err := old.Save(dir); err != nil {
		t.Fatal(err)
	}
	// Save(next), stopped once the key was written.
	keyWritten := false
	crashAfterKey := func(name string, data []byte, perm fs.FileMode) error {
		if keyWritten {
			return errors.New("crash")
		}
		keyWritten = name == filepath.Join(dir, KeyFile)
		if err := atomicfile.Write(name, data, perm); err != nil || !keyWritten {
			return err
		}
		return errors.New("crash")
	}
	if err := next.save(dir, crashAfterKey); err == nil {
		t.Fatal("the crash did not happen")
	}
	got, err := LoadCredentials(dir)
	if err != nil {
		t.Fatalf("after a crash between the writes: %v", err)
	}
	if got.ConnectorID != "new" {
		t.Fatalf("loaded connector %q, want the new pair", got.ConnectorID)
	}
	// Loading finished the interrupted save: the directory holds the new
	// pair alone, and loads again.
	if got, err = LoadCredentials(dir); err != nil || got.ConnectorID != "new" {
		t.Fatalf("second load: %v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, CertFile+nextSuffix)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s%s left behind: %v", CertFile, nextSuffix, err)
	}

	// A crash before the key was written leaves the old pair working.
	dir = t.TempDir()
	if err := old.Save(dir); err != nil {
		t.Fatal(err)
	}
	crashBeforeKey := func(name string, data []byte, perm fs.FileMode) error {
		if name == filepath.Join(dir, KeyFile) {
			return errors.New("crash")
		}
		return atomicfile.Write(name, data, perm)
	}
	if err := next.save(dir, crashBeforeKey); err == nil {
		t.Fatal("the crash did not happen")
	}
	if got, err := LoadCredentials(dir); err != nil || got.ConnectorID != "old" {
		t.Fatalf("after a crash before the key: %v, %v", got, err)
	}
}

// TestRunWithDataDirAFile: a data_dir that is a file (a config file named
// there by mistake) was reported as "open …/agent.yaml/agent-cert.pem: not
// a directory (enroll again to replace them)", and enrolling again cannot
// help: the error names data_dir, the path, and that it must be a
// directory.
func TestRunWithDataDirAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("gateway: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dirs := []string{file}
	if runtime.GOOS != "windows" { // Windows says "path not found" below a file
		dirs = append(dirs, filepath.Join(file, "data"))
	}
	for _, dir := range dirs {
		a, err := New(Config{Gateway: "127.0.0.1:1", DataDir: dir, Token: "t"})
		if err != nil {
			t.Fatal(err)
		}
		err = a.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "data_dir "+dir+" is ") ||
			!strings.Contains(err.Error(), "set data_dir to a directory") || strings.Contains(err.Error(), "enroll again") {
			t.Errorf("data_dir %s: Run = %v", dir, err)
		}
	}
}
