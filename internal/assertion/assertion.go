// Package assertion is the identity assertion the gateway sends to apps in
// X-Sallyport-Assertion: a short-lived JWT signed with ES256 by a key of the
// gateway's key set, whose public keys are published as a JWKS at
// /.well-known/sallyport/jwks.json. The gateway signs (KeySet); agents and
// apps verify (Verify).
//
// Claims: iss "sallyport", aud the app's name, sub the user's subject at the
// provider, email, name, groups, idp (provider name), auth ("session" or
// "bearer"), rid (request id), iat, nbf, exp (Lifetime after iat) and jti.
//
// Keys: one current ECDSA P-256 key signs; it is replaced after the
// rotation period (lazily, at the next signature) by the next key, which is
// published a whole period before it signs anything, so verifiers that
// refresh their copy of the JWKS more often than that never meet an unknown
// key. Replaced keys stay published until every assertion they signed has
// expired. With a file the key set survives restarts.
package assertion

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is the `iss` of every assertion.
const Issuer = "sallyport"

// Header is the request header that carries the assertion to the app.
const Header = "X-Sallyport-Assertion"

// JWKSPath is where the gateway publishes the public keys, on every host.
const JWKSPath = "/.well-known/sallyport/jwks.json"

// Defaults: what zero fields of KeySetConfig mean.
const (
	DefaultLifetime = 2 * time.Minute
	DefaultRotation = 24 * time.Hour
	// Leeway is the clock difference Verify tolerates on iat, nbf and exp.
	Leeway = 30 * time.Second
)

