package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
