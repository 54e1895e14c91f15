// Package pki is the connector CA: it creates the CA on first start, signs
// agents' certificate requests, and derives a connector's identity from the
// client certificate of a TLS connection.
//
// Identity encoding: a connector certificate carries exactly one URI SAN,
// sallyport://connector/<id>?group=<group>, and, for people reading it with
// openssl, Subject CN=<id>, OU=<group>. Only the URI is authoritative.
//
// The CA key is generated on the gateway and stays in its store; agents
// generate their own keys and only send CSRs. The trust bundle holds every
// CA in the store: after `sallyport gateway ca rotate` the new CA signs, and
// certificates of the previous one stay valid until they are renewed.
package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/store"
)

// Defaults.
const (
	DefaultLifetime = 30 * 24 * time.Hour       // client certificates
	CAValidity      = 10 * 365 * 24 * time.Hour // the CA certificate
	// Backdate tolerates agents whose clocks run a little behind.
	Backdate = 5 * time.Minute
)

// minLifetime is the shortest certificate Issue signs when the CA's expiry
// shortens it (the shortest tunnel.cert_lifetime): a CA that expires
// sooner must be rotated.
const minLifetime = time.Hour

// Identity is who a connector certificate says the agent is.
type Identity struct {
	ConnectorID string
	Group       string
}

// URI is the identity's URI SAN.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "sallyport", Host: "connector", Path: "/" + id.ConnectorID,
		RawQuery: url.Values{"group": {id.Group}}.Encode()}
}

// IdentityOf reads the identity of a certificate (without verifying it).
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if len(cert.URIs) != 1 {
		return Identity{}, errors.New("not a connector certificate (no sallyport:// URI)")
	}
	u := cert.URIs[0]
	id := Identity{ConnectorID: trimSlash(u.Path), Group: u.Query().Get("group")}
	if u.Scheme != "sallyport" || u.Host != "connector" || id.ConnectorID == "" || id.Group == "" {
		return Identity{}, errors.New("not a connector certificate (bad sallyport:// URI)")
	}
	return id, nil
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}

// CAStore is the part of the store the CA needs.
type CAStore interface {
	CAs(ctx context.Context) ([]store.CA, error)
	AddCA(ctx context.Context, ca store.CA, onlyIfNone bool) (bool, error)
}

// Authority signs and verifies connector certificates. The zero value
// needs only Store.
type Authority struct {
	// Store holds the CAs. Required.
	Store CAStore
	// Now is the clock (nil → time.Now).
	Now func() time.Time
	// Lifetime of issued certificates (0 → DefaultLifetime).
	Lifetime time.Duration

	// roots maps the serial (hex) of each certificate Identify verified
	// to a verified (see Untrusted and Forget).
	roots sync.Map
}

func (a *Authority) now() time.Time {
	if a.Now == nil {
		return time.Now()
	}
	return a.Now()
}

func (a *Authority) lifetime() time.Duration {
	if a.Lifetime <= 0 {
		return DefaultLifetime
	}
	return a.Lifetime
}

// Init creates the first CA if the store has none. It reports whether it
// created one.
func (a *Authority) Init(ctx context.Context) (bool, error) {
	cas, err := a.Store.CAs(ctx)
	if err != nil {
		return false, err
	}
	if len(cas) > 0 {
		return false, nil
	}
	ca, err := NewCA(a.now())
	if err != nil {
		return false, err
	}
	return a.Store.AddCA(ctx, ca, true)
}

// Rotate adds a new CA that signs from now on; the previous ones stay in
// the trust bundle.
func (a *Authority) Rotate(ctx context.Context) (store.CA, error) {
	ca, err := NewCA(a.now())
	if err != nil {
		return ca, err
	}
	_, err = a.Store.AddCA(ctx, ca, false)
	return ca, err
}

