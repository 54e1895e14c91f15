package preauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/devoidc"
)

// mallory is the attacker: a user of the same provider.
var mallory = devoidc.User{Username: "mallory", Password: "mallory-pw", Subject: "sub-mallory", Email: "mallory@example.com"}

// domainRig is an idpRig whose gateway answers over HTTPS for every host
// under example.com, with cookie_domain apps.example.com: browsers reach
// app1.apps.example.com, app2… and evil.example.com at the same server.
type domainRig struct {
	*idpRig
	port string
	tr   *http.Transport
}

func newDomainRig(t *testing.T, cookieDomain string) *domainRig {
	t.Helper()
	rg := newIDPRigWith(t, func(c *devoidc.Config) { c.Users = append(c.Users, mallory) })
	rg.svc.cfg.CookieDomain = cookieDomain
	rg.gwTS.Close()
	rg.gwTS = httptest.NewTLSServer(http.HandlerFunc(rg.serve))
	t.Cleanup(rg.gwTS.Close)
	addr := rg.gwTS.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	tr := rg.gwTS.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com" // the test certificate's name
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		if h, _, _ := net.SplitHostPort(a); strings.HasSuffix(h, "example.com") {
			a = addr
		}
		return d.DialContext(ctx, network, a)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &domainRig{idpRig: rg, port: port, tr: tr}
}

// at is the URL of path on host (app1 → app1.apps.example.com).
func (dr *domainRig) at(host, path string) string {
	if !strings.Contains(host, ".") {
		host += ".apps.example.com"
	}
	return "https://" + host + ":" + dr.port + path
}

// browser is a client with a cookie jar that follows redirects.
func (dr *domainRig) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Transport: dr.tr, Timeout: 30 * time.Second}
}

// signInAs opens path on host in the browser c and signs in as u at the
// provider's page; it returns the answer the browser ends at.
func (dr *domainRig) signInAs(c *http.Client, u devoidc.User, host, path string) (*http.Response, string) {
	dr.t.Helper()
	res, body := dr.get(c, dr.at(host, path), nil)
	if !strings.Contains(body, "Development OIDC provider") {
		dr.t.Fatalf("GET %s on %s: want the provider's sign-in page, got %d at %s: %s", path, host, res.StatusCode, res.Request.URL, body)
	}
	dr.user = u
	defer func() { dr.user = rigUser }()
	return dr.finish(c, res.Request.URL.String())
}

// sessionValue is the session cookie that c holds for the app hosts.
func (dr *domainRig) sessionValue(c *http.Client) string {
	dr.t.Helper()
	u, _ := url.Parse(dr.at("app1", "/"))
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "__Secure-"+sessionCookie {
			return ck.Value
		}
	}
	dr.t.Fatal("the browser holds no session cookie")
	return ""
}

// plant sets the session value in c as evil.example.com can: Domain=example.com
// with Path=path, and checks that c then sends it first to path on app1.
func (dr *domainRig) plant(c *http.Client, value, path string) {
	dr.t.Helper()
	evil, _ := url.Parse(dr.at("evil.example.com", "/"))
	c.Jar.SetCookies(evil, []*http.Cookie{{Name: "__Secure-" + sessionCookie, Value: value, Domain: "example.com",
		Path: path, Secure: true, HttpOnly: true}})
	u, _ := url.Parse(dr.at("app1", path+"/page"))
	var sent []string
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "__Secure-"+sessionCookie {
			sent = append(sent, ck.Value)
		}
	}
	if len(sent) == 0 || sent[0] != value {
		dr.t.Fatalf("the planted cookie is not sent first: %d session cookies", len(sent))
	}
}

// setCookie sets name=value in c for Domain=domain, Path=path (with domain
// example.com, as evil.example.com can).
func (dr *domainRig) setCookie(c *http.Client, domain, name, value, path string) {
	u, _ := url.Parse(dr.at("x."+domain, "/"))
	c.Jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Domain: domain, Path: path, Secure: true, HttpOnly: true}})
}

