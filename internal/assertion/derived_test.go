package assertion

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func seed(b byte) []byte { return bytes.Repeat([]byte{b}, MinSeed) }

func kids(t *testing.T, ks *KeySet) []string {
	t.Helper()
	var out []string
	for _, k := range jwksOf(t, ks).Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// TestSeedReplicasAgree: two key sets on one seed (two replicas) publish
// the same keys, and what one signs the other's JWKS verifies; another
// seed verifies nothing of them.
func TestSeedReplicasAgree(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	a, err := NewKeySet(KeySetConfig{Seed: seed(1), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeySet(KeySetConfig{Seed: seed(1), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.JWKS(), b.JWKS()) {
		t.Fatalf("one seed, two key sets:\n%s\n%s", a.JWKS(), b.JWKS())
	}
	if got, err := Verify(sign(t, a, "alice", "app"), jwksOf(t, b), "app", c.t); err != nil || got.Subject != "alice" {
		t.Errorf("signed by a, verified with b's keys: %+v %v", got, err)
	}
	other, err := NewKeySet(KeySetConfig{Seed: seed(2), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(sign(t, a, "alice", "app"), jwksOf(t, other), "app", c.t); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("another seed: %v", err)
	}
	for _, k := range kids(t, a) {
		if slices.Contains(kids(t, other), k) {
			t.Errorf("key id %s under two seeds", k)
		}
	}
}

// TestSeedRotation: the next period's key is published a whole period
// before it signs; at the boundary it signs, and the previous key stays
// published while its assertions can be valid, then goes.
func TestSeedRotation(t *testing.T) {
	const rot = time.Hour
	start := time.Unix(0, 0).Add(1_000_000 * rot) // a period boundary
	c := &clock{start.Add(rot - time.Minute)}
	ks, err := NewKeySet(KeySetConfig{Seed: seed(3), Rotation: rot, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	before := kids(t, ks) // next, current
	if len(before) != 2 {
		t.Fatalf("published before the boundary: %q, want next and current", before)
	}
	old := sign(t, ks, "bob", "app")

	c.t = start.Add(rot) // the next period begins
	at := kids(t, ks)
	if len(at) != 3 || at[1] != before[0] || at[2] != before[1] {
		t.Fatalf("published at the boundary: %q, want a new next, the former next signing, the former current", at)
	}
	if _, err := Verify(old, jwksOf(t, ks), "app", c.t); err != nil {
		t.Errorf("an assertion of the previous key, after the boundary: %v", err)
	}
	tok := sign(t, ks, "bob", "app")
	if kid := strings.Split(tok, ".")[0]; kid == strings.Split(old, ".")[0] {
		t.Error("the same key signs after the boundary")
	}
	// Signed with the key published before the boundary: a verifier with
	// the old JWKS knows it.
	c2 := &clock{start.Add(rot - time.Minute)}
	prior, _ := NewKeySet(KeySetConfig{Seed: seed(3), Rotation: rot, Now: c2.Now})
	if _, err := Verify(tok, jwksOf(t, prior), "app", c.t); err != nil {
		t.Errorf("the new key was not in the JWKS a minute before it signed: %v", err)
	}

	c.t = start.Add(rot + DefaultLifetime + 2*Leeway)
	if after := kids(t, ks); len(after) != 2 || after[1] != before[0] {
		t.Errorf("published once the old assertions expired: %q, want next and current", after)
	}
}

// TestSeedClockSkew: replicas whose clocks differ by a minute across a
// boundary verify each other's assertions.
func TestSeedClockSkew(t *testing.T) {
	const rot = time.Hour
	boundary := time.Unix(0, 0).Add(2_000_000 * rot)
	slow := &clock{boundary.Add(-30 * time.Second)}
	fast := &clock{boundary.Add(30 * time.Second)}
	a, _ := NewKeySet(KeySetConfig{Seed: seed(4), Rotation: rot, Now: slow.Now})
	b, _ := NewKeySet(KeySetConfig{Seed: seed(4), Rotation: rot, Now: fast.Now})
	if _, err := Verify(sign(t, a, "carol", "app"), jwksOf(t, b), "app", slow.t); err != nil {
		t.Errorf("slow replica's assertion at the fast one: %v", err)
	}
	if _, err := Verify(sign(t, b, "carol", "app"), jwksOf(t, a), "app", slow.t.Add(Leeway)); err != nil {
		t.Errorf("fast replica's assertion at the slow one: %v", err)
	}
}

// TestSeedRefused: a short seed is refused at start, and a forced rotation
// says why it cannot be.
func TestSeedRefused(t *testing.T) {
	if _, err := NewKeySet(KeySetConfig{Seed: make([]byte, MinSeed-1)}); err == nil || !strings.Contains(err.Error(), "want at least 32") {
		t.Errorf("short seed: %v", err)
	}
	ks, err := NewKeySet(KeySetConfig{Seed: seed(5)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Rotate(); err == nil {
		t.Error("Rotate of derived keys succeeded")
	}
}
