package preauth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// newTLSIDPRig is newIDPRig whose gateway answers over HTTPS, where the
// pre-login cookies take the __Secure- prefix and the pending cookie the
// __Host- prefix.
func newTLSIDPRig(t *testing.T) *idpRig {
	t.Helper()
	rg := newIDPRig(t)
	rg.gwTS.Close()
	rg.gwTS = httptest.NewTLSServer(http.HandlerFunc(rg.serve))
	t.Cleanup(rg.gwTS.Close)
	return rg
}

// preLoginCookies returns the pre-login cookies that the browser c would
// send to the callback.
func (rg *idpRig) preLoginCookies(c *http.Client) []*http.Cookie {
	u, _ := url.Parse(rg.gwTS.URL + callbackPath)
	var out []*http.Cookie
	for _, ck := range c.Jar.Cookies(u) {
		if strings.HasPrefix(ck.Name, "__Secure-"+loginCookiePfx) {
			out = append(out, &http.Cookie{Name: ck.Name, Value: ck.Value, Path: callbackPath, Secure: true, HttpOnly: true})
		}
	}
	return out
}

// signedInAs returns who the browser c is signed in as at the gateway ("":
// nobody).
func (rg *idpRig) signedInAs(c *http.Client) string {
	rg.t.Helper()
	res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/whoami", nil)
	if res.StatusCode == http.StatusOK {
		return strings.TrimPrefix(body, "ok ")
	}
	return ""
}

// TestLoginCSRFFromSiblingHost: under TLS a pre-login cookie is
// __Secure-, which only HTTPS pages can set, but any HTTPS host under the
// same parent domain can (Domain=example.com). An attacker starts a
// sign-in of his own, plants his pre-login cookie in the victim's browser
// from such a host, and sends the victim to the callback with his code and
// state: the victim must not be signed in as him. The callback completes
// only the sign-ins that the browser's __Host- pending cookie lists (which
// no other host can set), and never lists a planted one.
func TestLoginCSRFFromSiblingHost(t *testing.T) {
	rg := newTLSIDPRig(t)
	attacker := rg.browser()
	gw, _ := url.Parse(rg.gwTS.URL + callbackPath)

	refused := func(what string, victim *http.Client, callback string) {
		t.Helper()
		tokens := rg.hits["/token"].Load()
		res, body := rg.get(noRedirects(victim), callback, nil)
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Error") != CodeStateMismatch {
			t.Errorf("%s: the callback answered %d %q %s; want 400 %s", what, res.StatusCode, res.Header.Get("Location"), body, CodeStateMismatch)
		} else if !strings.Contains(body, "no record of starting it") {
			t.Errorf("%s: the page does not say what happened: %s", what, body)
		}
		if n := rg.hits["/token"].Load(); n != tokens {
			t.Errorf("%s: the attacker's code was exchanged", what)
		}
		if who := rg.signedInAs(victim); who != "" {
			t.Errorf("%s: the victim is signed in as %q", what, who)
		}
	}

	// A browser that never started a sign-in.
	cb := rg.stopAtCallback(attacker, "/x")
	victim := rg.browser()
	victim.Jar.SetCookies(gw, rg.preLoginCookies(attacker))
	refused("a browser without sign-ins of its own", victim, cb)
	if n := rg.logs.FilterMessageSnippet("did not get from this host").Len(); n != 1 {
		t.Errorf("%d log lines for the refused callback, want 1", n)
	}

	// A browser with a sign-in of its own pending, which gets two planted
	// pre-login cookies: the first callback must not list the other one
	// for the second.
	victim = rg.browser()
	res, _ := rg.get(noRedirects(victim), rg.gwTS.URL+"/mine", nil)
	own := res.Header.Get("Location")
	a1, a2 := rg.browser(), rg.browser()
	cb1, cb2 := rg.stopAtCallback(a1, "/x"), rg.stopAtCallback(a2, "/y")
	victim.Jar.SetCookies(gw, append(rg.preLoginCookies(a1), rg.preLoginCookies(a2)...))
	refused("a browser with a sign-in of its own (first planted)", victim, cb1)
	// A cookie planted with Domain=<parent> outlives the callback's
	// host-only expiry: planted again.
	victim.Jar.SetCookies(gw, rg.preLoginCookies(a2))
	refused("a browser with a sign-in of its own (second planted)", victim, cb2)
	if res, body := rg.finish(victim, own); res.StatusCode != http.StatusOK || res.Request.URL.Path != "/mine" || body != "ok "+rigUser.Subject {
		t.Errorf("the victim's own sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}

	// A signed-in browser goes to the app's start page (as after the back
	// button), and the attacker's code is not used.
	a3 := rg.browser()
	cb3 := rg.stopAtCallback(a3, "/z")
	victim.Jar.SetCookies(gw, rg.preLoginCookies(a3))
	tokens := rg.hits["/token"].Load()
	if res, body := rg.get(noRedirects(victim), cb3, nil); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Errorf("a signed-in browser: %d %q %s; want 303 to /", res.StatusCode, res.Header.Get("Location"), body)
	}
	if n := rg.hits["/token"].Load(); n != tokens {
		t.Errorf("a signed-in browser: the attacker's code was exchanged")
	}
}