// TestPlantedSessionUnderCookieDomain: the attacker signs in himself and
// plants his session cookie in the victim's browser from another host
// under the registrable domain (Domain=example.com), with a longer path so
// that the browser sends it first. The victim, signed in or not, must
// never use the apps as the attacker, and after signing in (the planted
// cookie still there) must reach the app as herself, without a loop. The
// old code took the first cookie: "ok sub-mallory" for all three.
func TestPlantedSessionUnderCookieDomain(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	attacker := dr.browser()
	if res, body := dr.signInAs(attacker, mallory, "app1", "/"); body != "ok "+mallory.Subject {
		t.Fatalf("the attacker's sign-in: %d %s", res.StatusCode, body)
	}
	planted := dr.sessionValue(attacker)

	// A signed-in victim.
	victim := dr.browser()
	if res, body := dr.signInAs(victim, rigUser, "app1", "/"); body != "ok "+rigUser.Subject {
		t.Fatalf("the victim's sign-in: %d %s", res.StatusCode, body)
	}
	dr.plant(victim, planted, "/x")
	if res, body := dr.get(noRedirects(victim), dr.at("app1", "/x/page"), nil); body != "ok "+rigUser.Subject {
		t.Errorf("signed-in victim with a planted session: %d %s, want ok %s", res.StatusCode, body, rigUser.Subject)
	}

	// A victim without a session of her own: signed out, not the attacker.
	victim = dr.browser()
	dr.plant(victim, planted, "/x")
	res, body := dr.get(noRedirects(victim), dr.at("app1", "/x/page"), map[string]string{"Accept": "application/json"})
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Sign-in required") {
		t.Errorf("API call with only a planted session: %d %s, want 401 Sign-in required", res.StatusCode, body)
	}
	res, body = dr.get(noRedirects(victim), dr.at("app1", "/x/page"), nil)
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(res.Header.Get("Location"), dr.idpTS.URL) {
		t.Errorf("page load with only a planted session: %d %q %s, want a redirect to sign in", res.StatusCode, res.Header.Get("Location"), body)
	}
	// She signs in; the planted cookie stays and still comes first.
	res, body = dr.signInAs(victim, rigUser, "app1", "/x/page")
	if res.StatusCode != http.StatusOK || body != "ok "+rigUser.Subject || res.Request.URL.Path != "/x/page" {
		t.Fatalf("sign-in beside a planted session: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
	dr.plant(victim, planted, "/x")
	if res, body := dr.get(noRedirects(victim), dr.at("app1", "/x/page"), nil); body != "ok "+rigUser.Subject {
		t.Errorf("after the sign-in: %d %q %s", res.StatusCode, res.Header.Get("Location"), body)
	}

	// The attacker's session from app3, whose home cannot vouch for it in
	// the victim's browser: the victim asks app3, then signs in on app1.
	attacker = dr.browser()
	dr.signInAs(attacker, mallory, "app3", "/")
	victim = dr.browser()
	dr.plant(victim, dr.sessionValue(attacker), "/x")
	res, body = dr.signInAs(victim, rigUser, "app1", "/x/page")
	if res.StatusCode != http.StatusOK || body != "ok "+rigUser.Subject || res.Request.URL.Path != "/x/page" {
		t.Errorf("sign-in beside a planted session from app3: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
}

// TestBindSecondHost: the first visit of another app host under
// cookie_domain goes to the session's home and back with a ticket, binds
// the host, and reaches the page as the user; the next request on that
// host needs no redirect. With the attacker's session planted first (his
// home is app3, where the victim has nothing bound), the host asks the
// victim's home next. The old code answered the first request at once.
func TestBindSecondHost(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	c := dr.browser()
	dr.signInAs(c, rigUser, "app1", "/")

	// An API call on app2 before any page load there: as if signed out.
	res, body := dr.get(c, dr.at("app2", "/api"), map[string]string{"Accept": "application/json"})
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Sign-in required") {
		t.Errorf("API call on app2 before binding: %d %s, want 401 Sign-in required", res.StatusCode, body)
	}

	var hops []string
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		hops = append(hops, req.URL.Host+req.URL.Path)
		return nil
	}
	res, body = dr.get(c, dr.at("app2", "/page?x=1"), nil)
	want := []string{"app1.apps.example.com:" + dr.port + bindPath, "app2.apps.example.com:" + dr.port + boundPath,
		"app2.apps.example.com:" + dr.port + "/page"}
	if body != "ok "+rigUser.Subject || res.Request.URL.RequestURI() != "/page?x=1" || strings.Join(hops, " ") != strings.Join(want, " ") {
		t.Fatalf("first visit of app2: %d at %s via %q: %s; want ok %s via %q", res.StatusCode, res.Request.URL, hops, body, rigUser.Subject, want)
	}
	if res, body := dr.get(noRedirects(c), dr.at("app2", "/other"), nil); body != "ok "+rigUser.Subject {
		t.Errorf("second visit of app2: %d %q %s", res.StatusCode, res.Header.Get("Location"), body)
	}

	// A renewal (the ID token has expired) keeps the session bound on
	// both hosts.
	dr.clk.Advance(6 * time.Minute)
	for _, host := range []string{"app2", "app1", "app2"} {
		if res, body := dr.get(noRedirects(c), dr.at(host, "/later"), nil); body != "ok "+rigUser.Subject {
			t.Errorf("%s after the renewal: %d %q %s", host, res.StatusCode, res.Header.Get("Location"), body)
		}
	}
	if n := dr.hits["/token"].Load(); n != 2 {
		t.Errorf("%d token requests, want 2 (the sign-in and one renewal)", n)
	}

	// The attacker's session from app3 planted at a longer path (sent
	// first, not read) and at Path=/ after the user's cookie (sent after
	// it, read first).
	attacker := dr.browser()
	dr.signInAs(attacker, mallory, "app3", "/")
	dr.plant(c, dr.sessionValue(attacker), "/x")
	dr.setCookie(c, "example.com", "__Secure-"+sessionCookie, dr.sessionValue(attacker), "/")
	hops = nil
	res, body = dr.get(c, dr.at("app4", "/x/page"), nil)
	want = []string{"app3.apps.example.com:" + dr.port + bindPath, "app4.apps.example.com:" + dr.port + boundPath,
		"app1.apps.example.com:" + dr.port + bindPath, "app4.apps.example.com:" + dr.port + boundPath,
		"app4.apps.example.com:" + dr.port + "/x/page"}
	if body != "ok "+rigUser.Subject || strings.Join(hops, " ") != strings.Join(want, " ") {
		t.Errorf("first visit of app4 with a planted session: %d at %s via %q: %s; want ok %s via %q", res.StatusCode, res.Request.URL, hops, body, rigUser.Subject, want)
	}
}

// bindingTicket starts a binding of host in the browser c (signed in
// elsewhere) and returns the address of the ticket its home answers with.
func (dr *domainRig) bindingTicket(c *http.Client, host string) string {
	dr.t.Helper()
	res, _ := dr.get(noRedirects(c), dr.at(host, "/page"), nil)
	if loc := res.Header.Get("Location"); res.StatusCode != http.StatusFound || !strings.Contains(loc, bindPath+"?q=") {
		dr.t.Fatalf("page load on %s: %d %q, want a redirect to the home", host, res.StatusCode, loc)
	}
	res, _ = dr.get(noRedirects(c), res.Header.Get("Location"), nil)
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusFound || !strings.Contains(loc, boundPath+"?t=") {
		dr.t.Fatalf("the home answered %d %q, want a redirect with a ticket", res.StatusCode, loc)
	}
	return loc
}

// TestPlantedCopiesAtLongerPaths: another host puts many cookies of the
// session's names before the gateway's, each at a longer path: copies of
// the attacker's session, or junk that fills whole chunks of every name.
// The victim still reaches a deep page as herself, on her home and on
// another host, and keeps her session cookie. The old code read the first
// 8 cookies of a name and the first 32 joins, in the order sent, so never
// hers: it sent her to sign in again, every time ("200 at
// 127.0.0.1:…/authorize": the provider's page), and for the junk cleared
// her session cookie as invalid.
func TestPlantedCopiesAtLongerPaths(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	attacker := dr.browser()
	dr.signInAs(attacker, mallory, "app3", "/")
	planted := dr.sessionValue(attacker)
	full := "v1." + strings.Repeat("A", maxCookieValue-3)
	for _, junk := range []bool{false, true} {
		victim := dr.browser()
		dr.signInAs(victim, rigUser, "app1", "/")
		own := dr.sessionValue(victim)
		if !junk {
			for _, p := range []string{"/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/a/b/c/", "/a/b/c/d", "/a/b/c/d/"} {
				dr.setCookie(victim, "example.com", "__Secure-"+sessionCookie, planted, p)
			}
		} else {
			// 12 cookies of 3800 bytes: within the gateway's 64 KiB head.
			for _, p := range []string{"/a", "/a/", "/a/b"} {
				for i := range maxChunks {
					dr.setCookie(victim, "example.com", chunkName("__Secure-"+sessionCookie, i), full, p)
				}
			}
		}
		for _, host := range []string{"app1", "app2"} {
			res, body := dr.get(victim, dr.at(host, "/a/b/c/d/e"), nil)
			if body != "ok "+rigUser.Subject || res.Request.URL.Path != "/a/b/c/d/e" {
				t.Errorf("junk %v: %s/a/b/c/d/e: %d at %s%s: %.60q; want ok %s", junk, host, res.StatusCode, res.Request.URL.Host,
					res.Request.URL.Path, body, rigUser.Subject)
			}
		}
		if v := dr.sessionValue(victim); v != own {
			t.Errorf("junk %v: the victim's session cookie changed", junk)
		}
	}
}

// TestSignOutOnUnboundHost: a sign-out on a host that the session is not
// bound to yet (a sign-out link on another app) ends the session, as
// everywhere else: a copy of the cookie no longer counts on its home. The
// old code ended nothing there: no "signed out", and the copy answered
// "ok sub-alice".
func TestSignOutOnUnboundHost(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	c := dr.browser()
	dr.signInAs(c, rigUser, "app1", "/")
	saved := dr.sessionValue(c)
	if res, body := dr.get(noRedirects(c), dr.at("app2", logoutPath), nil); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-out on app2: %d %s", res.StatusCode, body)
	}
	if n := dr.logs.FilterMessage("signed out").Len(); n != 1 {
		t.Errorf("%d sessions ended, want 1", n)
	}
	dr.setCookie(c, "apps.example.com", "__Secure-"+sessionCookie, saved, "/")
	if res, body := dr.get(noRedirects(c), dr.at("app1", "/"), nil); body == "ok "+rigUser.Subject {
		t.Errorf("a copy of the cookie on app1 after the sign-out: %d %s, want a sign-in", res.StatusCode, body)
	}
}

