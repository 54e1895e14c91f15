package assertion

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func jwksOf(t *testing.T, ks *KeySet) *jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(ks.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Fatal("the JWKS publishes a private key")
		}
	}
	return &set
}

func sign(t *testing.T, ks *KeySet, sub, app string) string {
	t.Helper()
	tok, err := ks.Sign(Claims{Claims: jwt.Claims{Subject: sub, Audience: jwt.Audience{app}}, Email: "a@example.com", Groups: []string{"g"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSignVerify(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	ks, err := NewKeySet(KeySetConfig{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, ks, "alice", "app")
	got, err := Verify(tok, jwksOf(t, ks), "app", c.t)
	if err != nil || got.Subject != "alice" || got.Email != "a@example.com" || got.Issuer != Issuer || got.ID == "" {
		t.Fatalf("%+v %v", got, err)
	}
	if got.Expiry.Time().Sub(c.t) != DefaultLifetime {
		t.Errorf("lifetime %v", got.Expiry.Time().Sub(c.t))
	}
	if _, err := Verify(tok, jwksOf(t, ks), "other", c.t); err == nil {
		t.Error("wrong audience accepted")
	}
	if _, err := Verify(tok, jwksOf(t, ks), "app", c.t.Add(DefaultLifetime+Leeway+time.Second)); err == nil {
		t.Error("expired assertion accepted")
	}
	if _, err := Verify(tok, jwksOf(t, ks), "app", c.t.Add(-Leeway-time.Second)); err == nil {
		t.Error("assertion from the future accepted")
	}
	other, _ := NewKeySet(KeySetConfig{Now: c.Now})
	if _, err := Verify(tok, jwksOf(t, other), "app", c.t); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("foreign key set: %v", err)
	}
	// A token signed by another key under this set's key id.
	forged := strings.Split(sign(t, other, "alice", "app"), ".")
	parts := strings.Split(tok, ".")
	if _, err := Verify(parts[0]+"."+forged[1]+"."+forged[2], jwksOf(t, ks), "app", c.t); err == nil {
		t.Error("forged signature accepted")
	}
	for _, bad := range []string{"", "a.b.c", "not a token", parts[0] + "." + parts[1] + "."} {
		if _, err := Verify(bad, jwksOf(t, ks), "app", c.t); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRotation(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	ks, err := NewKeySet(KeySetConfig{Now: c.Now, Rotation: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Hour - time.Second)
	old := sign(t, ks, "alice", "app")
	c.t = c.t.Add(time.Second) // due: the next signature rotates
	fresh := sign(t, ks, "alice", "app")
	set := jwksOf(t, ks)
	if len(set.Keys) != 3 {
		t.Fatalf("%d keys published after rotation, want the next, the new and the previous", len(set.Keys))
	}
	for _, tok := range []string{old, fresh} {
		if _, err := Verify(tok, set, "app", c.t); err != nil {
			t.Errorf("right after rotation: %v", err)
		}
	}
	// Once nothing the old key signed can be valid, it is dropped.
	c.t = c.t.Add(DefaultLifetime + 2*Leeway)
	if n := len(jwksOf(t, ks).Keys); n != 2 {
		t.Errorf("%d keys published long after rotation, want the current and the next", n)
	}
	// The next key is published before it signs: a verifier holding the
	// JWKS from before a rotation verifies assertions from after it.
	before := jwksOf(t, ks)
	if err := ks.Rotate(); err != nil {
		t.Fatal(err)
	}
	if n := len(jwksOf(t, ks).Keys); n != 3 {
		t.Errorf("%d keys after Rotate", n)
	}
	if _, err := Verify(sign(t, ks, "alice", "app"), before, "app", c.t); err != nil {
		t.Errorf("assertion after a rotation with the JWKS from before it: %v", err)
	}
}

func TestPersistence(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	file := filepath.Join(t.TempDir(), "keys.json")
	ks, err := NewKeySet(KeySetConfig{File: file, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, ks, "alice", "app")
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again, err := NewKeySet(KeySetConfig{File: file, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(tok, jwksOf(t, again), "app", c.t); err != nil {
		t.Errorf("after a restart: %v", err)
	}
	if err := os.WriteFile(file, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeySet(KeySetConfig{File: file}); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("broken file: %v", err)
	}
}