// Claims are an assertion's contents.
type Claims struct {
	jwt.Claims
	Email    string   `json:"email,omitempty"`
	Name     string   `json:"name,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Provider string   `json:"idp,omitempty"`
	Auth     string   `json:"auth,omitempty"`
	Request  string   `json:"rid,omitempty"`
}

// KeySetConfig configures a KeySet. The zero value keeps keys in memory only,
// rotates daily and signs assertions valid for two minutes.
type KeySetConfig struct {
	// File persists the keys (private, mode 0600). Empty: memory only, a
	// new key on every start. Not used with a Seed.
	File string
	// Seed, when set (at least MinSeed random bytes), derives the key of
	// each rotation period from it instead of generating and storing keys:
	// gateways that share the seed (replicas on one store) sign with and
	// publish the same keys without talking to each other. See derived.go.
	Seed []byte
	// Rotation is how long one key signs (0 → DefaultRotation).
	Rotation time.Duration
	// Lifetime of an assertion (0 → DefaultLifetime).
	Lifetime time.Duration
	// Now is the clock (nil → time.Now).
	Now func() time.Time
}

func (c *KeySetConfig) rotation() time.Duration { return orDur(c.Rotation, DefaultRotation) }
func (c *KeySetConfig) lifetime() time.Duration { return orDur(c.Lifetime, DefaultLifetime) }
func (c *KeySetConfig) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func orDur(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// key is one signing key.
type key struct {
	ID      string
	Created time.Time
	Private *ecdsa.PrivateKey
}

// storedKey is a key in the file.
type storedKey struct {
	Created time.Time       `json:"created"`
	Next    bool            `json:"next,omitempty"`
	JWK     jose.JSONWebKey `json:"jwk"`
}

// KeySet signs assertions and publishes its public keys. Safe for
// concurrent use.
type KeySet struct {
	cfg KeySetConfig

	mu     sync.Mutex
	next   *key   // published, signs after the next rotation; guarded by mu
	keys   []key  // newest first; keys[0] signs; guarded by mu
	jwks   []byte // public JWKS of keys; guarded by mu
	signer jose.Signer
	period int64 // with a Seed: the rotation period keys[0] is of; guarded by mu
}

// NewKeySet loads the keys from cfg.File (creating it) or generates one.
func NewKeySet(cfg KeySetConfig) (*KeySet, error) {
	ks := &KeySet{cfg: cfg}
	if cfg.Seed != nil {
		if len(cfg.Seed) < MinSeed {
			return nil, fmt.Errorf("assertion keys: a seed of %d bytes; want at least %d random bytes", len(cfg.Seed), MinSeed)
		}
		ks.mu.Lock()
		defer ks.mu.Unlock()
		if err := ks.deriveLocked(); err != nil {
			return nil, err
		}
		return ks, nil
	}
	if cfg.File != "" {
		data, err := os.ReadFile(cfg.File)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("assertion keys: %w", err)
		default:
			var stored []storedKey
			if err := json.Unmarshal(data, &stored); err != nil {
				return nil, fmt.Errorf("assertion keys %s: %w (delete the file to start with new keys)", cfg.File, err)
			}
			for _, s := range stored {
				priv, ok := s.JWK.Key.(*ecdsa.PrivateKey)
				if !ok || s.JWK.KeyID == "" {
					return nil, fmt.Errorf("assertion keys %s: key %q is not an ECDSA private key with an id", cfg.File, s.JWK.KeyID)
				}
				k := key{ID: s.JWK.KeyID, Created: s.Created, Private: priv}
				if s.Next {
					ks.next = &k
				} else {
					ks.keys = append(ks.keys, k)
				}
			}
		}
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if err := ks.rotateLocked(len(ks.keys) == 0); err != nil {
		return nil, err
	}
	return ks, nil
}

// Rotate makes a new key the signing key at once; the old ones stay
// published until no assertion they signed can still be valid. Keys
// derived from a Seed change with their period only.
func (ks *KeySet) Rotate() error {
	if ks.cfg.Seed != nil {
		return errors.New("assertion keys derived from a shared seed change with their rotation period; none can be forced")
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.rotateLocked(true)
}

// rotateLocked adds a new key when force is set or the current one is past
// the rotation period, drops keys that no longer verify anything, and
// refreshes the signer, the JWKS and the file.
func (ks *KeySet) rotateLocked(force bool) error {
	if ks.cfg.Seed != nil {
		return ks.deriveLocked()
	}
	now := ks.cfg.now()
	changed := false
	if force || len(ks.keys) == 0 || now.Sub(ks.keys[0].Created) >= ks.cfg.rotation() {
		cur := ks.next
		if cur == nil {
			k, err := newKey(now)
			if err != nil {
				return err
			}
			cur = k
		}
		cur.Created = now // when it started signing
		ks.keys = append([]key{*cur}, ks.keys...)
		ks.next = nil
		changed = true
	}
	if ks.next == nil {
		k, err := newKey(now)
		if err != nil {
			return err
		}
		ks.next = k
		changed = true
	}
	// A key replaced at time T signed its last assertion before T; those
	// expire by T + lifetime (+ leeway at the verifier).
	keep := ks.keys[:1]
	for i := 1; i < len(ks.keys); i++ {
		replaced := ks.keys[i-1].Created
		if now.Sub(replaced) < ks.cfg.lifetime()+2*Leeway {
			keep = append(keep, ks.keys[i])
		} else {
			changed = true
		}
	}
	ks.keys = keep
	if !changed && ks.signer != nil {
		return nil
	}
	signer, jwks, stored, err := ks.publication()
	if err != nil {
		return err
	}
	if ks.cfg.File != "" {
		data, err := json.MarshalIndent(stored, "", "  ")
		if err != nil {
			return fmt.Errorf("assertion keys: %w", err)
		}
		if err := writeFileAtomic(ks.cfg.File, data); err != nil {
			return fmt.Errorf("assertion keys: %w", err)
		}
	}
	ks.signer, ks.jwks = signer, jwks
	return nil
}

// publication returns the signer of keys[0], the public JWKS of next and
// keys, and all of them as the file stores them.
func (ks *KeySet) publication() (jose.Signer, []byte, []storedKey, error) {
	cur := ks.keys[0]
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: cur.Private, KeyID: cur.ID, Algorithm: string(jose.ES256)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("assertion keys: %w", err)
	}
	var set jose.JSONWebKeySet
	stored := make([]storedKey, 0, len(ks.keys)+1)
	all := append([]key{*ks.next}, ks.keys...)
	for i, k := range all {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.Private.PublicKey, KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"})
		stored = append(stored, storedKey{Created: k.Created, Next: i == 0,
			JWK: jose.JSONWebKey{Key: k.Private, KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"}})
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("assertion keys: %w", err)
	}
	return signer, jwks, stored, nil
}

func newKey(now time.Time) (*key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("assertion keys: %w", err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &key{ID: hex.EncodeToString(id[:]), Created: now, Private: priv}, nil
}

func writeFileAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".assertion-keys-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	// Synced before the rename: otherwise a crash can leave the name
	// pointing at an empty file, and the gateway refuses to start. (Not
	// internal/atomicfile: this package must not depend on internal.)
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// JWKS returns the public keys as a JSON Web Key Set.
func (ks *KeySet) JWKS() []byte {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	_ = ks.rotateLocked(false) // on failure the current key keeps signing
	return ks.jwks
}

// Sign fills in iss, iat, nbf, exp and jti and returns the signed assertion.
func (ks *KeySet) Sign(c Claims) (string, error) {
	ks.mu.Lock()
	_ = ks.rotateLocked(false)
	signer := ks.signer
	ks.mu.Unlock()
	now := ks.cfg.now()
	c.Issuer = Issuer
	c.IssuedAt = jwt.NewNumericDate(now)
	c.NotBefore = jwt.NewNumericDate(now)
	c.Expiry = jwt.NewNumericDate(now.Add(ks.cfg.lifetime()))
	var id [12]byte
	_, _ = rand.Read(id[:])
	c.ID = hex.EncodeToString(id[:])
	return jwt.Signed(signer).Claims(c).Serialize()
}

// Verify checks an assertion against the JSON Web Key Set jwks: ES256
// signature by a key of the set (by kid), iss, aud containing audience
// (the app's name), and iat/nbf/exp at now with Leeway. The error says what
// failed; ErrUnknownKey means the set lacks the token's key, so a caller may
// fetch the set again.
func Verify(token string, jwks *jose.JSONWebKeySet, audience string, now time.Time) (*Claims, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("assertion: %w", err)
	}
	if len(tok.Headers) != 1 {
		return nil, errors.New("assertion: want exactly one signature")
	}
	keys := jwks.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return nil, ErrUnknownKey
	}
	var c Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		return nil, fmt.Errorf("assertion: %w", err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: Issuer, AnyAudience: jwt.Audience{audience}, Time: now}, Leeway); err != nil {
		return nil, fmt.Errorf("assertion: %w", err)
	}
	if c.Expiry == nil || c.Subject == "" {
		return nil, errors.New("assertion: no expiry or no subject")
	}
	return &c, nil
}

// ErrUnknownKey is returned by Verify when the token's key is not in the set.
var ErrUnknownKey = errors.New("assertion: signed by a key that is not in the key set")
