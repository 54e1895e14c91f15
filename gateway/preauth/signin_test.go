package preauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// stopAtCallback starts a sign-in for path in the browser c and signs in at
// the provider, but stops at the callback: it returns the callback's
// address, with the provider's code and the state.
func (rg *idpRig) stopAtCallback(c *http.Client, path string) string {
	rg.t.Helper()
	res, _ := rg.get(noRedirects(c), rg.gwTS.URL+path, nil)
	res, _ = rg.finish(noRedirects(c), res.Header.Get("Location"))
	callback := res.Header.Get("Location")
	if res.StatusCode != http.StatusFound || !strings.HasPrefix(callback, rg.gwTS.URL+callbackPath+"?") {
		rg.t.Fatalf("the provider answered %d %q, want a redirect to the callback", res.StatusCode, callback)
	}
	return callback
}

// withoutSession is a request for u with the cookies that c would send,
// but the session cookie.
func withoutSession(t *testing.T, c *http.Client, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ck := range c.Jar.Cookies(req.URL) {
		if !strings.HasPrefix(ck.Name, sessionCookie) {
			req.AddCookie(ck)
		}
	}
	return req
}

// TestCallbackBackButton: the back button after a sign-in opens the
// callback again, whose state is used up. A browser that is signed in is
// sent to the app's start page instead of a page saying that the sign-in
// cannot be completed; one that is not (no session, an ended or
// signed-out one, another browser) still gets that page. Nothing of the
// callback's query decides where the browser goes, and the code in it is
// not used: a signed-in browser cannot be sent elsewhere, nor signed in as
// someone else (login CSRF), by a callback address.
func TestCallbackBackButton(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	callback := rg.stopAtCallback(c, "/page?x=1")
	if res, body := rg.get(c, callback, nil); res.StatusCode != http.StatusOK || res.Request.URL.RequestURI() != "/page?x=1" {
		t.Fatalf("sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
	gw, _ := url.Parse(rg.gwTS.URL)
	session := c.Jar.Cookies(gw)
	tokens := rg.hits["/token"].Load()

	back := func(c *http.Client, u string) {
		t.Helper()
		res, body := rg.get(noRedirects(c), u, nil)
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
			t.Errorf("%.60s… with a session: %d %q %s; want 303 to /", u, res.StatusCode, res.Header.Get("Location"), body)
		}
		for _, ck := range res.Cookies() {
			if strings.HasPrefix(ck.Name, sessionCookie) {
				t.Errorf("%.60s… with a session set %s", u, ck)
			}
		}
	}
	back(c, callback)
	// Another sign-in's callback (someone else's code and state), and
	// made-up return addresses, change nothing.
	other := rg.stopAtCallback(rg.browser(), "/other")
	back(c, other)
	back(c, rg.gwTS.URL+callbackPath+"?state=x&code=y&return=//evil.example/&redirect_uri=https://evil.example/")
	back(c, rg.gwTS.URL+callbackPath+"?error=access_denied&state=x")
	if n := rg.hits["/token"].Load(); n != tokens {
		t.Errorf("%d codes exchanged at callbacks of a signed-in browser", n-tokens)
	}
	if res, body := rg.get(c, rg.gwTS.URL+"/whoami", nil); res.StatusCode != http.StatusOK || body != "ok "+rigUser.Subject {
		t.Errorf("after the callbacks: %d %s", res.StatusCode, body)
	}

	notSignedIn := func(what string, req *http.Request) {
		t.Helper()
		res, err := noRedirects(c).Transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Error") != CodeStateMismatch || res.Header.Get("Location") != "" {
			t.Errorf("%s: %d %v; want 400 %s", what, res.StatusCode, res.Header, CodeStateMismatch)
		}
	}
	notSignedIn("without a session", withoutSession(t, c, callback))
	req := withoutSession(t, c, callback)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: "v1.forged"})
	notSignedIn("with a forged session", req)

	c2 := rg.browser()
	callback2 := rg.stopAtCallback(c2, "/")
	if res, body := rg.get(c2, callback2, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("second sign-in: %d %s", res.StatusCode, body)
	}
	if res, body := rg.get(c, rg.gwTS.URL+logoutPath, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-out: %d %s", res.StatusCode, body)
	}
	req = withoutSession(t, c, callback)
	for _, ck := range session {
		req.AddCookie(ck)
	}
	notSignedIn("with a copy of a signed-out session", req)
	rg.clk.Advance(DefaultSessionLifetime)
	req, _ = http.NewRequest(http.MethodGet, callback2, nil)
	for _, ck := range c2.Jar.Cookies(gw) {
		req.AddCookie(ck)
	}
	notSignedIn("with an ended session", req)
}

// TestCallbackExchangeEndsWithTheRequest: the callback's code exchange
// with the provider is bounded by the callback request: a browser that
// leaves while the provider's token endpoint hangs frees the request at
// once, instead of holding it (and a connection to the provider) for the
// provider timeout. It used to wait: the exchange ran on a context
// detached from the request's.
func TestCallbackExchangeEndsWithTheRequest(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	callback := rg.stopAtCallback(c, "/page")
	started, release := rg.holdPath("/token")
	req := withoutSession(t, c, callback)
	ctx, cancel := context.WithCancel(context.Background())
	answer := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		rg.serve(rec, req.WithContext(ctx))
		answer <- rec
	}()
	<-started
	cancel() // the browser went away
	select {
	case rec := <-answer:
		if rec.Code != http.StatusBadGateway || rec.Header().Get("X-Error") != CodeProviderUnreachable {
			t.Errorf("callback whose browser went away: %d %s", rec.Code, rec.Body)
		}
	case <-time.After(5 * time.Second):
		close(release)
		<-answer
		t.Fatal("a callback whose browser went away still waits for the provider's token endpoint")
	}
	close(release)
}

// TestSignedOutPage: the provider's sign-out link is on the page only
// when the provider has one, escaped, and never with a scheme a browser
// would run; the confirm page's form posts to the sign-out path.
func TestSignedOutPage(t *testing.T) {
	if page := signedOutPage("corp", ""); strings.Contains(page, "provider-logout") {
		t.Errorf("a link without a sign-out URL:\n%s", page)
	}
	page := signedOutPage(`<i>corp</i>`, "https://idp.example/logout?client_id=a&post_logout_redirect_uri=https%3A%2F%2Fapp")
	want := `<a id="provider-logout" href="https://idp.example/logout?client_id=a&amp;post_logout_redirect_uri=https%3A%2F%2Fapp">Sign out at &lt;i&gt;corp&lt;/i&gt; too</a>`
	if !strings.Contains(page, want) {
		t.Errorf("page lacks %s:\n%s", want, page)
	}
	if page := signedOutPage("corp", "javascript:alert(1)"); strings.Contains(page, "javascript") || !strings.Contains(page, `href="#ZgotmplZ"`) {
		t.Errorf("a javascript: sign-out URL was linked:\n%s", page)
	}
	if want := `<form method="post" action="/.sallyport/auth/logout">`; !strings.Contains(confirmSignOutPage, want) {
		t.Errorf("confirm page lacks %s:\n%s", want, confirmSignOutPage)
	}
}
