package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// Files in the agent's data_dir.
const (
	KeyFile        = "agent-key.pem"       // the agent's private key, 0600; never leaves the machine
	CertFile       = "agent-cert.pem"      // its client certificate
	CABundleFile   = "connector-ca.pem"    // the gateway's connector CA bundle
	GatewayCAFile  = "gateway-ca.pem"      // trust for the tunnel certificate, saved by `agent enroll --gateway-ca`
	GatewayPinFile = "gateway-fingerprint" // pinned tunnel certificate, saved by `agent enroll --gateway-fingerprint`
)

// connectorPrefix starts the URI SAN that names the connector and its
// group (see internal/pki).
const connectorPrefix = "sallyport://connector/"

// Credentials are an enrolled agent's key, certificate and CA bundle.
type Credentials struct {
	Cert        tls.Certificate // Leaf is set
	ConnectorID string
	Group       string
	CABundle    []byte
}

// ErrNotEnrolled is returned by LoadCredentials for a data_dir without a
// certificate.
var ErrNotEnrolled = errors.New("not enrolled")

// nextSuffix names the certificate Save writes before the key (see save).
const nextSuffix = ".next"

// LoadCredentials reads the credentials kept in dir, finishing a Save that
// was interrupted between its writes.
func LoadCredentials(dir string) (*Credentials, error) {
	if err := dataDirIsDir(dir); err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, errC := os.Stat(certPath)
	_, errK := os.Stat(keyPath)
	if errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s", ErrNotEnrolled, CertFile, dir)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if next := certPath + nextSuffix; fileExists(next) {
		// The new key was written, or not: the certificate that goes
		// with the key on disk is the one to keep.
		if nc, nerr := tls.LoadX509KeyPair(next, keyPath); nerr == nil {
			if rerr := atomicfile.Rename(next, certPath); rerr != nil {
				return nil, fmt.Errorf("agent credentials in %s: %w", dir, rerr)
			}
			cert, err = nc, nil
		} else {
			os.Remove(next)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("agent credentials in %s: %w (enroll again to replace them)", dir, err)
	}
	bundle, _ := os.ReadFile(filepath.Join(dir, CABundleFile))
	return newCredentials(cert, bundle)
}

func newCredentials(cert tls.Certificate, bundle []byte) (*Credentials, error) {
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, err
		}
		cert.Leaf = leaf
	}
	c := &Credentials{Cert: cert, CABundle: bundle}
	for _, u := range cert.Leaf.URIs {
		if s := u.String(); strings.HasPrefix(s, connectorPrefix) {
			c.ConnectorID = strings.TrimPrefix(u.Path, "/")
			c.Group = u.Query().Get("group")
		}
	}
	if c.ConnectorID == "" {
		return nil, errors.New("the certificate is not a Sallyport connector certificate")
	}
	return c, nil
}

// Expires is when the certificate stops being valid.
func (c *Credentials) Expires() time.Time { return c.Cert.Leaf.NotAfter }

// RenewAt is two thirds into the certificate's lifetime.
func (c *Credentials) RenewAt() time.Time {
	nb, na := c.Cert.Leaf.NotBefore, c.Cert.Leaf.NotAfter
	return nb.Add(na.Sub(nb) * 2 / 3)
}

// Save writes the credentials into dir (created 0700): key 0600, each file
// through a temporary file renamed into place.
func (c *Credentials) Save(dir string) error { return c.save(dir, atomicfile.Write) }

// save writes the files with write. The new key must never end up next to
// the old certificate, whenever the agent stops: the certificate is written
// to CertFile.next, then the key, then the certificate is renamed into
// place; LoadCredentials finishes a save stopped before the rename.
func (c *Credentials) save(dir string, write func(string, []byte, fs.FileMode) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.Cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	var certPEM []byte
	for _, der := range c.Cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	certPath := filepath.Join(dir, CertFile)
	if err := write(certPath+nextSuffix, certPEM, 0o644); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	if err := write(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	if err := atomicfile.Rename(certPath+nextSuffix, certPath); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	if err := write(filepath.Join(dir, CABundleFile), c.CABundle, 0o644); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	return nil
}

// dataDirIsDir refuses a data_dir that is a file, or below one (a config
// file given as data_dir): enrolling again cannot help there (the error
// was "open …/agent.yaml/agent-cert.pem: not a directory (enroll again to
// replace them)").
func dataDirIsDir(dir string) error {
	fi, err := os.Stat(dir)
	what := ""
	switch {
	case err == nil && !fi.IsDir():
		what = "a file"
	case errors.Is(err, syscall.ENOTDIR):
		what = "below a file"
	default:
		return nil
	}
	return fmt.Errorf("data_dir %s is %s, not a directory: set data_dir to a directory, "+
		"where the agent keeps its key and certificate (created if missing)", dir, what)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// newKeyAndCSR generates the agent's key (ECDSA P-256) and a CSR for it.
func newKeyAndCSR(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, key)
	return key, csr, err
}

// certificate pairs an issued DER certificate with its key.
func certificate(der []byte, key *ecdsa.PrivateKey) (tls.Certificate, error) {
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("the gateway sent an unreadable certificate: %w", err)
	}
	// A key type Go does not know parses as a nil PublicKey.
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return tls.Certificate{}, errors.New("the gateway sent a certificate for another key")
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// PinnedTLS verifies the gateway by the SHA-256 fingerprint of its
// certificate ("sha256:HEX", as the gateway logs it) instead of a CA.
func PinnedTLS(fingerprint string) (*tls.Config, error) {
	want, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(fingerprint)), "sha256:")
	if !ok || len(want) != 64 || strings.Trim(want, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("fingerprint %q: want sha256: followed by 64 hex digits, as the gateway logs it", fingerprint)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Chain and name checks are replaced by the pin below.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection pins the certificate
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the gateway sent no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				return &FingerprintMismatchError{Presented: "sha256:" + got, Pinned: "sha256:" + want}
			}
			return nil
		},
	}, nil
}