// NewCA makes a CA: ECDSA P-256, valid for CAValidity from now.
func NewCA(now time.Time) (store.CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return store.CA{}, fmt.Errorf("create connector CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return store.CA{}, err
	}
	id := serial.Text(16)
	if len(id) > 16 {
		id = id[:16]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Each CA has its own name, so chains never mix up two of them.
		Subject: pkix.Name{Organization: []string{"Sallyport"},
			CommonName: "Sallyport connector CA " + id + " " + now.UTC().Format(time.DateOnly)},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return store.CA{}, fmt.Errorf("create connector CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return store.CA{}, fmt.Errorf("create connector CA: %w", err)
	}
	return store.CA{
		ID:      id,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Active:  true,
		Created: now,
	}, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

// bundle is the parsed trust bundle.
type bundle struct {
	pool   *x509.CertPool
	pem    []byte
	signer *x509.Certificate
	key    crypto.Signer
}

func (a *Authority) load(ctx context.Context, withKey bool) (*bundle, error) {
	cas, err := a.Store.CAs(ctx)
	if err != nil {
		return nil, err
	}
	if len(cas) == 0 {
		return nil, errors.New("the store holds no connector CA")
	}
	b := &bundle{pool: x509.NewCertPool()}
	for _, ca := range cas {
		block, _ := pem.Decode(ca.CertPEM)
		if block == nil {
			return nil, fmt.Errorf("connector CA %s: bad certificate PEM", ca.ID)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("connector CA %s: %w", ca.ID, err)
		}
		b.pool.AddCert(cert)
		b.pem = append(b.pem, ca.CertPEM...)
		if ca.Active && withKey {
			kb, _ := pem.Decode(ca.KeyPEM)
			if kb == nil {
				return nil, fmt.Errorf("connector CA %s: bad key PEM", ca.ID)
			}
			k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
			if err != nil {
				return nil, fmt.Errorf("connector CA %s key: %w", ca.ID, err)
			}
			signer, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("connector CA %s key cannot sign", ca.ID)
			}
			b.signer, b.key = cert, signer
		}
	}
	if withKey && b.signer == nil {
		return nil, errors.New("the store holds no active connector CA")
	}
	return b, nil
}

// Bundle returns the trust bundle as PEM (every CA, oldest first).
func (a *Authority) Bundle(ctx context.Context) ([]byte, error) {
	b, err := a.load(ctx, false)
	if err != nil {
		return nil, err
	}
	return b.pem, nil
}

// ErrBadCSR classifies certificate requests that are refused.
var ErrBadCSR = errors.New("bad certificate request")

// MaxRSABits is the largest RSA key CheckCSR accepts: crypto/tls refuses
// a peer's certificate with a larger one (GODEBUG tlsmaxrsasize, 8192 by
// default), so a certificate issued for it could never open a session.
const MaxRSABits = 8192

// CheckCSR parses a DER certificate request and checks that its key is
// one the tunnel's TLS accepts and strong enough (ECDSA P-256 or stronger,
// Ed25519, or RSA of 2048 to MaxRSABits bits), then that the request is
// signed by that key. The key is judged first, so a huge key costs no
// signature check.
func CheckCSR(der []byte) (*x509.CertificateRequest, error) {
	if bytes.HasPrefix(bytes.TrimSpace(der), []byte("-----BEGIN")) {
		// Otherwise asn1's "tags don't match (16 vs {class:0 tag:13 …})".
		return nil, fmt.Errorf("%w: it is PEM text; send the DER bytes (the base64 between the BEGIN and END lines, decoded)", ErrBadCSR)
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: the request holds no CSR", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: not a DER certificate request: %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return nil, fmt.Errorf("%w: ECDSA key on %s is too weak; use P-256 or stronger", ErrBadCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: %d-bit RSA key is too weak; use 2048 bits or more (or ECDSA P-256)", ErrBadCSR, k.N.BitLen())
		}
		if k.N.BitLen() > MaxRSABits {
			return nil, fmt.Errorf("%w: %d-bit RSA key is larger than the %d bits TLS accepts from a client, so its "+
				"certificate could never connect; use 2048 to %d bits (or ECDSA P-256)", ErrBadCSR, k.N.BitLen(), MaxRSABits, MaxRSABits)
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, csr.PublicKey)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: its signature does not match its public key", ErrBadCSR)
	}
	return csr, nil
}

// Issued is a signed client certificate.
type Issued struct {
	DER      []byte
	Serial   string // hex
	NotAfter time.Time
	Bundle   []byte // PEM trust bundle at the time of issue
}

