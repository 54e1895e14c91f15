package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/devoidc"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
)

func TestPreauthBrowserSignIn(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	res, body := a.signIn(c, "/deep/page?x=1&y=%2F", alice)
	if res.StatusCode != 200 {
		t.Fatalf("after sign-in: %d %s", res.StatusCode, body)
	}
	if got := res.Request.URL.RequestURI(); got != "/deep/page?x=1&y=%2F" {
		t.Errorf("returned to %q, want the original path and query", got)
	}
	e := decodeEchoed(t, body)
	if e.Path != "/deep/page" || e.Query != "x=1&y=%2F" {
		t.Errorf("backend saw %q ? %q", e.Path, e.Query)
	}
	h := e.Headers
	if h.Get("X-Sallyport-User") != "sub-alice" || h.Get("X-Sallyport-Email") != "alice@example.com" ||
		h.Get("X-Sallyport-Groups") != "staff,a%2Cb" {
		t.Errorf("identity headers: %v", h)
	}
	if ck := h.Get("Cookie"); strings.Contains(ck, "sallyport") {
		t.Errorf("the backend got the gateway's cookies: %q", ck)
	}
	claims, err := assertion.Verify(h.Get("X-Sallyport-Assertion"), a.jwks(c), "app", a.clock.Now())
	if err != nil {
		t.Fatalf("assertion: %v", err)
	}
	if claims.Subject != "sub-alice" || claims.Email != "alice@example.com" || claims.Provider != "corp" ||
		claims.Auth != "session" || len(claims.Groups) != 2 || claims.Groups[1] != "a,b" || claims.Request == "" {
		t.Errorf("assertion claims: %+v", claims)
	}
	if _, err := assertion.Verify(h.Get("X-Sallyport-Assertion"), a.jwks(c), "other-app", a.clock.Now()); err == nil {
		t.Error("the assertion verified for another app")
	}
	// An app verifies it as the README shows, with go-oidc and the JWKS URL.
	ctx := oidc.ClientContext(context.Background(), a.Client())
	v := oidc.NewVerifier("sallyport", oidc.NewRemoteKeySet(ctx, a.URL+assertion.JWKSPath),
		&oidc.Config{ClientID: "app", SupportedSigningAlgs: []string{"ES256"}, Now: a.clock.Now})
	if tok, err := v.Verify(ctx, h.Get("X-Sallyport-Assertion")); err != nil || tok.Subject != "sub-alice" {
		t.Errorf("go-oidc verification as in the README: %v", err)
	}

	// The session cookie's attributes, from the callback's Set-Cookie.
	var setCookie string
	for r := res; r != nil; r = r.Request.Response {
		for _, v := range r.Header.Values("Set-Cookie") {
			if strings.HasPrefix(v, "sallyport_session=") {
				setCookie = v
			}
		}
	}
	for _, attr := range []string{"HttpOnly", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(setCookie, attr) {
			t.Errorf("session cookie %q lacks %s", setCookie, attr)
		}
	}
	if strings.Contains(setCookie, "Domain=") || strings.Contains(setCookie, "Secure") {
		t.Errorf("session cookie %q: want host-only and not Secure on plain HTTP", setCookie)
	}

	// Signed in: no more redirects, a fresh assertion per request.
	res, body = getH(t, noRedirect(c), a.URL+"/again", nil)
	if res.StatusCode != 200 || decodeEchoed(t, body).Headers.Get("X-Sallyport-User") != "sub-alice" {
		t.Fatalf("second request: %d %s", res.StatusCode, body)
	}
	// The access log names who made it; an anonymous request names nobody.
	res, _ = getH(t, a.Client(), a.URL+"/public/x", nil)
	if res.StatusCode != 200 {
		t.Fatalf("public path: %d", res.StatusCode)
	}
	users := map[string]string{}
	for _, e := range a.logs.FilterMessage("access").All() {
		f := e.ContextMap()
		if p, _ := f["path"].(string); p == "/again" || p == "/public/x" {
			users[p] = fmt.Sprint(f["user"], " ", f["email"])
		}
	}
	if users["/again"] != "sub-alice alice@example.com" || users["/public/x"] != "<nil> <nil>" {
		t.Errorf("access log users: %q", users)
	}

	// Sign out: the cookie goes, the next page load is sent to sign in.
	res, body = getH(t, noRedirect(c), a.URL+"/.sallyport/auth/logout", nil)
	if res.StatusCode != 200 || !strings.Contains(body, "Signed out") || a.sessionCookie(c) != nil {
		t.Fatalf("logout: %d %s; cookie %v", res.StatusCode, body, a.sessionCookie(c))
	}
	res, _ = getH(t, noRedirect(c), a.URL+"/again", nil)
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(res.Header.Get("Location"), a.idpTS.URL+"/authorize?") {
		t.Fatalf("after logout: %d %v", res.StatusCode, res.Header)
	}
}

func TestPreauthRedirectCarriesPKCEStateNonce(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	res, _ := getH(t, noRedirect(a.browser()), a.URL+"/x", nil)
	if res.StatusCode != http.StatusFound {
		t.Fatalf("got %d", res.StatusCode)
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 16 {
			t.Errorf("%s = %q", k, q.Get(k))
		}
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != a.URL+"/.sallyport/auth/callback" ||
		q.Get("client_id") != clientID || q.Get("response_type") != "code" {
		t.Errorf("authorization request: %v", q)
	}
	var login *http.Cookie
	for _, ck := range res.Cookies() {
		if strings.HasPrefix(ck.Name, "sallyport_login_") {
			login = ck
		}
	}
	if login == nil || login.Path != "/.sallyport/auth/callback" || !login.HttpOnly || login.SameSite != http.SameSiteLaxMode {
		t.Errorf("pre-login cookie: %+v", login)
	}
}

// TestPreauthBehindTrustedProxy: behind a load balancer that terminated
// TLS (a trusted peer saying X-Forwarded-Proto: https), the callback URL is
// https and the cookies are Secure with the __Host- prefix, although the
// gateway itself speaks plain HTTP; from an untrusted peer the header is
// ignored.
func TestPreauthBehindTrustedProxy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		trust  string
		secure bool
	}{
		{"trusted", "127.0.0.0/8", true},
		{"not trusted", "10.0.0.0/8", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAuthRig(t, preauth.Policy{}, nil, func(c *gateway.Config) {
				c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tc.trust)}
			})
			c := noRedirect(a.browser())
			res, _ := getH(t, c, a.URL+"/x", map[string]string{"X-Forwarded-Proto": "https"})
			if res.StatusCode != http.StatusFound {
				t.Fatalf("got %d", res.StatusCode)
			}
			loc, err := url.Parse(res.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			host := strings.TrimPrefix(a.URL, "http://")
			want := "http://" + host + "/.sallyport/auth/callback"
			if tc.secure {
				want = "https://" + host + "/.sallyport/auth/callback"
			}
			if got := loc.Query().Get("redirect_uri"); got != want {
				t.Errorf("redirect_uri %q, want %q", got, want)
			}
			var login *http.Cookie
			for _, ck := range res.Cookies() {
				if strings.Contains(ck.Name, "sallyport_login_") {
					login = ck
				}
			}
			if login == nil || login.Secure != tc.secure {
				t.Errorf("pre-login cookie %+v, want Secure %v", login, tc.secure)
			}
		})
	}
}