// TestBindTicketRefused: a ticket from another browser, one that has
// expired, one for another host and one tampered with bind nothing and
// get a page that says so. The old code had no such endpoint: the app
// answered ("ok sub-alice").
func TestBindTicketRefused(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	victim := dr.browser()
	dr.signInAs(victim, rigUser, "app1", "/")
	attacker := dr.browser()
	dr.signInAs(attacker, mallory, "app1", "/")
	dr.plant(victim, dr.sessionValue(attacker), "/x")

	refused := func(what, ticket, says string) {
		t.Helper()
		res, body := dr.get(noRedirects(victim), ticket, nil)
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Error") != CodeStateMismatch || !strings.Contains(body, says) {
			t.Errorf("%s: %d %q %s; want 400 %s saying %q", what, res.StatusCode, res.Header.Get("Location"), body, CodeStateMismatch, says)
		}
		for _, ck := range res.Cookies() {
			if ck.Name == boundCookie && ck.MaxAge > 0 {
				t.Errorf("%s: a bound cookie was set", what)
			}
		}
		u, _ := url.Parse(ticket)
		if res, body := dr.get(noRedirects(victim), "https://"+u.Host+"/x/page", nil); res.StatusCode != http.StatusFound || strings.HasPrefix(body, "ok") {
			t.Errorf("%s: then a page on %s: %d %s, want a redirect (nothing bound)", what, u.Host, res.StatusCode, body)
		}
	}

	// The attacker's own ticket for app2, sent to the victim.
	refused("another browser's ticket", dr.bindingTicket(attacker, "app2"), "this browser did not ask for it")
	if n := dr.logs.FilterMessageSnippet("session binding refused").Len(); n != 1 {
		t.Errorf("%d warnings for another browser's ticket, want 1", n)
	}

	// The victim's own ticket, too late.
	ticket := dr.bindingTicket(victim, "app2")
	dr.clk.Advance(bindTicketLife + refreshClockSkew)
	refused("an expired ticket", ticket, "it took too long")

	// The victim's own ticket for app2, at app3.
	ticket = dr.bindingTicket(victim, "app2")
	dr.bindingTicket(victim, "app3") // app3 has a binding of its own pending
	refused("a ticket for another host", strings.Replace(ticket, "app2.", "app3.", 1), "made for another address")

	// Tampered with.
	ticket = dr.bindingTicket(victim, "app2")
	i := strings.Index(ticket, "?t=") + 20
	flip := "A"
	if ticket[i] == 'A' {
		flip = "B"
	}
	refused("a tampered ticket", ticket[:i]+flip+ticket[i+1:], "the link is damaged")

	// The untouched ticket still binds.
	if res, body := dr.get(victim, ticket, nil); body != "ok "+rigUser.Subject {
		t.Errorf("the victim's own ticket: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
}

// TestBindAcrossReplicas: the home is served by a replica whose clock is
// behind by almost refreshClockSkew: its ticket, sealed with the shared
// key, opens on the other replica and has not expired there.
func TestBindAcrossReplicas(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	cfg := dr.svc.cfg
	cfg.Now = func() time.Time { return dr.clk.Now().Add(-refreshClockSkew + time.Second) }
	replica, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dr.gwTS.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Host, "app1.") {
			dr.serve(w, r)
			return
		}
		if handled, err := replica.ServeEndpoint(w, r, r.URL.Path); handled {
			rigAnswer(w, err)
			return
		}
		if id, err := replica.Authorize(w, r, &dr.pol, r.URL.Path); err != nil {
			rigAnswer(w, err)
		} else {
			_, _ = io.WriteString(w, "ok "+id.Subject)
		}
	})
	c := dr.browser()
	dr.signInAs(c, rigUser, "app1", "/")
	via := ""
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		via += " " + req.URL.Host + req.URL.Path
		return nil
	}
	res, body := dr.get(c, dr.at("app2", "/page"), nil)
	if body != "ok "+rigUser.Subject || res.Request.URL.Path != "/page" || !strings.Contains(via, "app1.apps.example.com:"+dr.port+bindPath) {
		t.Errorf("app2 bound through the replica: %d at %s via%s: %s", res.StatusCode, res.Request.URL, via, body)
	}
}

