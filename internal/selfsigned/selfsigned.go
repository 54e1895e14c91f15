// Package selfsigned provides the gateway's tunnel certificate when none is
// configured: an ECDSA P-256 certificate generated once into the data
// directory and loaded from there on later starts.
//
// The certificate is its own trust anchor: agents put the PEM file (or pin
// its fingerprint) as the only root for the tunnel. It is marked as a CA
// limited to path length zero, with key usages for both TLS serving and
// certificate signing, so that tools other than Go (curl --cacert, OpenSSL)
// also accept it as a root. It is never used to sign anything.
package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// File names inside the directory given to LoadOrCreate.
const (
	CertFile = "tunnel-cert.pem" // mode 0644
	KeyFile  = "tunnel-key.pem"  // mode 0600, PKCS #8
)

// Validity is how long a generated certificate is valid.
const Validity = 10 * 365 * 24 * time.Hour

// LoadOrCreate returns the tunnel certificate kept in dir, the path of its
// PEM certificate file (what agents use as gateway_ca_file) and its
// fingerprint (see Fingerprint).
//
// If dir holds both CertFile and KeyFile they are loaded as they are: hosts
// is then ignored, and an expired certificate is returned as it is (check
// Leaf.NotAfter). If neither exists, a certificate is generated for hosts
// plus "localhost", 127.0.0.1 and ::1, and written there; dir is created
// with mode 0700 if needed. If only one of the two exists, that is an error
// rather than a silent replacement.
//
// Entries of hosts may be names, IP addresses, or host:port (the port is
// dropped); empty and unspecified addresses (0.0.0.0, ::) are skipped.
// Two processes must not create the same directory's certificate at once.
func LoadOrCreate(dir string, hosts []string) (cert tls.Certificate, certPEMPath, fingerprint string, err error) {
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)

	certExists, err := exists(certPath)
	if err != nil {
		return tls.Certificate{}, "", "", fmt.Errorf("load tunnel certificate: %w", err)
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return tls.Certificate{}, "", "", fmt.Errorf("load tunnel certificate: %w", err)
	}

	switch {
	case certExists && keyExists:
		cert, err = tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return tls.Certificate{}, "", "", fmt.Errorf("load tunnel certificate: %w", err)
		}
	case certExists != keyExists:
		have, missing := certPath, keyPath
		if keyExists {
			have, missing = keyPath, certPath
		}
		return tls.Certificate{}, "", "", fmt.Errorf("load tunnel certificate: found %s but not %s; restore it, or remove both to generate a new certificate", have, missing)
	default:
		cert, err = create(dir, certPath, keyPath, hosts)
		if err != nil {
			return tls.Certificate{}, "", "", fmt.Errorf("create tunnel certificate: %w", err)
		}
	}

	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, "", "", fmt.Errorf("load tunnel certificate: %w", err)
		}
	}
	return cert, certPath, Fingerprint(cert.Leaf), nil
}

// Fingerprint returns "sha256:" followed by the lowercase hex SHA-256 of the
// certificate's DER encoding, the form agents pin with --gateway-fingerprint.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// exists reports whether path exists; errors other than "not found" (such
// as permission denied) are returned.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// create generates a key and certificate for hosts and writes them, the key
// first, each through a temporary file renamed into place.
func create(dir, certPath, keyPath string, hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Sallyport"}, CommonName: "sallyport tunnel"},
		NotBefore:             now.Add(-time.Hour), // tolerate agents whose clocks run behind
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // only so non-Go clients accept it as a root; see the package comment
		MaxPathLenZero:        true,
	}
	tmpl.DNSNames, tmpl.IPAddresses = subjectAltNames(hosts)

	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// subjectAltNames splits hosts (plus the loopback names) into DNS names and
// IP addresses, dropping ports, empties, unspecified addresses and repeats.
func subjectAltNames(hosts []string) (dnsNames []string, ips []net.IP) {
	seen := make(map[string]bool)
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		h = strings.TrimSpace(h)
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
		if h == "" {
			continue
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			ip = ip.WithZone("")
			if ip.IsUnspecified() || seen[ip.String()] {
				continue
			}
			seen[ip.String()] = true
			ips = append(ips, net.IP(ip.AsSlice()))
			continue
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		dnsNames = append(dnsNames, h)
	}
	return dnsNames, ips
}