// TestPreauthSignOutFromAnotherSite: another site cannot sign a user out.
// Its GET gets a page that asks (the button POSTs from this origin), its
// POST is refused; the user's own GET or same-origin POST signs out.
func TestPreauthSignOutFromAnotherSite(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	if res, body := a.signIn(c, "/", alice); res.StatusCode != 200 {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	logout := a.URL + "/.sallyport/auth/logout"
	send := func(method string, hdr map[string]string) (*http.Response, string) {
		req, err := http.NewRequest(method, logout, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return do(t, noRedirect(c), req)
	}
	stillSignedIn := func(step string) {
		t.Helper()
		if a.sessionCookie(c) == nil {
			t.Fatalf("%s: signed out", step)
		}
		if res, body := getH(t, noRedirect(c), a.URL+"/x", nil); res.StatusCode != 200 {
			t.Fatalf("%s: then %d %s", step, res.StatusCode, body)
		}
	}

	// Requests no user made ask too: a HEAD, a prefetch of a page that
	// links to the sign-out (Chrome, older Chrome, Firefox).
	for _, tc := range []struct {
		method string
		hdr    map[string]string
	}{
		{"HEAD", nil},
		{"GET", map[string]string{"Sec-Purpose": "prefetch;prerender"}},
		{"GET", map[string]string{"Purpose": "prefetch"}},
		{"GET", map[string]string{"X-Moz": "prefetch"}},
	} {
		res, body := send(tc.method, tc.hdr)
		if res.StatusCode != 200 || tc.method == "GET" && !strings.Contains(body, "Sign out?") {
			t.Fatalf("%s %v: %d %s", tc.method, tc.hdr, res.StatusCode, body)
		}
		stillSignedIn(fmt.Sprint(tc.method, " ", tc.hdr))
	}
	if n := a.idp.Revoked(); n != 0 {
		t.Fatalf("%d refresh tokens revoked by requests no user made", n)
	}

	res, body := send("GET", map[string]string{"Sec-Fetch-Site": "cross-site"})
	if res.StatusCode != 200 || !strings.Contains(body, "Sign out?") ||
		!strings.Contains(body, `<form method="post" action="/.sallyport/auth/logout">`) {
		t.Fatalf("cross-site GET: %d %s", res.StatusCode, body)
	}
	stillSignedIn("cross-site GET")
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
	} {
		res, body = send("POST", hdr)
		if res.StatusCode != http.StatusForbidden || res.Header.Get("X-Sallyport-Error") != "forbidden" {
			t.Fatalf("POST %v: %d %s", hdr, res.StatusCode, body)
		}
		stillSignedIn(fmt.Sprint("POST ", hdr))
	}
	if res, _ = send("PUT", nil); res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD, POST" {
		t.Fatalf("PUT: %d %v", res.StatusCode, res.Header)
	}
	stillSignedIn("PUT")

	// The confirmation's button: a same-origin POST.
	res, body = send("POST", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": a.URL})
	if res.StatusCode != 200 || !strings.Contains(body, "Signed out") || a.sessionCookie(c) != nil {
		t.Fatalf("same-origin POST: %d %s; cookie %v", res.StatusCode, body, a.sessionCookie(c))
	}
}

func TestPreauthBearerTokens(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := noRedirect(a.Client())
	base := devoidc.UserClaims(&alice)
	with := func(extra map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	now := a.clock.Now()
	cases := []struct {
		name   string
		token  string
		status int
		desc   string
	}{
		{"valid", a.idp.Mint(with(map[string]any{"aud": clientID})), 200, ""},
		{"valid in an audience list", a.idp.Mint(with(map[string]any{"aud": []string{"x", clientID}})), 200, ""},
		{"wrong audience", a.idp.Mint(with(map[string]any{"aud": "someone-else"})), 401, "another audience"},
		{"expired", a.idp.Mint(with(map[string]any{"aud": clientID, "exp": now.Add(-time.Minute).Unix()})), 401, "expired"},
		{"wrong signature", devoidc.MintWith(devoidc.NewForeignSigner(a.idp.KeyID()),
			with(map[string]any{"iss": a.idpTS.URL, "aud": clientID, "exp": now.Add(time.Hour).Unix()})), 401, "signature"},
		{"other issuer", a.idp.Mint(with(map[string]any{"aud": clientID, "iss": "https://evil.example"})), 401, "issuer"},
		{"not a JWT", "abc.def", 401, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, body := getH(t, c, a.URL+"/api", map[string]string{"Authorization": "Bearer " + tc.token, "Accept": "application/json"})
			if res.StatusCode != tc.status {
				t.Fatalf("got %d %s", res.StatusCode, body)
			}
			if tc.status == 200 {
				e := decodeEchoed(t, body)
				if e.Headers.Get("X-Sallyport-User") != "sub-alice" {
					t.Errorf("identity: %v", e.Headers)
				}
				cl, err := assertion.Verify(e.Headers.Get("X-Sallyport-Assertion"), a.jwks(c), "app", a.clock.Now())
				if err != nil || cl.Auth != "bearer" {
					t.Errorf("assertion: %+v %v", cl, err)
				}
				return
			}
			www := res.Header.Get("WWW-Authenticate")
			if res.Header.Get("X-Sallyport-Error") != "unauthenticated" || !strings.Contains(www, `error="invalid_token"`) ||
				!strings.Contains(www, tc.desc) {
				t.Errorf("refusal: %v %s", res.Header, body)
			}
		})
	}
}

func TestPreauthNonPageRequestsGet401(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := noRedirect(a.Client())
	cases := []struct {
		name   string
		method string
		hdr    map[string]string
	}{
		{"json", "GET", map[string]string{"Accept": "application/json"}},
		{"xhr", "GET", map[string]string{"X-Requested-With": "XMLHttpRequest"}},
		{"fetch", "GET", map[string]string{"Sec-Fetch-Mode": "cors"}},
		{"post", "POST", nil},
		{"websocket", "GET", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket",
			"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, a.URL+"/x", nil)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			res, body := do(t, c, req)
			if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" || res.Header.Get("X-Sallyport-Error") != "unauthenticated" {
				t.Fatalf("got %d %v %s", res.StatusCode, res.Header, body)
			}
		})
	}
	// A page load is redirected.
	res, _ := getH(t, c, a.URL+"/x", map[string]string{"Accept": "text/html"})
	if res.StatusCode != http.StatusFound {
		t.Fatalf("page load: %d", res.StatusCode)
	}
}