// TestSessionWithoutHome: a session made by the previous version (no
// home) does not count under cookie_domain and TLS: the user signs in
// again (the old code answered "ok sub-alice"). Without cookie_domain it
// counts as before.
func TestSessionWithoutHome(t *testing.T) {
	for _, domain := range []string{"apps.example.com", ""} {
		dr := newDomainRig(t, domain)
		now := dr.clk.Now()
		value, err := dr.svc.sealer.seal("session", &session{Provider: "corp", Subject: rigUser.Subject,
			Created: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: randomToken(16)})
		if err != nil {
			t.Fatal(err)
		}
		name := "__Host-" + sessionCookie
		if domain != "" {
			name = "__Secure-" + sessionCookie
		}
		req, _ := http.NewRequest(http.MethodGet, dr.at("app1", "/page"), nil)
		req.AddCookie(&http.Cookie{Name: name, Value: value})
		res, err := dr.tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		accepted := res.StatusCode == http.StatusOK
		if accepted != (domain == "") {
			t.Errorf("cookie_domain %q: a session without home answered %d %q", domain, res.StatusCode, res.Header.Get("Location"))
		}
	}
}

// TestSignOutClearsBound: signing out on a host clears its bound cookie.
func TestSignOutClearsBound(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	c := dr.browser()
	dr.signInAs(c, rigUser, "app1", "/")
	res, _ := dr.get(noRedirects(c), dr.at("app1", logoutPath), nil)
	cleared := false
	for _, ck := range res.Cookies() {
		cleared = cleared || ck.Name == boundCookie && ck.MaxAge < 0
	}
	if res.StatusCode != http.StatusOK || !cleared {
		t.Errorf("sign-out: %d, bound cookie cleared: %v", res.StatusCode, cleared)
	}
}