// TestSignInsStartedTogetherUnderTLS: sign-ins whose starts all read the
// pending list before any wrote it (tabs loading at the same moment): the
// browser keeps the list of the start answered last only, but each start's
// own __Host- started cookie names it, so each sign-in still completes, at
// its own page, in either order (as over plain HTTP: TestTwoTabsSignIn);
// and the callback bounds them as it bounds the pre-login cookies
// (TestPreLoginCookiesBoundedAtCallback).
func TestSignInsStartedTogetherUnderTLS(t *testing.T) {
	rg := newTLSIDPRig(t)
	gw, _ := url.Parse(rg.gwTS.URL)
	fresh := noRedirects(&http.Client{Transport: rg.gwTS.Client().Transport}) // a request without the list
	start := func(c *http.Client, path string) string {
		rg.clk.Advance(time.Second)
		res, body := rg.get(fresh, rg.gwTS.URL+path, nil)
		if res.StatusCode != http.StatusFound {
			t.Fatalf("GET %s: %d %s", path, res.StatusCode, body)
		}
		for _, ck := range res.Cookies() {
			u := *gw
			u.Path = ck.Path
			c.Jar.SetCookies(&u, []*http.Cookie{ck})
		}
		return res.Header.Get("Location")
	}
	for _, firstA := range []bool{false, true} {
		c := rg.browser()
		a, b := start(c, "/a"), start(c, "/b") // the browser keeps b's list
		tabs := []struct{ authorize, path string }{{b, "/b"}, {a, "/a"}}
		if firstA {
			tabs[0], tabs[1] = tabs[1], tabs[0]
		}
		for _, tab := range tabs {
			if res, body := rg.finish(c, tab.authorize); res.StatusCode != http.StatusOK || res.Request.URL.Path != tab.path {
				t.Errorf("/a first %v: tab %s: %d at %s: %s", firstA, tab.path, res.StatusCode, res.Request.URL, body)
			}
		}
	}

	c := rg.browser()
	var starts []string
	for i := range 12 {
		starts = append(starts, start(c, fmt.Sprintf("/tab%d", i)))
	}
	if res, body := rg.finish(c, starts[11]); res.StatusCode != http.StatusOK || res.Request.URL.Path != "/tab11" {
		t.Fatalf("the newest sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
	started := 0
	for _, ck := range c.Jar.Cookies(gw) {
		if strings.HasPrefix(ck.Name, startedCookiePfx) {
			started++
		}
	}
	if n := len(rg.preLoginCookies(c)); n != maxPendingSignIns || started != maxPendingSignIns {
		t.Errorf("after the callback: %d pre-login and %d started cookies, want %d of each", n, started, maxPendingSignIns)
	}
	for i := 3; i < 11; i++ {
		if res, body := rg.finish(c, starts[i]); res.StatusCode != http.StatusOK || res.Request.URL.Path != fmt.Sprintf("/tab%d", i) {
			t.Errorf("sign-in %d: %d at %s: %s", i, res.StatusCode, res.Request.URL, body)
		}
	}
	for _, ck := range c.Jar.Cookies(gw) {
		if strings.HasPrefix(ck.Name, startedCookiePfx) || ck.Name == "__Host-"+pendingCookie {
			t.Errorf("%s left after every sign-in ended", ck.Name)
		}
	}
}

// TestSignInUnderTLS: under TLS a sign-in, two tabs one after the other,
// and the bound of pending sign-ins work as over plain HTTP (see
// TestTwoTabsSignIn, TestPreLoginCookiesBounded).
func TestSignInUnderTLS(t *testing.T) {
	rg := newTLSIDPRig(t)
	if res, body := rg.signIn(rg.browser(), "/page?x=1"); res.StatusCode != http.StatusOK || res.Request.URL.RequestURI() != "/page?x=1" {
		t.Fatalf("sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}

	c := rg.browser()
	var starts []string
	for i := range maxPendingSignIns + 1 {
		res, body := rg.get(noRedirects(c), rg.gwTS.URL+fmt.Sprintf("/tab%d", i), nil)
		if res.StatusCode != http.StatusFound {
			t.Fatalf("page load %d: %d %s", i, res.StatusCode, body)
		}
		starts = append(starts, res.Header.Get("Location"))
	}
	if res, body := rg.finish(c, starts[0]); res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Error") != CodeStateMismatch {
		t.Errorf("the oldest sign-in, forgotten: %d %s", res.StatusCode, body)
	}
	// Newest first, then the others: each tab at its own page.
	for _, i := range append([]int{maxPendingSignIns}, seq(1, maxPendingSignIns)...) {
		if res, body := rg.finish(c, starts[i]); res.StatusCode != http.StatusOK || res.Request.URL.Path != fmt.Sprintf("/tab%d", i) {
			t.Errorf("sign-in %d: %d at %s: %s", i, res.StatusCode, res.Request.URL, body)
		}
	}
}

func seq(from, to int) (s []int) {
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// TestSignInStartedByPreviousVersion: a sign-in started by the previous
// version (or by a replica still running it, in a rolling upgrade) has no
// started cookie, but the previous version listed it in the __Host-
// pending cookie too: it completes.
func TestSignInStartedByPreviousVersion(t *testing.T) {
	rg := newTLSIDPRig(t)
	c := rg.browser()
	res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/old?x=1", nil)
	if res.StatusCode != http.StatusFound {
		t.Fatalf("start: %d %s", res.StatusCode, body)
	}
	gw, _ := url.Parse(rg.gwTS.URL)
	dropped := 0
	for _, ck := range c.Jar.Cookies(gw) {
		if strings.HasPrefix(ck.Name, startedCookiePfx) {
			c.Jar.SetCookies(gw, []*http.Cookie{{Name: ck.Name, Path: "/", MaxAge: -1, Secure: true}})
			dropped++
		}
	}
	if dropped != 1 {
		t.Fatalf("the start set %d started cookies, want 1", dropped)
	}
	if res, body := rg.finish(c, res.Header.Get("Location")); res.StatusCode != http.StatusOK || res.Request.URL.RequestURI() != "/old?x=1" {
		t.Errorf("sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
}

// TestSignInStartedOnReplicaAhead: a replica whose clock is ahead (up to
// refreshClockSkew) starts the sign-in and another completes it at once
// (the provider asked nothing): the started cookie's end is more than
// loginCookieLife ahead of the second replica's clock, and still counts.
func TestSignInStartedOnReplicaAhead(t *testing.T) {
	rg := newTLSIDPRig(t)
	var ahead atomic.Int64
	rg.svc.cfg.Now = func() time.Time { return rg.clk.Now().Add(time.Duration(ahead.Load())) }
	c := rg.browser()
	ahead.Store(int64(2 * time.Second))
	res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/p", nil)
	if res.StatusCode != http.StatusFound {
		t.Fatalf("start: %d %s", res.StatusCode, body)
	}
	ahead.Store(0)
	if res, body := rg.finish(c, res.Header.Get("Location")); res.StatusCode != http.StatusOK || res.Request.URL.Path != "/p" {
		t.Errorf("sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
}

// TestManySignInsStartedTogetherUnderTLS: more sign-ins start at the same
// moment than readPending reads (a restored window of 20 tabs): each
// callback still finds its own started cookie by name.
func TestManySignInsStartedTogetherUnderTLS(t *testing.T) {
	rg := newTLSIDPRig(t)
	gw, _ := url.Parse(rg.gwTS.URL)
	fresh := noRedirects(&http.Client{Transport: rg.gwTS.Client().Transport})
	c := rg.browser()
	var starts []string
	for i := range 20 {
		res, body := rg.get(fresh, rg.gwTS.URL+fmt.Sprintf("/tab%d", i), nil)
		if res.StatusCode != http.StatusFound {
			t.Fatalf("start %d: %d %s", i, res.StatusCode, body)
		}
		for _, ck := range res.Cookies() {
			u := *gw
			u.Path = ck.Path
			c.Jar.SetCookies(&u, []*http.Cookie{ck})
		}
		starts = append(starts, res.Header.Get("Location"))
	}
	if res, body := rg.finish(c, starts[18]); res.StatusCode != http.StatusOK || res.Request.URL.Path != "/tab18" {
		t.Errorf("sign-in 18 of 20: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
	if n := rg.logs.FilterMessageSnippet("did not get from this host").Len(); n != 0 {
		t.Errorf("%d login CSRF warnings for the browser's own sign-ins", n)
	}
}
