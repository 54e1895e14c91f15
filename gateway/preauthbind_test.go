package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/devoidc"
)

// TestPreauthBindingCounted: under cookie_domain with TLS, preauth_total
// counts a page load sent to its session's home host as bind_started (it
// counted as sign_in_started), a host bound through /.sallyport/auth/bound
// as bound, and refusals at /bind and /bound by their code (they were not
// counted at all: a replayed ticket's state_mismatch was invisible).
func TestPreauthBindingCounted(t *testing.T) {
	user := devoidc.User{Username: "alice", Password: "alice-pw", Subject: "sub-alice", Email: "alice@example.com"}
	idpTS := httptest.NewUnstartedServer(nil)
	idpTS.Config.Handler = devoidc.New(devoidc.Config{Issuer: "http://" + idpTS.Listener.Addr().String(),
		Users: []devoidc.User{user}, Clients: []devoidc.Client{{ID: "gw", Secret: "s"}}}).Handler()
	idpTS.Start()
	defer idpTS.Close()
	keys, err := assertion.NewKeySet(assertion.KeySetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, preauth.KeySize)
	rand.Read(key)
	idpClient := &http.Transport{}
	defer idpClient.CloseIdleConnections()
	svc, err := preauth.New(preauth.Config{CookieKey: key, Keys: keys, CookieDomain: "apps.example.test",
		HTTPClient: &http.Client{Transport: idpClient},
		Providers:  []preauth.ProviderConfig{{Name: "corp", Issuer: idpTS.URL, ClientID: "gw", ClientSecret: "s"}}})
	if err != nil {
		t.Fatal(err)
	}
	var routes []Route
	for _, app := range []string{"app1", "app2"} {
		routes = append(routes, Route{App: app, Hosts: []string{app + ".apps.example.test"},
			Backend: mustURL(t, "http://backend:80"), Group: "g", Preauth: &preauth.Policy{Provider: "corp"}})
	}
	g, err := New(Config{TunnelTLS: &tls.Config{}, Preauth: svc, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	// The gateway's admission over TLS; 204 stands for the app.
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.handler.admit(w, r, &exchangeState{}) {
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	ts.StartTLS()
	defer ts.Close()
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com" // the test certificate's name
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h, _, _ := net.SplitHostPort(addr); strings.HasSuffix(h, ".apps.example.test") {
			addr = ts.Listener.Addr().String()
		}
		return d.DialContext(ctx, network, addr)
	}
	defer tr.CloseIdleConnections()
	jar, _ := cookiejar.New(nil)
	var boundURL string
	browser := &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(r *http.Request, _ []*http.Request) error {
			if r.URL.Path == preauth.BoundPath {
				boundURL = r.URL.String()
			}
			return nil
		}}
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	at := func(app, path string) string { return "https://" + app + ".apps.example.test:" + port + path }
	get := func(u string) *http.Response {
		t.Helper()
		res, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}

	// Sign in on app1.
	res := get(at("app1", "/"))
	if res.Request.URL.Path != "/authorize" {
		t.Fatalf("app1: at %s, not the provider's sign-in page", res.Request.URL)
	}
	res, _, err = devoidc.SubmitSignIn(browser, res.Request.URL, user)
	if err != nil || res.StatusCode != http.StatusNoContent || res.Request.URL.String() != at("app1", "/") {
		t.Fatalf("sign-in on app1: %v, %v", res, err)
	}
	// app2's first page load is bound through app1.
	if res := get(at("app2", "/")); res.StatusCode != http.StatusNoContent || boundURL == "" {
		t.Fatalf("app2: %d at %s, bound through %q", res.StatusCode, res.Request.URL, boundURL)
	}
	// Refused: the ticket again (its binding cookie is gone), and a
	// damaged request at the home.
	for _, u := range []string{boundURL, at("app1", preauth.BindPath+"?q=v1.damaged")} {
		if res := get(u); res.StatusCode != http.StatusBadRequest || res.Header.Get(ErrorHeader) != preauth.CodeStateMismatch {
			t.Errorf("%s: %d %s, want 400 %s", u, res.StatusCode, res.Header.Get(ErrorHeader), preauth.CodeStateMismatch)
		}
	}

	// A browser that holds the session but no host's bound cookie (as
	// one a sibling host planted it in): app1 has nothing to vouch for,
	// and /bound sends it to the provider (sign_in_started, at /bound).
	other, _ := cookiejar.New(nil)
	for _, c := range jar.Cookies(mustURL(t, at("app2", "/"))) {
		if strings.HasPrefix(c.Name, "__Secure-") {
			other.SetCookies(mustURL(t, at("app1", "/")), []*http.Cookie{{Name: c.Name, Value: c.Value,
				Domain: "apps.example.test", Path: "/", Secure: true, HttpOnly: true}})
		}
	}
	browser.Jar, boundURL = other, ""
	if res := get(at("app2", "/")); res.Request.URL.Path != "/authorize" || boundURL == "" {
		t.Errorf("app2 with an unvouched session: at %s, through %q; want the provider's sign-in page through /bound", res.Request.URL, boundURL)
	}

	want := map[string]float64{"sign_in_started": 2, "signed_in": 1, "allowed": 2, "bind_started": 2, "bound": 1,
		preauth.CodeStateMismatch: 2}
	if n := testutil.CollectAndCount(g.metrics.preauth); n != len(want) {
		t.Errorf("%d outcomes counted, want %d", n, len(want))
	}
	for outcome, n := range want {
		if got := testutil.ToFloat64(g.metrics.preauth.WithLabelValues(outcome)); got != n {
			t.Errorf("preauth_total{outcome=%q} = %v, want %v", outcome, got, n)
		}
	}
}
