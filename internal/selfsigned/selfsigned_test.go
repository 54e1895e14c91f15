package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var fingerprintRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func TestCreateThenLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "gateway") // does not exist yet
	cert, certPath, fp, err := LoadOrCreate(dir, []string{"gw.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, CertFile) {
		t.Errorf("certPEMPath = %q", certPath)
	}
	if !fingerprintRE.MatchString(fp) {
		t.Errorf("fingerprint %q does not look like sha256:<64 hex>", fp)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	if want := "sha256:" + hex.EncodeToString(sum[:]); fp != want {
		t.Errorf("fingerprint = %q, want %q", fp, want)
	}
	if cert.Leaf == nil {
		t.Fatal("Leaf not set")
	}

	// A second call, with other hosts, loads what the first one wrote.
	cert2, certPath2, fp2, err := LoadOrCreate(dir, []string{"other.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if fp2 != fp || certPath2 != certPath {
		t.Errorf("reload: fingerprint %q path %q, want %q %q", fp2, certPath2, fp, certPath)
	}
	if !cert2.Leaf.Equal(cert.Leaf) {
		t.Error("reloaded certificate differs")
	}
	if slices.Contains(cert2.Leaf.DNSNames, "other.example.com") {
		t.Error("hosts of the second call were applied to a loaded certificate")
	}
	if Fingerprint(cert2.Leaf) != fp {
		t.Error("Fingerprint(Leaf) differs from the returned fingerprint")
	}
}

func TestFilesAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, _, _, err := LoadOrCreate(dir, nil); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{
		dir:                          0o700 | os.ModeDir,
		filepath.Join(dir, KeyFile):  0o600,
		filepath.Join(dir, CertFile): 0o644,
	} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want just the two files (no temporary leftovers)", len(entries))
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("key file does not start with a PKCS #8 PEM block")
	}
}

func TestCertificateContents(t *testing.T) {
	cert, _, _, err := LoadOrCreate(t.TempDir(), []string{
		"GW.Example.com", "gw.example.com:8443", "10.1.2.3", "[2001:db8::1]:8443", "", "0.0.0.0", "::", "localhost", " spaced.example ",
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if want := []string{"localhost", "gw.example.com", "spaced.example"}; !reflect.DeepEqual(leaf.DNSNames, want) {
		t.Errorf("DNSNames = %q, want %q", leaf.DNSNames, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "10.1.2.3", "2001:db8::1"}; !reflect.DeepEqual(ips, want) {
		t.Errorf("IPAddresses = %q, want %q", ips, want)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T is not ECDSA P-256", leaf.PublicKey)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < Validity || life > Validity+2*time.Hour {
		t.Errorf("validity %v, want about %v", life, Validity)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("ExtKeyUsage = %v, want server auth", leaf.ExtKeyUsage)
	}
	if leaf.Issuer.String() != leaf.Subject.String() {
		t.Errorf("not self-signed: issuer %q subject %q", leaf.Issuer, leaf.Subject)
	}
	if err := leaf.CheckSignatureFrom(leaf); err != nil {
		t.Errorf("self-signature: %v", err)
	}
}

func TestHalfPairIsAnError(t *testing.T) {
	for _, keep := range []string{CertFile, KeyFile} {
		t.Run(keep, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, _, err := LoadOrCreate(dir, nil); err != nil {
				t.Fatal(err)
			}
			other := CertFile
			if keep == CertFile {
				other = KeyFile
			}
			if err := os.Remove(filepath.Join(dir, other)); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := LoadOrCreate(dir, nil)
			if err == nil || !strings.Contains(err.Error(), "but not "+filepath.Join(dir, other)) {
				t.Errorf("error = %v", err)
			}
			if _, statErr := os.Stat(filepath.Join(dir, other)); statErr == nil {
				t.Error("the missing file was recreated")
			}
		})
	}
}

func TestCorruptFilesAreAnError(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{CertFile, KeyFile} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, err := LoadOrCreate(dir, nil); err == nil || !strings.HasPrefix(err.Error(), "load tunnel certificate: ") {
		t.Errorf("error = %v", err)
	}
}

// TestUnwritableDir: a data_dir that cannot be created is a clear error.
// A regular file where a parent folder should be stops even root, so the
// test runs the same as root (CI) and as a user.
func TestUnwritableDir(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := LoadOrCreate(filepath.Join(blocker, "sub"), nil)
	if err == nil || !strings.Contains(err.Error(), blocker) || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("error = %v, want one naming %s and saying it is not a directory", err, blocker)
	}
}

// TestHandshake checks the property agents rely on: with the certificate
// PEM as the only root, a Go TLS client verifies a server using it.
func TestHandshake(t *testing.T) {
	cert, certPath, fp, err := LoadOrCreate(t.TempDir(), []string{"gw.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemData) {
		t.Fatal("AppendCertsFromPEM found no certificate")
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			// Handshake; a failed one (the negative cases) just closes.
			if c.(*tls.Conn).Handshake() == nil {
				io.Copy(io.Discard, c) // until the client closes
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-served
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	tests := []struct {
		name       string
		serverName string // "" → taken from the dialled address
		addr       string
		ok         bool
	}{
		{"ip from address", "", "127.0.0.1:" + port, true},
		{"localhost", "localhost", "127.0.0.1:" + port, true},
		{"configured host", "gw.example.com", "127.0.0.1:" + port, true},
		{"other host", "evil.example.com", "127.0.0.1:" + port, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &tls.Dialer{
				NetDialer: &net.Dialer{Timeout: 5 * time.Second},
				Config:    &tls.Config{RootCAs: roots, ServerName: tt.serverName},
			}
			conn, err := d.Dial("tcp", tt.addr)
			if !tt.ok {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded, want a verification error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			state := conn.(*tls.Conn).ConnectionState()
			if got := Fingerprint(state.PeerCertificates[0]); got != fp {
				t.Errorf("peer fingerprint %q, want %q", got, fp)
			}
		})
	}

	// Without the root, the system roots do not trust it.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "127.0.0.1:"+port, &tls.Config{})
	if err == nil {
		conn.Close()
		t.Error("handshake succeeded against system roots")
	}
}