func TestPreauthPolicy(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{Domains: []string{"example.com"}, Groups: []string{"ops"}}, nil)
	// alice@example.com passes by domain.
	res, body := a.signIn(a.browser(), "/", alice)
	if res.StatusCode != 200 {
		t.Fatalf("alice: %d %s", res.StatusCode, body)
	}
	// mallory is signed in but not allowed: 403 naming her, with sign-out.
	c := a.browser()
	res, body = a.signIn(c, "/", mallory)
	if res.StatusCode != 403 || res.Header.Get("X-Sallyport-Error") != "forbidden" ||
		!strings.Contains(body, "mallory@evil.example") || !strings.Contains(body, `href="/.sallyport/auth/logout"`) {
		t.Fatalf("mallory: %d %s", res.StatusCode, body)
	}
	// A bearer token in an allowed group passes; one outside is 403.
	tok := a.idp.Mint(map[string]any{"sub": "svc", "aud": clientID, "groups": []string{"ops"}})
	res, body = getH(t, a.Client(), a.URL+"/", map[string]string{"Authorization": "Bearer " + tok})
	if res.StatusCode != 200 {
		t.Fatalf("ops token: %d %s", res.StatusCode, body)
	}
	tok = a.idp.Mint(map[string]any{"sub": "svc", "aud": clientID, "email": "x@example.com", "email_verified": false})
	res, body = getH(t, a.Client(), a.URL+"/", map[string]string{"Authorization": "Bearer " + tok, "Accept": "application/json"})
	if res.StatusCode != 403 || !strings.Contains(body, `"error":"forbidden"`) {
		t.Fatalf("unverified email must not pass a domain rule: %d %s", res.StatusCode, body)
	}
}

func TestPreauthStateReplayAndMismatch(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	callback, nr := a.stopAtCallback(c)
	// Another browser (no pre-login cookie) cannot use the callback.
	res, body := getH(t, noRedirect(a.browser()), callback, nil)
	if res.StatusCode != 400 || res.Header.Get("X-Sallyport-Error") != "state-mismatch" || !strings.Contains(body, "Start over") {
		t.Fatalf("foreign browser: %d %s", res.StatusCode, body)
	}
	// A forged state in the right browser fails too.
	cu, _ := url.Parse(callback)
	q := cu.Query()
	q.Set("state", "forged")
	cu.RawQuery = q.Encode()
	if res, _ := getH(t, nr, cu.String(), nil); res.StatusCode != 400 {
		t.Fatalf("forged state: %d", res.StatusCode)
	}
	// The right browser completes it once.
	res, _ = getH(t, nr, callback, nil)
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/" {
		t.Fatalf("callback: %d %v", res.StatusCode, res.Header)
	}
	// Replaying the callback without a session is refused.
	replay := func(what string, session *http.Cookie) {
		t.Helper()
		req, _ := http.NewRequest("GET", callback, nil)
		for _, ck := range c.Jar.Cookies(req.URL) {
			if ck.Name != "sallyport_session" {
				req.AddCookie(ck)
			}
		}
		if session != nil {
			req.AddCookie(session)
		}
		res, body := do(t, noRedirect(a.Client()), req)
		if res.StatusCode != 400 || res.Header.Get("X-Sallyport-Error") != "state-mismatch" || res.Header.Get("Location") != "" ||
			!strings.Contains(body, "Start over") {
			t.Fatalf("replay %s: %d %v %s", what, res.StatusCode, res.Header, body)
		}
	}
	replay("without a session", nil)
	// With the session (the back button after signing in) it goes to the
	// app's start page, whatever the query says, and signs nobody in.
	session := a.sessionCookie(c)
	for _, u := range []string{callback, a.URL + "/.sallyport/auth/callback?state=x&code=y&return=https://evil.example/"} {
		res, _ = getH(t, nr, u, nil)
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" || len(res.Cookies()) != 0 {
			t.Fatalf("replay with a session: %d %v", res.StatusCode, res.Header)
		}
	}
	// A copy of the session after it was signed out counts as none.
	if res, _ := getH(t, nr, a.URL+"/.sallyport/auth/logout", nil); res.StatusCode != 200 {
		t.Fatalf("sign-out: %d", res.StatusCode)
	}
	replay("with a signed-out session", session)
	// A provider error is shown as such.
	c = a.browser()
	nr = noRedirect(c)
	res, _ = getH(t, c, a.URL+"/", nil) // new pre-login cookie
	state := res.Request.URL.Query().Get("state")
	res, body = getH(t, nr, a.URL+"/.sallyport/auth/callback?error=access_denied<b>&state="+url.QueryEscape(state), nil)
	if res.StatusCode != 403 || res.Header.Get("X-Sallyport-Error") != "sign-in-failed" || !strings.Contains(body, "access_denied") ||
		strings.Contains(body, "<b>") {
		t.Fatalf("provider error: %d %s", res.StatusCode, body)
	}
}