// TestChunkedSessionWithPlantedDuplicates: a session split over chunk
// cookies is found among planted cookies of the same names, whole or
// chunks, sent before its own: the one the host has bound wins.
func TestChunkedSessionWithPlantedDuplicates(t *testing.T) {
	dr := newDomainRig(t, "apps.example.com")
	svc := dr.svc
	now := dr.clk.Now()
	mk := func(sub string, groups int) (*session, string) {
		ss := &session{Provider: "corp", Subject: sub, Created: now.Unix(), Expires: now.Add(time.Hour).Unix(),
			ID: randomToken(16), Home: "app1.apps.example.com"}
		for i := range groups {
			ss.Groups = append(ss.Groups, "group-with-a-long-name-"+strings.Repeat("x", 20)+string(rune('a'+i%26)))
		}
		v, err := svc.sealer.seal("session", ss)
		if err != nil {
			t.Fatal(err)
		}
		return ss, v
	}
	split := func(v string) []string {
		var parts []string
		for len(v) > maxCookieValue {
			parts = append(parts, v[:maxCookieValue])
			v = v[maxCookieValue:]
		}
		return append(parts, v)
	}
	real, realValue := mk(rigUser.Subject, 150)
	_, small := mk(mallory.Subject, 0)
	_, bigValue := mk(mallory.Subject, 150)
	realParts, bigParts := split(realValue), split(bigValue)
	if len(realParts) < 3 || len(bigParts) < 3 {
		t.Fatalf("sessions of %d and %d chunks, want 3 or more", len(realParts), len(bigParts))
	}
	base := "__Secure-" + sessionCookie
	req, _ := http.NewRequest(http.MethodGet, dr.at("app1", "/"), nil)
	req.TLS = new(tlsState)
	req.Host = "app1.apps.example.com"
	bound, err := svc.sealer.seal("bound", boundState{ID: real.ID, Host: req.Host})
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: boundCookie, Value: bound})
	// The planted ones first: a whole small session, then another big
	// one's chunks, then the real ones.
	req.AddCookie(&http.Cookie{Name: base, Value: small})
	for i, p := range bigParts {
		req.AddCookie(&http.Cookie{Name: chunkName(base, i), Value: p})
	}
	for i, p := range realParts {
		req.AddCookie(&http.Cookie{Name: chunkName(base, i), Value: p})
	}
	ss, why := svc.openSession(req)
	if ss == nil || ss.ID != real.ID {
		t.Fatalf("openSession: %v %q, want the bound session", ss, why)
	}
	// Without the bound cookie: none of them counts.
	req.Header.Set("Cookie", strings.Replace(req.Header.Get("Cookie"), boundCookie+"="+bound+"; ", "", 1))
	if ss, why := svc.openSession(req); ss != nil || why != whyUnbound {
		t.Errorf("without the bound cookie: %v %q, want nil %q", ss, why, whyUnbound)
	}
}

