package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// TestIdentitySpellingsStripped: a client's identity headers reach no app
// in any spelling that a server in front of the app folds onto the real
// name. lighttpd (CGI, FastCGI, SCGI) and Apache httpd before 2.4 turn
// every byte but letters and digits into "_", so X.Sallyport.User becomes
// HTTP_X_SALLYPORT_USER for a PHP app, the variable X-Sallyport-User is
// read from. The old strip knew case and "_" only: X.Sallyport.User,
// X~Sallyport~Groups, X-Sallyport.Assertion and (preauth) Remote.User
// reached the agent, on public paths and apps without sign-in.
func TestIdentitySpellingsStripped(t *testing.T) {
	spoof := http.Header{
		"X.sallyport.user": {"admin"}, "X~sallyport~groups": {"admins"}, "X-Sallyport.assertion": {"forged"},
		"X+sallyport+email": {"admin@example.com"}, "Remote.user": {"admin"}, "X.forwarded.user": {"admin"},
		"X_auth_request.email": {"admin@example.com"}, "X-Kept": {"yes"},
	}
	for _, oidc := range []bool{false, true} {
		s := &scriptSession{frames: []*tunnel.Frame{{Response: &tunnelv1.ResponseHead{Status: 204}, End: true}}}
		h, st := forwardRig(s)
		if oidc {
			st.route.Preauth = &preauth.Policy{} // a public path: no identity to set
		}
		r := httptest.NewRequest("GET", "http://app.test/x", nil)
		r.Header = spoof.Clone()
		w := httptest.NewRecorder()
		h.serveRelay(w, r, st)
		if w.Code != 204 {
			t.Fatalf("oidc %v: status %d, want 204", oidc, w.Code)
		}
		for k, vv := range wireHeader(s.head(t).GetHeaders()) {
			folded := strings.ToLower(assertion.FoldName(k))
			other := folded == "remote-user" || strings.HasPrefix(folded, "x-forwarded-user") || strings.HasPrefix(folded, "x-auth-request-")
			if assertion.IsHeader(k) || oidc && other {
				t.Errorf("oidc %v: the client's %s: %q reached the agent", oidc, k, vv)
			}
		}
		if got := wireHeader(s.head(t).GetHeaders()).Get("X-Kept"); got != "yes" {
			t.Errorf("oidc %v: X-Kept = %q, want it relayed", oidc, got)
		}
	}
}

// TestIdentityUpgradeResponseDropsGatewayCookies: the upgrade path's
// response hook drops an app's Set-Cookie for the gateway's cookies, as
// writeResponse does on the relay path, and keeps the app's own. (Before
// it, a backend that answered a request with "Connection: Upgrade" set
// sallyport_session in the visitor's browser; proxy.go wires it into the
// ReverseProxy, and internal/e2e TestPreauthUpgradeCannotSetGatewayCookies
// covers that end to end.)
func TestIdentityUpgradeResponseDropsGatewayCookies(t *testing.T) {
	keys, err := assertion.NewKeySet(assertion.KeySetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := preauth.New(preauth.Config{CookieKey: make([]byte, preauth.KeySize), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	h := &proxyHandler{g: &Gateway{cfg: Config{Preauth: svc}}}
	res := &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{"Set-Cookie": {
		"sallyport_session=planted; Path=/", "app=kept", "__Host-sallyport_session=x; Path=/; Secure",
		"sallyport_login_0011223344556677=x; Path=/.sallyport/auth/callback",
	}}}
	if err := h.upgradeResponse(res); err != nil {
		t.Fatal(err)
	}
	if got := res.Header.Values("Set-Cookie"); len(got) != 1 || got[0] != "app=kept" {
		t.Errorf("Set-Cookie %q, want only the app's own", got)
	}
	res.Header = http.Header{"Set-Cookie": {"sallyport_pending=x"}}
	if err := h.upgradeResponse(res); err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Header["Set-Cookie"]; ok {
		t.Errorf("Set-Cookie %q left", res.Header["Set-Cookie"])
	}
}
