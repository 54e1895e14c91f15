package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestAgentVerifiesAssertion: with verify_assertion the agent calls the
// backend only for requests with a valid assertion from the gateway. It
// fetches the keys over the tunnel listener and again after a rotation.
func TestAgentVerifiesAssertion(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	a.agent.Stop()
	a.WaitSessions(testrig.Group, 0)
	a.StartAgent(func(c *agent.Config) { c.VerifyAssertion = true })

	c := a.browser()
	res, body := a.signIn(c, "/", alice)
	if res.StatusCode != 200 {
		t.Fatalf("signed in: %d %s", res.StatusCode, body)
	}
	h := decodeEchoed(t, body).Headers
	if h.Get("X-Sallyport-User") != "sub-alice" || h.Get("X-Sallyport-Groups") != "staff,a%2Cb" {
		t.Errorf("identity after the agent's check: %v", h)
	}
	// After a key rotation the agent fetches the new keys.
	if err := a.keys.Rotate(); err != nil {
		t.Fatal(err)
	}
	if res, body := getH(t, noRedirect(c), a.URL+"/after-rotation", nil); res.StatusCode != 200 {
		t.Fatalf("after rotation: %d %s", res.StatusCode, body)
	}
	// Requests without an assertion never reach the backend: a public
	// path of the protected app, and an app without pre-authentication
	// (even with a forged assertion, which the gateway strips anyway).
	res, body = getH(t, a.Client(), a.URL+"/public/x", map[string]string{"Accept": "application/json"})
	assertRejected(t, "public path", res, body)
	req, _ := http.NewRequest("GET", a.URL+"/", nil)
	req.Host = "open.test"
	req.Header.Set("X-Sallyport-Assertion", "forged")
	req.Header.Set("Accept", "application/json")
	res, body = do(t, a.Client(), req)
	assertRejected(t, "open app", res, body)
}

func assertRejected(t *testing.T, what string, res *http.Response, body string) {
	t.Helper()
	var e struct{ Error, Message string }
	_ = json.Unmarshal([]byte(body), &e)
	if res.StatusCode != 502 || res.Header.Get("X-Sallyport-Error") != "assertion-rejected" || e.Error != "assertion-rejected" ||
		strings.Contains(body, "headers") {
		t.Errorf("%s: %d %v %s", what, res.StatusCode, res.Header, body)
	}
}