// TestInCookieDomainNames: a binding redirects only to host names under
// cookie_domain, with a numeric port if any. Hosts that end in
// ".apps.example.com" but are no host name passed (old code: a binding
// sent the browser to "https://x y.apps.example.com/.sallyport/auth/bind").
func TestInCookieDomainNames(t *testing.T) {
	s := &Service{cfg: Config{CookieDomain: "apps.example.com"}}
	for host, want := range map[string]bool{
		"app1.apps.example.com": true, "APP1.Apps.Example.com:8443": true, "apps.example.com.": true, "a_b.apps.example.com": true,
		"x y.apps.example.com": false, "evil.com%2f.apps.example.com": false, "evil.com!.apps.example.com": false,
		"app1.apps.example.com:x": false, "app1.apps.example.com:": false, "a:1:2.apps.example.com": false,
		"xapps.example.com": false, "example.com": false, "": false,
	} {
		if got := s.inCookieDomain(host); got != want {
			t.Errorf("inCookieDomain(%q) = %v, want %v", host, got, want)
		}
	}
}

// FuzzBindEndpoints: whatever query and cookies a client sends to the
// binding's endpoints and to a page, raw or holding tickets, requests,
// sessions, binding and bound cookies sealed with the gateway's key from
// fuzzed fields (the code past the seal: an attacker cannot seal, but the
// gateway seals what browsers send it, as hosts and return addresses),
// nothing panics, no redirect or link leads outside cookie_domain's hosts,
// and a host is bound only at boundPath, to the session of a ticket whose
// binding cookie the browser sends, which the browser sends as well.
func FuzzBindEndpoints(f *testing.F) {
	// The provider is never reached: a sign-in fails at its discovery.
	offline := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("offline")
	})}
	now := time.Unix(1_800_000_000, 0)
	s, err := New(Config{CookieKey: make([]byte, KeySize), Keys: fuzzKeys(f), CookieDomain: "apps.example.com",
		HTTPClient: offline, Now: func() time.Time { return now },
		Providers: []ProviderConfig{{Name: "corp", Issuer: "https://idp.example", ClientID: "c"}}})
	if err != nil {
		f.Fatal(err)
	}
	seal := func(t testing.TB, purpose string, v any) string {
		t.Helper()
		sealed, err := s.sealer.seal(purpose, v)
		if err != nil {
			t.Fatal(err)
		}
		return sealed
	}
	sealed := seal(f, "session", &session{Provider: "corp", Subject: "alice", Expires: 1 << 40,
		ID: "i", Home: "app1.apps.example.com"})
	req := seal(f, "bind request", bindTicket{Nonce: "n", Host: "app2.apps.example.com", Return: "/",
		Provider: "corp", Homes: []string{"app1.apps.example.com"}, Expires: 1 << 40})
	base := "__Secure-" + sessionCookie
	// kind 0: query and cookies as they are. Else a ticket and a request
	// sealed from the fields (provider "gone" with 64) come first in the
	// query, and the cookies get a session (ID sessID, home sessHome;
	// with 1), the ticket's binding cookie ending binding seconds from now
	// (2) and a bound cookie naming sessID (8), after the fuzzed ones (4:
	// before them); the request's host is picked by kind>>4&3.
	// Raw: the sealed fields are not used (kind 0).
	f.Add("q="+url.QueryEscape(req), base+"="+sealed, 0, "", "", "", "", "", 0, int64(0), "", "", int64(0))
	f.Add("t="+url.QueryEscape(req), base+"="+sealed+"; "+bindingCookiePfx+stateID("n")+"=99999999999", 0, "", "", "", "", "", 0, int64(0), "", "", int64(0))
	f.Add("t=v1.AAAA", base+"="+sealed[:len(sealed)/2]+"; "+base+"_1="+sealed[len(sealed)/2:], 0, "", "", "", "", "", 0, int64(0), "", "", int64(0))
	f.Add("", base+"=x; "+base+"="+sealed+"; "+boundCookie+"=v1.", 0, "", "", "", "", "", 0, int64(0), "", "", int64(0))
	// Sealed: a ticket that binds (session, binding cookie), one that asks
	// the next home, one for another host, a request to vouch, and odd
	// hosts and return addresses.
	f.Add("", "", 1|2|4, "s1", "n1", "app2.apps.example.com", "/page?x=1", "app1.apps.example.com", 0, int64(10), "s1", "app1.apps.example.com", int64(60))
	f.Add("", "", 1|2|4, "", "n1", "app2.apps.example.com", "/", "app1.apps.example.com,app3.apps.example.com", 0, int64(10), "s1", "app3.apps.example.com", int64(60))
	f.Add("", "", 1|2, "s1", "n1", "app3.apps.example.com", "//evil.com", "", 0, int64(10), "s1", "app1.apps.example.com", int64(60))
	f.Add("", "", 1|8|4, "s1", "n1", "evil.com:@app2.apps.example.com", "/\\evil.com", "app1.apps.example.com", 0, int64(10), "s1", "app2.apps.example.com", int64(60))
	f.Add("", "", 1|2|16, "s1", "n1", "app2.apps.example.com.", "https://evil.com/", "x.apps.example.com:@evil.com", -1, int64(-100), "s2", "evil.com", int64(-1))
	// A home that is no host name: the binding redirected to
	// "https://x y.apps.example.com/…" (Go's HTTP/1 and HTTP/2 servers
	// refuse such a Host header; inCookieDomain no longer relies on it).
	f.Add("", "", 1, "", "", "", "", "", 0, int64(0), "s1", "x y.apps.example.com", int64(0))
	f.Add("", "", 1|2, "", "n1", "app2.apps.example.com", "/", "app1.apps.example.com,a:b.apps.example.com", 0, int64(10), "s1", "app2.apps.example.com", int64(60))
	f.Fuzz(func(t *testing.T, query, cookies string, kind int, id, nonce, host, ret, homes string, home int,
		expires int64, sessID, sessHome string, binding int64) {
		hosts := []string{"app2.apps.example.com", "APP2.apps.example.com:443", "evil.example.com", "app2.apps.example.com."}
		reqHost := hosts[(kind>>4)&3]
		if kind != 0 {
			tk := bindTicket{ID: id, Nonce: nonce, Host: host, Return: ret, Provider: "corp", Home: home,
				Expires: now.Unix() + expires}
			if homes != "" {
				tk.Homes = strings.Split(homes, ",")
			}
			if kind&64 != 0 {
				tk.Provider = "gone"
			}
			q := url.Values{"t": {seal(t, "bind ticket", tk)}, "q": {seal(t, "bind request", tk)}}.Encode()
			query = q + "&" + query
			var add []string
			if kind&1 != 0 {
				add = append(add, base+"="+seal(t, "session", &session{Provider: "corp", Subject: "alice",
					Expires: now.Unix() + 3600, ID: sessID, Home: sessHome}))
			}
			if kind&2 != 0 {
				add = append(add, bindingCookiePfx+stateID(nonce)+"="+strconv.FormatInt(now.Unix()+binding, 10))
			}
			if kind&8 != 0 {
				add = append(add, boundCookie+"="+seal(t, "bound", boundState{ID: sessID, Host: strings.ToLower(reqHost)}))
			}
			if kind&4 != 0 {
				add = append(add, cookies)
			} else {
				add = append([]string{cookies}, add...)
			}
			cookies = strings.Join(add, "; ")
		}
		for _, path := range []string{bindPath, boundPath, "/app"} {
			r := httptest.NewRequest("GET", "https://app2.apps.example.com"+path, nil)
			r.Host = reqHost
			r.URL.RawQuery = query
			r.Header.Set("Cookie", cookies)
			w := httptest.NewRecorder()
			handled, err := s.ServeEndpoint(w, r, path)
			if !handled {
				_, err = s.Authorize(w, r, &Policy{Provider: "corp"}, path)
			}
			if loc := w.Header().Get("Location"); loc != "" {
				if why := outsideCookieDomain(loc); why != "" {
					t.Fatalf("%s on %s with %q: redirect to %q: %s", path, reqHost, cookies, loc, why)
				}
			}
			var e *Error
			if errors.As(err, &e) && e.LinkURL != "" {
				if why := outsideCookieDomain(e.LinkURL); why != "" {
					t.Fatalf("%s on %s with %q: link to %q: %s", path, reqHost, cookies, e.LinkURL, why)
				}
			}
			for _, c := range w.Result().Cookies() {
				if c.Name != boundCookie || c.MaxAge <= 0 {
					continue
				}
				if why := boundWithout(s, r, path, c.Value, now); why != "" {
					t.Fatalf("%s on %s?%s with %q bound the host: %s", path, reqHost, query, cookies, why)
				}
			}
		}
	})
}

