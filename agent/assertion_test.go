package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/assertion"
)

type fakeKeys struct {
	mu      sync.Mutex
	ks      *assertion.KeySet
	fetches int
	fail    bool
}

func (f *fakeKeys) fetch(context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.fail {
		return nil, errors.New("gateway unreachable")
	}
	return f.ks.JWKS(), nil
}

func TestAssertionVerifier(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	ks, err := assertion.NewKeySet(assertion.KeySetConfig{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	keys := &fakeKeys{ks: ks}
	v := &assertionVerifier{fetch: keys.fetch, now: clock, log: zap.NewNop()}
	sign := func(ks *assertion.KeySet, app string) string {
		tok, err := ks.Sign(assertion.Claims{Claims: jwt.Claims{Subject: "alice", Audience: jwt.Audience{app}}, Email: "a@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	check := func(tok string) (*http.Request, error) {
		req := httptest.NewRequest("GET", "http://backend/", nil)
		if tok != "" {
			req.Header.Set(assertion.Header, tok)
		}
		req.Header.Set(assertion.HeaderUser, "spoofed")
		return req, v.verify(req, "app")
	}

	req, err := check(sign(ks, "app"))
	if err != nil || req.Header.Get(assertion.HeaderUser) != "alice" || req.Header.Get(assertion.HeaderEmail) != "a@example.com" {
		t.Fatalf("valid assertion: %v %v", err, req.Header)
	}
	other, _ := assertion.NewKeySet(assertion.KeySetConfig{Now: clock})
	for name, tok := range map[string]string{
		"missing": "", "garbage": "x.y.z", "other app": sign(ks, "other"), "foreign key": sign(other, "app"),
	} {
		var ae *AssertionError
		if _, err := check(tok); !errors.As(err, &ae) {
			t.Errorf("%s: %v", name, err)
		} else if code, _ := ClassifyBackendError(err); code != CodeAssertionRejected {
			t.Errorf("%s: classified %s", name, code)
		}
	}
	// An unknown key is fetched again, at most every keysRefetchMin.
	n := keys.fetches
	check(sign(other, "app"))
	if keys.fetches != n {
		t.Errorf("refetched within %v", keysRefetchMin)
	}
	now = now.Add(keysRefetchMin)
	check(sign(other, "app"))
	if keys.fetches != n+1 {
		t.Errorf("no refetch for an unknown key after %v", keysRefetchMin)
	}
	// Two rotations in a row: the copy is stale, the refetch finds the key.
	ks.Rotate()
	ks.Rotate()
	now = now.Add(keysRefetchMin)
	if _, err := check(sign(ks, "app")); err != nil {
		t.Errorf("after two rotations: %v", err)
	}
	// The gateway unreachable: the old copy keeps working.
	keys.fail = true
	now = now.Add(keysMaxAge)
	if _, err := check(sign(ks, "app")); err != nil {
		t.Errorf("with the keys endpoint down: %v", err)
	}
}

func TestAssertionVerifierNoKeys(t *testing.T) {
	keys := &fakeKeys{fail: true}
	now := time.Unix(1_800_000_000, 0)
	v := &assertionVerifier{fetch: keys.fetch, now: func() time.Time { return now }, log: zap.NewNop()}
	req := httptest.NewRequest("GET", "http://backend/", nil)
	req.Header.Set(assertion.Header, "x.y.z")
	if err := v.verify(req, "app"); err == nil || !strings.Contains(err.Error(), "gateway unreachable") {
		t.Fatalf("%v", err)
	}
	// Not hammered: the next request within a second does not fetch.
	v.verify(req, "app")
	if keys.fetches != 1 {
		t.Errorf("%d fetches", keys.fetches)
	}
}

// TestAssertionMissingNamesPublicPaths: a request without an assertion is
// refused with both reasons it can have: the app has no sign-in, or the
// request is on one of the app's public_paths, which the gateway relays
// without one. It used to ask only whether the app had preauth: oidc,
// which misled the owner of an app that has it.
func TestAssertionMissingNamesPublicPaths(t *testing.T) {
	v := &assertionVerifier{fetch: (&fakeKeys{}).fetch, now: time.Now, log: zap.NewNop()}
	err := v.verify(httptest.NewRequest("GET", "http://backend/health", nil), "app")
	for _, want := range []string{"no X-Sallyport-Assertion", "preauth: oidc", "one of the app's public_paths",
		"agents with verify_assertion must serve only apps with sign-in and no public_paths"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("verify without an assertion: %v\nwant it to say %q", err, want)
		}
	}
}