func TestPreauthOpenRedirects(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	for _, start := range []string{"//evil.example/x", `/\evil.example/x`, "/%2F%2Fevil.example/x", "/%5Cevil.example", "///evil.example"} {
		t.Run(start, func(t *testing.T) {
			c := a.browser()
			res, err := c.Do(rawRequest(t, a.URL, start))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode == 400 {
				return // refused outright
			}
			if !strings.Contains(res.Request.URL.String(), "/authorize?") {
				t.Fatalf("%d at %s", res.StatusCode, res.Request.URL)
			}
			form := url.Values{}
			for k, v := range res.Request.URL.Query() {
				form[k] = v
			}
			form.Set("username", alice.Username)
			form.Set("password", alice.Password)
			nr := noRedirect(c)
			res, _ = do(t, nr, postForm(t, a.idpTS.URL+"/authorize", form))
			res, _ = getH(t, nr, res.Header.Get("Location"), nil)
			loc := res.Header.Get("Location")
			u, err := url.Parse(loc)
			if res.StatusCode != http.StatusFound || err != nil || u.Host != "" || u.Scheme != "" ||
				!strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.Contains(loc, `\`) {
				t.Fatalf("return location %q (%d)", loc, res.StatusCode)
			}
		})
	}
}

// rawRequest is a GET of base with the request target path sent exactly as
// written.
func rawRequest(t *testing.T, base, path string) *http.Request {
	req, err := http.NewRequest("GET", base+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "//" + req.URL.Host + path // absolute-form, path verbatim
	return req
}

func postForm(t *testing.T, u string, form url.Values) *http.Request {
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func TestPreauthSpoofedIdentityHeaders(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	a.signIn(c, "/", alice)
	spoof := map[string]string{
		"X-Sallyport-User": "admin", "x-sallyport-email": "admin@example.com", "X_Sallyport_Groups": "admins",
		"X-SALLYPORT-ASSERTION": "forged", "X-Sallyport-Anything": "x", "X-Forwarded-User": "admin",
		"Remote-User": "admin", "X_Forwarded_Email": "admin@example.com",
		// The hop-by-hop trick: a header named in Connection is removed by
		// a proxy; that must not remove the ones the gateway sets.
		"Connection": "X-Sallyport-User, X-Sallyport-Email, X-Sallyport-Assertion, X-Sallyport-Groups",
	}
	res, body := getH(t, noRedirect(c), a.URL+"/who", spoof)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	h := decodeEchoed(t, body).Headers
	if h.Get("X-Sallyport-User") != "sub-alice" || h.Get("X-Sallyport-Email") != "alice@example.com" ||
		h.Get("X-Sallyport-Groups") != "staff,a%2Cb" || len(h.Values("X-Sallyport-User")) != 1 {
		t.Errorf("identity headers: %v", h)
	}
	if _, err := assertion.Verify(h.Get("X-Sallyport-Assertion"), a.jwks(c), "app", a.clock.Now()); err != nil {
		t.Errorf("assertion: %v", err)
	}
	for k := range h {
		lk := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		switch {
		case lk == "x-sallyport-anything", lk == "x-forwarded-user", lk == "remote-user", lk == "x-forwarded-email":
			t.Errorf("spoofed header %s reached the app: %v", k, h[k])
		}
	}
	// Nor as trailers of a chunked body, declared or not.
	req, _ := http.NewRequest("POST", a.URL+"/trailers", io.MultiReader(strings.NewReader("body")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sallyport-User": {"admin"}, "X_sallyport_email": {"admin@example.com"},
		"Remote-User": {"admin"}, "X-Ok": {"kept"}}
	res, body = do(t, noRedirect(c), req)
	e := decodeEchoed(t, body)
	if res.StatusCode != 200 || e.Body != "body" || e.Trailers.Get("X-Ok") != "kept" || e.Trailers.Get("X-Sallyport-User") != "" ||
		e.Trailers.Get("X_sallyport_email") != "" || e.Trailers.Get("Remote-User") != "" {
		t.Errorf("trailers: %d %+v", res.StatusCode, e)
	}
	// Without a session nothing identity-like reaches a public path either.
	res, body = getH(t, a.Client(), a.URL+"/public/x", spoof)
	h = decodeEchoed(t, body).Headers
	if res.StatusCode != 200 || h.Get("X-Sallyport-User") != "" || h.Get("X-Sallyport-Assertion") != "" || h.Get("X_sallyport_groups") != "" {
		t.Errorf("public path: %d %v", res.StatusCode, h)
	}
	// An app without pre-authentication never sees X-Sallyport-* from clients.
	req, _ = http.NewRequest("GET", a.URL+"/", nil)
	req.Host = "open.test"
	for k, v := range spoof {
		req.Header.Set(k, v)
	}
	res, body = do(t, a.Client(), req)
	h = decodeEchoed(t, body).Headers
	for k := range h {
		if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-sallyport-") {
			t.Errorf("open app got %s", k)
		}
	}
	// Nor as trailers: they were scrubbed only for apps with
	// pre-authentication, so an open app got a forged user and assertion.
	req, _ = http.NewRequest("POST", a.URL+"/trailers", io.MultiReader(strings.NewReader("body")))
	req.Host = "open.test"
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sallyport-User": {"admin"}, "X_sallyport_email": {"admin@example.com"},
		"X-Sallyport-Assertion": {"forged"}, "X_Forwarded_For": {"6.6.6.6"}, "X-Ok": {"kept"}}
	res, body = do(t, a.Client(), req)
	e = decodeEchoed(t, body)
	if res.StatusCode != 200 || e.Body != "body" || e.Trailers.Get("X-Ok") != "kept" {
		t.Errorf("open app trailers: %d %+v", res.StatusCode, e)
	}
	for k := range e.Trailers {
		if k != "X-Ok" {
			t.Errorf("open app got trailer %s: %q", k, e.Trailers[k])
		}
	}
}

// TestPreauthAppCannotSetGatewayCookies: an app's Set-Cookie for one of the
// gateway's cookies never reaches the browser. An app without sign-in on
// the same host (or under cookie_domain) could otherwise plant the
// attacker's session in a victim's browser, who then used the protected
// app as the attacker (session fixation), or a pre-login cookie that
// completes the attacker's sign-in there (login CSRF). Its other cookies
// pass, and the gateway's own refreshed session cookie is not affected.
func TestPreauthAppCannotSetGatewayCookies(t *testing.T) {
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range []string{
			"sallyport_session=planted; Path=/; HttpOnly", "__Host-sallyport_session=planted; Path=/; Secure",
			"sallyport_session_1=chunk", "sallyport_login_abc=planted; Path=/.sallyport/auth/callback",
			"=sallyport_session=planted; Path=/", "__Secure-sallyport_login_abc=planted; Secure",
			"app=kept; Path=/", "other_sallyport_x=kept",
		} {
			w.Header().Add("Set-Cookie", c)
		}
	}))
	a := newAuthRig(t, preauth.Policy{}, nil, func(c *gateway.Config) {
		c.Routes = append(c.Routes, gateway.Route{App: "plant", Hosts: []string{"plant.test"},
			Backend: testrig.MustURL(t, backend.URL), Group: testrig.Group})
	})
	req, _ := http.NewRequest("GET", a.URL+"/", nil)
	req.Host = "plant.test"
	res, _ := do(t, a.Client(), req)
	if got, want := res.Header.Values("Set-Cookie"), []string{"app=kept; Path=/", "other_sallyport_x=kept"}; !slices.Equal(got, want) {
		t.Errorf("client got Set-Cookie %q, want only %q", got, want)
	}
}

func TestPreauthPathNormalisation(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := noRedirect(a.Client())
	// Each of these tries to reach a protected path through /public: it must
	// be refused (400) or need sign-in (401), never reach the app anonymously.
	attacks := []string{
		"/public/../admin", "/public/%2e%2e/admin", "/public/%2E%2E/admin", "/public/.%2e/admin",
		"/public%2f..%2fadmin", "/public/..%2fadmin", "/public/..%5cadmin", `/public/..\admin`,
		"/public/..;/admin", "/public;/../admin", "//public/../admin", "/public/./../admin",
		"/public%2Fx", "/x/../public/../admin", "/public/%00/../../admin", "/public%00", "/publicx",
	}
	for _, p := range attacks {
		req := rawRequest(t, a.URL, p)
		req.Header.Set("Accept", "application/json")
		res, body := do(t, c, req)
		if res.StatusCode != 400 && res.StatusCode != 401 {
			t.Errorf("%s: %d %s", p, res.StatusCode, body)
		}
	}
	// Public paths pass, and the app gets exactly the path that was judged.
	for p, want := range map[string]string{
		"/public":              "/public",
		"/public/a//b/./c":     "/public/a/b/c",
		`/public\a`:            "/public/a",
		"/public/%7Euser":      "/public/~user",
		"/public/a%2Fb":        "/public/a%2Fb",
		"/admin/../public/x":   "/public/x",
		"/public/x?/../admin":  "/public/x",
		"/public/a%3Fb/":       "/public/a%3Fb/",
		"/public/%2e/x/%2e%2e": "/public/",
	} {
		req := rawRequest(t, a.URL, p)
		req.Header.Set("Accept", "application/json")
		res, body := do(t, c, req)
		if res.StatusCode != 200 {
			t.Errorf("%s: %d %s", p, res.StatusCode, body)
			continue
		}
		if got := decodeEchoed(t, body).Path; got != want {
			t.Errorf("%s: backend got %q, want %q", p, got, want)
		}
	}
}

func TestPreauthBadAndExpiredSessions(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, func(c *preauth.Config) { c.SessionLifetime = time.Hour })
	c := a.browser()
	a.signIn(c, "/", alice)
	ck := a.sessionCookie(c)
	if ck == nil {
		t.Fatal("no session cookie")
	}
	nr := noRedirect(a.Client())
	try := func(value string, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", a.URL+"/x", nil)
		req.AddCookie(&http.Cookie{Name: "sallyport_session", Value: value})
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return do(t, nr, req)
	}
	if res, _ := try(ck.Value, nil); res.StatusCode != 200 {
		t.Fatalf("valid cookie: %d", res.StatusCode)
	}
	tampered := []byte(ck.Value)
	tampered[len(tampered)-5] ^= 1
	for name, v := range map[string]string{"tampered": string(tampered), "garbage": "v1.AAAA", "empty-ish": "x"} {
		res, _ := try(v, nil)
		if res.StatusCode != http.StatusFound || !strings.Contains(res.Header.Get("Location"), "/authorize?") {
			t.Errorf("%s page load: %d, want a redirect to sign in again", name, res.StatusCode)
		}
		res, body := try(v, map[string]string{"Accept": "application/json"})
		if res.StatusCode != 401 || !strings.Contains(body, "Sign in again") {
			t.Errorf("%s API call: %d %s", name, res.StatusCode, body)
		}
	}
	a.clock.Add(time.Hour + time.Second)
	res, body := try(ck.Value, map[string]string{"Accept": "application/json"})
	if res.StatusCode != 401 || !strings.Contains(body, "expired") {
		t.Errorf("expired session: %d %s", res.StatusCode, body)
	}
}

func TestPreauthRefresh(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	a.signIn(c, "/", alice)
	first := a.sessionCookie(c).Value
	// Past the ID token's 5 minutes: the gateway refreshes, transparently.
	a.clock.Add(6 * time.Minute)
	res, body := getH(t, noRedirect(c), a.URL+"/r", nil)
	if res.StatusCode != 200 || decodeEchoed(t, body).Headers.Get("X-Sallyport-User") != "sub-alice" {
		t.Fatalf("refreshed request: %d %s", res.StatusCode, body)
	}
	second := a.sessionCookie(c).Value
	if second == first {
		t.Fatal("the session cookie was not renewed")
	}
	// A request that still carries the old cookie (sent before the browser
	// stored the new one) is fine too, although the refresh token rotated.
	req, _ := http.NewRequest("GET", a.URL+"/r", nil)
	req.AddCookie(&http.Cookie{Name: "sallyport_session", Value: first})
	if res, _ := do(t, noRedirect(a.Client()), req); res.StatusCode != 200 {
		t.Fatalf("old cookie right after the refresh: %d", res.StatusCode)
	}
	// Provider down at refresh time: 502, not a sign-out.
	a.clock.Add(6 * time.Minute)
	a.idp.SetDown(true)
	res, _ = getH(t, noRedirect(c), a.URL+"/r", nil)
	if res.StatusCode != 502 || res.Header.Get("X-Sallyport-Error") != "auth-provider-unreachable" {
		t.Fatalf("provider down: %d %v", res.StatusCode, res.Header)
	}
	a.idp.SetDown(false)
	// A refresh token the provider no longer knows: sign in again.
	a.clock.Add(2 * time.Minute) // the remembered refresh result has expired
	req, _ = http.NewRequest("GET", a.URL+"/r", nil)
	req.AddCookie(&http.Cookie{Name: "sallyport_session", Value: first})
	res, _ = do(t, noRedirect(a.Client()), req)
	if res.StatusCode != http.StatusFound || !strings.Contains(res.Header.Get("Location"), "/authorize?") {
		t.Fatalf("revoked refresh token: %d %v", res.StatusCode, res.Header)
	}
}

func TestPreauthProviderUnreachable(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	a.idp.SetDown(true)
	res, body := getH(t, noRedirect(a.Client()), a.URL+"/", nil)
	if res.StatusCode != 502 || res.Header.Get("X-Sallyport-Error") != "auth-provider-unreachable" ||
		!strings.Contains(body, "sign-in provider could not be reached") {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	// Discovery failures are remembered briefly, then retried.
	a.idp.SetDown(false)
	a.clock.Add(10 * time.Second)
	if res, _ := getH(t, noRedirect(a.Client()), a.URL+"/", nil); res.StatusCode != http.StatusFound {
		t.Fatalf("after the provider came back: %d", res.StatusCode)
	}
}

// TestPreauthLargeSession: a session too big for one cookie (150 groups and
// a refresh token) is split over several, refreshes, and signs out whole.
func TestPreauthLargeSession(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{Groups: []string{"00000149-1111-2222-3333-444455556666"}}, nil)
	c := a.browser()
	res, body := a.signIn(c, "/", many)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if n := len(strings.Split(decodeEchoed(t, body).Headers.Get("X-Sallyport-Groups"), ",")); n != 150 {
		t.Fatalf("%d groups reached the app", n)
	}
	u, _ := url.Parse(a.URL)
	chunks := 0
	for _, ck := range c.Jar.Cookies(u) {
		if strings.HasPrefix(ck.Name, "sallyport_session") {
			chunks++
			if len(ck.Name)+len(ck.Value) > 4000 {
				t.Errorf("cookie %s is %d bytes", ck.Name, len(ck.Value))
			}
		}
	}
	if chunks < 2 {
		t.Fatalf("%d session cookies, want the session split", chunks)
	}
	a.clock.Add(6 * time.Minute) // refresh, rewriting every chunk
	if res, body := getH(t, noRedirect(c), a.URL+"/", nil); res.StatusCode != 200 {
		t.Fatalf("after refresh: %d %s", res.StatusCode, body)
	}
	getH(t, c, a.URL+"/.sallyport/auth/logout", nil)
	for _, ck := range c.Jar.Cookies(u) {
		if strings.HasPrefix(ck.Name, "sallyport_session") {
			t.Errorf("%s left after sign-out", ck.Name)
		}
	}
}

// TestPreauthSessionCookieNotForwardedToOpenApps: the session cookie is a
// bearer credential (it carries the refresh token too). A browser sends it
// to every app that shares its host (another path prefix) or, with
// cookie_domain, its parent domain, including apps without sign-in: their
// backends must not receive it, or they could replay it to the protected
// apps as the user.
func TestPreauthSessionCookieNotForwardedToOpenApps(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	a.signIn(c, "/", alice)
	sc := a.sessionCookie(c)
	if sc == nil {
		t.Fatal("no session cookie after sign-in")
	}
	req, _ := http.NewRequest("GET", a.URL+"/", nil)
	req.Host = "open.test"
	req.Header.Set("Cookie", sc.Name+"="+sc.Value+"; theme=dark; sallyport_login_0011223344556677=x")
	res, body := do(t, a.Client(), req)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if got := decodeEchoed(t, body).Headers.Values("Cookie"); len(got) != 1 || got[0] != "theme=dark" {
		t.Errorf("the open app's backend got Cookie %q, want only theme=dark", got)
	}
}

// TestPreauthReturnsToTheRequestedPath: after sign-in the browser returns
// to the path it asked for as it was escaped, not to its decoded form (in
// which %3F and %23 would start a query or a fragment, %25 would be a bad
// escape, and UTF-8 would be raw bytes in Location).
func TestPreauthReturnsToTheRequestedPath(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	const path, query = "/doc%3Fv=1/caf%C3%A9/100%25/a%23b", "q=a%26b"
	res, body := a.signIn(a.browser(), path+"?"+query, alice)
	e := decodeEchoed(t, body)
	if res.StatusCode != 200 || e.Path != path || e.Query != query {
		t.Fatalf("landed on %q ? %q (%d), want %q ? %q", e.Path, e.Query, res.StatusCode, path, query)
	}
}

// TestPreauthGroupsOverage: a token whose groups were left out because
// there are too many (Entra ID's _claim_names) cannot pass a policy by
// groups; the gateway says so in its log instead of refusing the user
// without a trace of why.
func TestPreauthGroupsOverage(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	a := newAuthRig(t, preauth.Policy{Groups: []string{"staff"}}, func(c *preauth.Config) { c.Log = zap.New(core) })
	claims := devoidc.UserClaims(&devoidc.User{Username: "big", Subject: "sub-big"})
	claims["aud"] = clientID
	claims["_claim_names"] = map[string]any{"groups": "src1"}
	claims["_claim_sources"] = map[string]any{"src1": map[string]any{"endpoint": "https://graph.example/v1.0/users/x/getMemberObjects"}}
	res, body := getH(t, a.Client(), a.URL+"/api", map[string]string{"Authorization": "Bearer " + a.idp.Mint(claims), "Accept": "application/json"})
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	logged := logs.FilterMessageSnippet("groups overage").All()
	if len(logged) != 1 || logged[0].ContextMap()["subject"] != "sub-big" {
		t.Fatalf("log: %v", logs.All())
	}
	// A token that has its groups (none of them admitted) is no overage.
	claims = devoidc.UserClaims(&mallory)
	claims["aud"], claims["groups"] = clientID, []string{"other"}
	if res, _ = getH(t, a.Client(), a.URL+"/api", map[string]string{"Authorization": "Bearer " + a.idp.Mint(claims), "Accept": "application/json"}); res.StatusCode != http.StatusForbidden {
		t.Fatalf("mallory: %d", res.StatusCode)
	}
	if n := logs.FilterMessageSnippet("groups overage").Len(); n != 1 {
		t.Fatalf("%d overage warnings, want 1", n)
	}
	// A bearer token is checked on every call: an API client with an
	// overage gets its first 5 warnings a minute logged, not one per call.
	claims = devoidc.UserClaims(&devoidc.User{Username: "big", Subject: "sub-big"})
	claims["aud"] = clientID
	claims["_claim_names"] = map[string]any{"groups": "src1"}
	claims["_claim_sources"] = map[string]any{"src1": map[string]any{"endpoint": "https://graph.example/v1.0/users/x/getMemberObjects"}}
	for range 10 {
		var body string
		if res, body = getH(t, a.Client(), a.URL+"/api", map[string]string{"Authorization": "Bearer " + a.idp.Mint(claims), "Accept": "application/json"}); res.StatusCode != http.StatusForbidden {
			t.Fatalf("overage burst: %d %s", res.StatusCode, body)
		}
	}
	if n := logs.FilterMessageSnippet("groups overage").Len(); n != 5 {
		t.Fatalf("%d overage warnings after 11 calls in a minute, want 5", n)
	}
}

// TestPreauthEmailVerifiedAsString: some providers (JumpCloud, Apple) send
// email_verified as the string "true" or "false". Such tokens must sign the
// user in, with the email only when it is "true"; anything but true or
// "true" leaves the email out.
func TestPreauthEmailVerifiedAsString(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	for _, tc := range []struct {
		verified any
		email    string
	}{{"true", "alice@example.com"}, {"false", ""}, {"yes", ""}, {1, ""}, {true, "alice@example.com"}, {nil, "alice@example.com"}} {
		claims := devoidc.UserClaims(&alice)
		claims["aud"] = clientID
		if tc.verified == nil {
			delete(claims, "email_verified")
		} else {
			claims["email_verified"] = tc.verified
		}
		res, body := getH(t, a.Client(), a.URL+"/api", map[string]string{"Authorization": "Bearer " + a.idp.Mint(claims), "Accept": "application/json"})
		if res.StatusCode != 200 {
			t.Errorf("email_verified %#v: %d %s", tc.verified, res.StatusCode, body)
			continue
		}
		if got := decodeEchoed(t, body).Headers.Get("X-Sallyport-Email"); got != tc.email {
			t.Errorf("email_verified %#v: email %q, want %q", tc.verified, got, tc.email)
		}
	}
}

// TestPreauthOtherProviderKeepsSession: a page of an app that signs in with
// another provider sends the browser to that provider but leaves the
// session with the first one alone until the new sign-in replaces it; a
// link from anywhere to such an app must not sign users out.
func TestPreauthOtherProviderKeepsSession(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, func(c *preauth.Config) {
		p := c.Providers[0]
		p.Name = "partner"
		c.Providers = append(c.Providers, p)
	}, func(c *gateway.Config) {
		r := c.Routes[0]
		r.App, r.PathPrefix, r.Preauth = "partner-app", "/partner", &preauth.Policy{Provider: "partner"}
		c.Routes = append(c.Routes, r)
	})
	c := a.browser()
	a.signIn(c, "/", alice)
	res, _ := getH(t, noRedirect(c), a.URL+"/partner/x", map[string]string{"Sec-Fetch-Site": "cross-site"})
	if res.StatusCode != http.StatusFound || !strings.Contains(res.Header.Get("Location"), "/authorize?") {
		t.Fatalf("partner app: %d %v", res.StatusCode, res.Header)
	}
	for _, sc := range res.Cookies() {
		if strings.Contains(sc.Name, "sallyport_session") {
			t.Errorf("the partner app's redirect set %s (max-age %d)", sc.Name, sc.MaxAge)
		}
	}
	res, body := getH(t, noRedirect(c), a.URL+"/who", nil)
	if res.StatusCode != 200 || decodeEchoed(t, body).Headers.Get("X-Sallyport-User") != "sub-alice" {
		t.Fatalf("the first app after visiting the partner app: %d %s", res.StatusCode, body)
	}
}

// TestPreauthSignOutEndsCopies: signing out ends the session, not just the
// browser's cookie. A copy of the cookie is refused at once by the gateway
// that signed out, and, because the refresh token was revoked at the
// provider, by a second gateway sharing the cookie key at its next refresh.
func TestPreauthSignOutEndsCopies(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	a := newAuthRig(t, preauth.Policy{}, func(c *preauth.Config) { c.Log = zap.New(core) })
	// A replica: same cookie key (both rigs use zeros), same provider, same clock.
	b := newAuthRig(t, preauth.Policy{}, func(c *preauth.Config) {
		c.Providers[0].Issuer = a.idpTS.URL
		c.Now = a.clock.Now
	})
	c := a.browser()
	if res, body := a.signIn(c, "/", alice); res.StatusCode != 200 {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	stolen := a.sessionCookie(c).Value
	try := func(rig *authRig) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", rig.URL+"/x", nil)
		req.Header.Set("Accept", "application/json")
		req.AddCookie(&http.Cookie{Name: "sallyport_session", Value: stolen})
		return do(t, noRedirect(rig.Client()), req)
	}
	for _, rig := range []*authRig{a, b} {
		if res, body := try(rig); res.StatusCode != 200 {
			t.Fatalf("the copy before sign-out: %d %s", res.StatusCode, body)
		}
	}

	res, body := getH(t, noRedirect(c), a.URL+"/.sallyport/auth/logout", nil)
	if res.StatusCode != 200 || !strings.Contains(body, "signed out") {
		t.Fatalf("sign-out: %d %s", res.StatusCode, body)
	}
	// The page offers the provider's own sign-out (RP-initiated logout).
	link := `<a id="provider-logout" href="` + a.idpTS.URL + `/logout?client_id=` + clientID + `">Sign out at corp too</a>`
	if !strings.Contains(body, link) {
		t.Errorf("signed-out page lacks %s:\n%s", link, body)
	}
	if res, body := getH(t, c, a.idpTS.URL+"/logout?client_id="+clientID, nil); res.StatusCode != 200 || !strings.Contains(body, "Signed out") {
		t.Errorf("the provider's sign-out: %d %s", res.StatusCode, body)
	}
	// Without a session there is no provider to offer.
	if _, body := getH(t, noRedirect(a.browser()), a.URL+"/.sallyport/auth/logout", nil); strings.Contains(body, "provider-logout") {
		t.Errorf("sign-out without a session offers a provider: %s", body)
	}
	if n := a.idp.Revoked(); n != 1 {
		t.Fatalf("the provider revoked %d refresh tokens, want 1", n)
	}
	if n := logs.FilterMessage("signed out").FilterField(zap.String("refresh_token", "revoked")).Len(); n != 1 {
		t.Errorf("%d sign-out lines with refresh_token=revoked", n)
	}
	// The gateway that signed out refuses the copy at once, and clears it.
	res, body = try(a)
	if res.StatusCode != 401 || !strings.Contains(body, "no longer valid") {
		t.Fatalf("the copy after sign-out: %d %s", res.StatusCode, body)
	}
	cleared := false
	for _, ck := range res.Cookies() {
		cleared = cleared || ck.Name == "sallyport_session" && ck.MaxAge < 0
	}
	if !cleared {
		t.Errorf("the refused copy was not cleared: %v", res.Header["Set-Cookie"])
	}
	// The replica knows nothing of the sign-out: the copy works until its
	// ID token expires, then its refresh is refused.
	if res, body := try(b); res.StatusCode != 200 {
		t.Fatalf("the copy at the replica before its refresh: %d %s", res.StatusCode, body)
	}
	a.clock.Add(6 * time.Minute)
	if res, body := try(b); res.StatusCode != 401 {
		t.Fatalf("the copy at the replica after its refresh was due: %d %s", res.StatusCode, body)
	}
	// Signing in again works.
	if res, body := a.signIn(a.browser(), "/", alice); res.StatusCode != 200 {
		t.Fatalf("sign-in after sign-out: %d %s", res.StatusCode, body)
	}
}

// TestPreauthSignOutProviderDown: a provider that cannot revoke does not
// keep the user from signing out; the log says what a copy can still do.
func TestPreauthSignOutProviderDown(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	a := newAuthRig(t, preauth.Policy{}, func(c *preauth.Config) { c.Log = zap.New(core) })
	c := a.browser()
	a.signIn(c, "/", alice)
	stolen := a.sessionCookie(c).Value
	a.idp.SetDown(true)
	res, body := getH(t, noRedirect(c), a.URL+"/.sallyport/auth/logout", nil)
	if res.StatusCode != 200 || !strings.Contains(body, "signed out") || a.sessionCookie(c) != nil {
		t.Fatalf("sign-out with the provider down: %d %s", res.StatusCode, body)
	}
	warn := logs.FilterMessageSnippet("could not be revoked").All()
	if len(warn) != 1 || !strings.Contains(warn[0].ContextMap()["error"].(string), "503") {
		t.Fatalf("warnings: %+v", warn)
	}
	req, _ := http.NewRequest("GET", a.URL+"/x", nil)
	req.Header.Set("Accept", "application/json")
	req.AddCookie(&http.Cookie{Name: "sallyport_session", Value: stolen})
	if res, body := do(t, noRedirect(a.Client()), req); res.StatusCode != 401 {
		t.Fatalf("the copy after sign-out: %d %s", res.StatusCode, body)
	}
}

// TestPreauthSignOutReachesReplicas: gateways on one store share their
// users' sign-outs. A copy of a signed-out session's cookie is refused by
// another gateway within its store sweep, long before the session's next
// refresh, and by a gateway started after the sign-out from its start.
func TestPreauthSignOutReachesReplicas(t *testing.T) {
	shared, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Close() })
	onStore := func(sweep time.Duration) func(*gateway.Config) {
		return func(c *gateway.Config) { c.Store, c.StoreSweep = shared, sweep }
	}
	a := newAuthRig(t, preauth.Policy{}, nil, onStore(10*time.Millisecond))
	replica := func(sweep time.Duration) *authRig {
		return newAuthRig(t, preauth.Policy{}, func(c *preauth.Config) {
			c.Providers[0].Issuer = a.idpTS.URL
			c.Now = a.clock.Now
		}, onStore(sweep))
	}
	b := replica(10 * time.Millisecond)
	c := a.browser()
	if res, body := a.signIn(c, "/", alice); res.StatusCode != 200 {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	stolen := a.sessionCookie(c).Value
	try := func(rig *authRig) int {
		t.Helper()
		req, _ := http.NewRequest("GET", rig.URL+"/x", nil)
		req.Header.Set("Accept", "application/json")
		req.AddCookie(&http.Cookie{Name: "sallyport_session", Value: stolen})
		res, _ := do(t, noRedirect(rig.Client()), req)
		return res.StatusCode
	}
	if code := try(b); code != 200 {
		t.Fatalf("the copy at the replica before the sign-out: %d", code)
	}
	if res, body := getH(t, noRedirect(c), a.URL+"/.sallyport/auth/logout", nil); res.StatusCode != 200 {
		t.Fatalf("sign-out: %d %s", res.StatusCode, body)
	}
	// No clock moves: the session's refresh is not due; only the shared
	// sign-out can refuse it.
	waitFor(t, "the replica to refuse the copy", func() bool { return try(b) == 401 })
	// One that starts after it knows at once (its sweep would come only
	// in an hour).
	if code := try(replica(time.Hour)); code != 401 {
		t.Fatalf("the copy at a gateway started after the sign-out: %d", code)
	}
}

// TestPreauthManyPendingSignIns: each page load without a session starts
// a sign-in with a pre-login cookie, and the browser sends them all to the
// callback. Twenty-five reloads of a long address (a dashboard link) made
// the callback's head larger than the gateway accepts (431), so no sign-in
// completed until they expired; the browser keeps a few now.
func TestPreauthManyPendingSignIns(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	path := "/d/board?vars=" + strings.Repeat("v", 2400)
	for i := range 25 {
		a.clock.Add(time.Second)
		if res, body := getH(t, noRedirect(c), a.URL+path, nil); res.StatusCode != http.StatusFound {
			t.Fatalf("page load %d: %d %s", i, res.StatusCode, body)
		}
	}
	res, body := a.signIn(c, path, alice)
	if res.StatusCode != 200 || res.Request.URL.RequestURI() != path {
		t.Fatalf("sign-in after 25 page loads: %d at %.40s…: %.200s", res.StatusCode, res.Request.URL, body)
	}
}

// TestPreauthCallbackBrowserLeaves: a browser that leaves while the gateway
// exchanges its sign-in code with the provider (a closed tab) ends the
// exchange, and says nothing about the provider: the access log has
// client-closed, no "pre-authentication failed" warning, no
// auth-provider-unreachable in preauth_total. It used to be all three.
func TestPreauthCallbackBrowserLeaves(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil, func(c *gateway.Config) { c.AdminAddr = "127.0.0.1:0" })
	callback, nr := a.stopAtCallback(a.browser())
	arrived, release := a.holdIDPPath("/token")
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, callback, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := nr.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	<-arrived
	cancel() // the browser goes away
	<-done
	var access []observer.LoggedEntry
	deadline := time.Now().Add(10 * time.Second)
	for {
		access = a.logs.FilterMessage("access").Filter(func(e observer.LoggedEntry) bool {
			return e.ContextMap()["path"] == preauth.CallbackPath
		}).All()
		if len(access) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	release()
	if len(access) != 1 {
		t.Fatalf("%d access lines for the callback, want 1", len(access))
	}
	if f := access[0].ContextMap(); f["error"] != gateway.CodeClientClosed {
		t.Errorf("access line of the abandoned callback: status %v, error %v; want error %s", f["status"], f["error"], gateway.CodeClientClosed)
	}
	if w := a.logs.FilterMessage("pre-authentication failed").All(); len(w) != 0 {
		t.Errorf("a browser that left was logged as a failed pre-authentication: %v", w[0].ContextMap())
	}
	// The sign-in's start is counted; the abandoned callback is not.
	if s := scrape(t, a.AdminURL()+"/metrics").with("sallyport_gateway_preauth_total"); len(s) != 1 ||
		s[0] != `sallyport_gateway_preauth_total{outcome="sign_in_started"}` {
		t.Errorf("preauth_total: %v; want only sign_in_started (the browser that left is not an outcome)", s)
	}
}

// TestPreauthCallbackHalfClosedGetsNoAnswer: a client that half-closes its
// connection after the callback request (net/http cancels the request
// then) gets no response at all, as exchangeFailed gives one that left: it
// got an empty 200 OK, which it still reads (a reviewer's probe of
// 9c104cd).
func TestPreauthCallbackHalfClosedGetsNoAnswer(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	callback, nr := a.stopAtCallback(a.browser())
	u, err := url.Parse(callback)
	if err != nil {
		t.Fatal(err)
	}
	var cookies []string
	for _, c := range nr.Jar.Cookies(u) {
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	arrived, _ := a.holdIDPPath("/token")
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nCookie: %s\r\n\r\n", u.RequestURI(), u.Host, strings.Join(cookies, "; "))
	<-arrived // the code exchange is under way
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if res, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		t.Fatalf("a half-closed client got %s (%s=%q, %d bytes) for the sign-in callback; want no response",
			res.Status, gateway.ErrorHeader, res.Header.Get(gateway.ErrorHeader), res.ContentLength)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("no end of the connection within 10 s")
	}
}