// outsideCookieDomain says why a redirect or link to loc may leave
// FuzzBindEndpoints' cookie_domain (apps.example.com), or "".
func outsideCookieDomain(loc string) string {
	u, err := url.Parse(loc)
	switch {
	case err != nil:
		return err.Error()
	case u.Scheme == "" && u.Host == "":
		if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.ContainsAny(loc, "\\\t\r\n") {
			return "a relative address that is not a path"
		}
		return ""
	case u.Scheme != "https" || u.User != nil || u.Opaque != "":
		return "not an https URL without user info"
	}
	h := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return "a host that is not a DNS name"
		}
	}
	if h != "apps.example.com" && !strings.HasSuffix(h, ".apps.example.com") {
		return "a host outside cookie_domain"
	}
	return ""
}

// boundWithout says why the bound cookie value, set in the answer to r at
// path, binds without a ticket of r's whose binding cookie r sends, for a
// session r sends; or "".
func boundWithout(s *Service, r *http.Request, path, value string, now time.Time) string {
	var b boundState
	if err := s.sealer.open("bound", value, &b); err != nil {
		return "the bound cookie does not open: " + err.Error()
	}
	if path != boundPath {
		return "bound at " + path
	}
	var tk bindTicket
	if err := s.sealer.open("bind ticket", r.URL.Query().Get("t"), &tk); err != nil {
		return "without a ticket"
	}
	if tk.ID == "" || b.ID != tk.ID || b.Host != strings.ToLower(r.Host) || tk.Host != b.Host {
		return fmt.Sprintf("bound %+v for the ticket %+v", b, tk)
	}
	c, err := r.Cookie(bindingCookiePfx + stateID(tk.Nonce))
	if err != nil {
		return "without the ticket's binding cookie"
	}
	if e, err := strconv.ParseInt(c.Value, 10, 64); err != nil || e <= now.Unix() {
		return "with an ended binding cookie " + c.Value
	}
	for _, v := range r.CookiesNamed("__Secure-" + sessionCookie) {
		var ss session
		if s.sealer.open("session", v.Value, &ss) == nil && ss.ID == b.ID {
			return ""
		}
	}
	return "to a session the browser does not send"
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
