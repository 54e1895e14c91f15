package assertion

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Keys derived from a shared seed (KeySetConfig.Seed).
//
// Why: replicas of a gateway each kept a key set of their own and rotated
// it on their own, so a verifier that fetched the keys of one replica
// refused assertions that another signed. Deriving the keys from a seed
// they share (kept in their common store) makes every replica sign with,
// and publish, the same keys, with nothing to agree on at run time.
//
// How: time is cut into rotation periods counted from the Unix epoch. The
// key of period p is an ECDSA P-256 key whose scalar is HKDF-SHA256 of the
// seed for p (and the rotation, so that another rotation gives other keys);
// its ID comes from the same HKDF with another label, never from the
// private key. Key p signs during p, is published from the start of p-1 (a
// whole period before it signs, as with generated keys) and until the
// assertions it signed have expired, Lifetime plus twice the Leeway after
// the end of p. An assertion lives Lifetime, so replicas whose clocks
// differ by less than twice the Leeway (a minute) publish, at any moment,
// every key whose assertions another of them may still present.

// MinSeed is the shortest seed NewKeySet accepts, in bytes.
const MinSeed = 32

// deriveLocked makes keys[0] the key of the current period, next the key
// of the following one, and keeps the previous one while its assertions
// may still be valid; it rebuilds the signer and the JWKS when that
// changed.
func (ks *KeySet) deriveLocked() error {
	now := ks.cfg.now()
	rot := ks.cfg.rotation()
	p := floorDiv(now.UnixNano(), int64(rot))
	keepPrev := now.Sub(periodStart(p, rot)) < ks.cfg.lifetime()+2*Leeway
	if ks.signer != nil && ks.period == p && (len(ks.keys) == 2) == keepPrev {
		return nil
	}
	cur, err := deriveKey(ks.cfg.Seed, rot, p)
	if err != nil {
		return err
	}
	next, err := deriveKey(ks.cfg.Seed, rot, p+1)
	if err != nil {
		return err
	}
	keys := []key{cur}
	if keepPrev {
		prev, err := deriveKey(ks.cfg.Seed, rot, p-1)
		if err != nil {
			return err
		}
		keys = append(keys, prev)
	}
	old := ks.keys
	oldNext := ks.next
	ks.keys, ks.next = keys, &next
	signer, jwks, _, err := ks.publication()
	if err != nil {
		ks.keys, ks.next = old, oldNext
		return err
	}
	ks.signer, ks.jwks, ks.period = signer, jwks, p
	return nil
}

// deriveKey returns the key of period p.
func deriveKey(seed []byte, rot time.Duration, p int64) (key, error) {
	label := fmt.Sprintf("sallyport assertion key v1; rotation %d ns; period %d", int64(rot), p)
	id, err := hkdf.Key(sha256.New, seed, nil, label+"; id", 8)
	if err != nil {
		return key{}, fmt.Errorf("assertion keys: %w", err)
	}
	// A 32-byte string is a valid P-256 scalar unless it is zero or not
	// below the curve's order, about one in 2^32: then the next try.
	for try := 0; try < 8; try++ {
		raw, err := hkdf.Key(sha256.New, seed, nil, fmt.Sprintf("%s; scalar %d", label, try), 32)
		if err != nil {
			return key{}, fmt.Errorf("assertion keys: %w", err)
		}
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
		if err != nil {
			continue
		}
		return key{ID: hex.EncodeToString(id), Created: periodStart(p, rot), Private: priv}, nil
	}
	return key{}, fmt.Errorf("assertion keys: no valid key for period %d in 8 tries", p)
}

// periodStart is when period p of length rot begins.
func periodStart(p int64, rot time.Duration) time.Time {
	return time.Unix(0, p*int64(rot))
}

// floorDiv is a/b rounded down (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
