package agent

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/assertion"
)

// TestAssertionVerifierStripsOtherSpellings: with verify_assertion, only
// the verified claims reach the backend. The old verifier set the
// canonical headers and left X_Sallyport_User and X.Sallyport.Email (which
// PHP, WSGI and lighttpd fold onto X-Sallyport-User and -Email) as the
// gateway had relayed them.
func TestAssertionVerifierStripsOtherSpellings(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	ks, err := assertion.NewKeySet(assertion.KeySetConfig{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	v := &assertionVerifier{fetch: (&fakeKeys{ks: ks}).fetch, now: clock, log: zap.NewNop()}
	tok, err := ks.Sign(assertion.Claims{Claims: jwt.Claims{Subject: "alice", Audience: jwt.Audience{"app"}}})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "http://backend/", nil)
	req.Header.Set(assertion.Header, tok)
	req.Header["X_Sallyport_User"] = []string{"admin"}
	req.Header["X.Sallyport.Email"] = []string{"admin@example.com"}
	req.Header["X-Sallyport-Groups"] = []string{"admins"}
	req.Header["X-Kept"] = []string{"yes"}
	if err := v.verify(req, "app"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{assertion.HeaderUser: "alice", assertion.Header: tok, "X-Kept": "yes"}
	for k, vv := range req.Header {
		if len(vv) != 1 || want[k] != vv[0] {
			t.Errorf("backend gets %s: %q", k, vv)
		}
	}
	if len(req.Header) != len(want) {
		t.Errorf("headers %v, want %v", req.Header, want)
	}
}