// Issue signs a client certificate for id with the key of csr (checked
// with CheckCSR first).
func (a *Authority) Issue(ctx context.Context, csr *x509.CertificateRequest, id Identity) (Issued, error) {
	b, err := a.load(ctx, true)
	if err != nil {
		return Issued{}, fmt.Errorf("issue certificate: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return Issued{}, err
	}
	now := a.now()
	notAfter := now.Add(a.lifetime())
	if notAfter.After(b.signer.NotAfter) {
		notAfter = b.signer.NotAfter
	}
	if notAfter.Sub(now) < min(a.lifetime(), minLifetime) {
		// Such a certificate would be expired, or due for renewal, at
		// once; refused before the token is spent.
		return Issued{}, fmt.Errorf("issue certificate: the connector CA %q expires at %s, too soon to sign a certificate; "+
			"add a new one with `sallyport gateway ca rotate`", b.signer.Subject.CommonName, b.signer.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Sallyport"}, OrganizationalUnit: []string{id.Group}, CommonName: id.ConnectorID},
		URIs:         []*url.URL{id.URI()},
		NotBefore:    now.Add(-Backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.signer, csr.PublicKey, b.key)
	if err != nil {
		return Issued{}, fmt.Errorf("issue certificate: %w", err)
	}
	return Issued{DER: der, Serial: serial.Text(16), NotAfter: notAfter, Bundle: b.pem}, nil
}

// Identify verifies the client certificate of a TLS connection against the
// trust bundle at the Authority's time and returns the connector identity
// it carries. Any transport can call it with its connection state; it does
// not rely on the listener having verified the chain.
func (a *Authority) Identify(ctx context.Context, cs *tls.ConnectionState) (Identity, *x509.Certificate, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Identity{}, nil, ErrNoCertificate
	}
	b, err := a.load(ctx, false)
	if err != nil {
		return Identity{}, nil, err
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	now := a.now()
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: b.pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		if now.After(leaf.NotAfter) {
			return Identity{}, leaf, fmt.Errorf("%w: it expired at %s", ErrUntrusted, leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return Identity{}, leaf, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return Identity{}, leaf, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	chain := chains[0]
	a.roots.Store(leaf.SerialNumber.Text(16), verified{root: sha256.Sum256(chain[len(chain)-1].Raw), at: now})
	return id, leaf, nil
}

// Untrusted returns those of serials (hex) whose certificates chained, when
// Identify last verified them, to a CA that the store no longer holds
// (`sallyport gateway ca rotate --retire-previous`). A session opened with
// such a certificate would be refused now, but the handshake that checked
// it is over: the caller ends it. Serials Identify has not seen are not
// returned.
func (a *Authority) Untrusted(ctx context.Context, serials []string) ([]string, error) {
	cas, err := a.Store.CAs(ctx)
	if err != nil {
		return nil, err
	}
	if len(cas) == 0 {
		// Never so (rotate keeps the active CA); were it, every session
		// would count as untrusted and be closed.
		return nil, errors.New("the store holds no connector CA")
	}
	held := map[[32]byte]bool{}
	for _, ca := range cas {
		if block, _ := pem.Decode(ca.CertPEM); block != nil {
			held[sha256.Sum256(block.Bytes)] = true
		}
	}
	var out []string
	for _, s := range serials {
		if v, ok := a.roots.Load(s); ok && !held[v.(verified).root] {
			out = append(out, s)
		}
	}
	return out, nil
}

// Forget drops what Identify recorded for the serials that keep does not
// hold (the certificates of sessions that ended), except what it recorded
// in the last forgetAfter: a session is verified before it is registered
// (the gateway waits for the agent's hello meanwhile).
func (a *Authority) Forget(keep map[string]bool) {
	old := a.now().Add(-forgetAfter)
	a.roots.Range(func(k, v any) bool {
		if !keep[k.(string)] && v.(verified).at.Before(old) {
			a.roots.Delete(k)
		}
		return true
	})
}

// forgetAfter: see Forget.
const forgetAfter = 5 * time.Minute

// verified is what Identify records of a certificate: the SHA-256 of the
// CA certificate it chained to, and when.
type verified struct {
	root [32]byte
	at   time.Time
}

// Errors of Identify.
var (
	ErrNoCertificate = errors.New("no client certificate")
	ErrUntrusted     = errors.New("client certificate not trusted")
)
