package preauth

import (
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/devoidc"
)

// TestPlantedLoginCookieUnderTLS: login CSRF with a planted pre-login
// cookie. The attacker starts a sign-in at an HTTPS gateway, signs in at
// the provider as himself and stops before the callback; then he plants
// his pre-login cookie in the victim's browser and sends it to the
// callback with his code and state. A network attacker can plant a cookie
// by answering any plain-HTTP request of the browser, but not one whose
// name starts with __Secure-, which browsers let only HTTPS pages set.
// The old pre-login cookie had no prefix, so the planted copy completed
// the attacker's sign-in in the victim's browser: 302 and a session
// cookie, the victim signed in as the attacker.
func TestPlantedLoginCookieUnderTLS(t *testing.T) {
	rg := newIDPRig(t)
	gw := httptest.NewTLSServer(http.HandlerFunc(rg.serve))
	t.Cleanup(gw.Close)
	tr := gw.Client().Transport.(*http.Transport)
	t.Cleanup(tr.CloseIdleConnections)
	browser := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	// The attacker's browser, up to the provider's redirect to the callback.
	attacker := browser()
	res, body := rg.get(attacker, gw.URL+"/", nil)
	if res.StatusCode != http.StatusFound {
		t.Fatalf("page load: %d %s", res.StatusCode, body)
	}
	var login *http.Cookie
	for _, c := range res.Cookies() {
		if strings.Contains(c.Name, loginCookiePfx) {
			login = c
		}
	}
	if login == nil || !login.Secure || !login.HttpOnly || login.Path != callbackPath {
		t.Fatalf("pre-login cookie %+v, want Secure, HttpOnly, Path=%s", login, callbackPath)
	}
	authorize, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	res, _, err = devoidc.SubmitSignIn(attacker, authorize, rg.user)
	if err != nil {
		t.Fatal(err)
	}
	callback := res.Header.Get("Location")
	if !strings.HasPrefix(callback, gw.URL+callbackPath+"?") {
		t.Fatalf("provider redirected to %q", callback)
	}
	// The victim's browser, with the cookie as an attacker can plant it.
	victim := browser()
	gwURL, _ := url.Parse(gw.URL)
	victim.Jar.SetCookies(gwURL, []*http.Cookie{{Name: strings.TrimPrefix(login.Name, "__Secure-"), Value: login.Value,
		Path: callbackPath}})
	res, body = rg.get(victim, callback, nil)
	for _, c := range res.Cookies() {
		if strings.Contains(c.Name, sessionCookie) && c.MaxAge > 0 {
			t.Fatalf("the planted pre-login cookie signed the victim in as the attacker: %d, %s set", res.StatusCode, c.Name)
		}
	}
	if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Error") != CodeStateMismatch {
		t.Errorf("callback with a planted pre-login cookie: %d %s, want 400 %s", res.StatusCode, body, CodeStateMismatch)
	}
	// The attacker's own browser, which holds the real cookie, completes.
	res, body = rg.get(attacker, callback, nil)
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/" {
		t.Errorf("callback in the browser that started the sign-in: %d %s", res.StatusCode, body)
	}
	// The bound on pending sign-ins holds for the prefixed names: a
	// browser that starts maxPendingSignIns+3 keeps the newest
	// maxPendingSignIns.
	tabs := browser()
	for range maxPendingSignIns + 3 {
		rg.clk.Advance(time.Second)
		if res, body := rg.get(tabs, gw.URL+"/", nil); res.StatusCode != http.StatusFound {
			t.Fatalf("page load: %d %s", res.StatusCode, body)
		}
	}
	cb, _ := url.Parse(gw.URL + callbackPath)
	n := 0
	for _, c := range tabs.Jar.Cookies(cb) {
		if strings.HasPrefix(c.Name, "__Secure-"+loginCookiePfx) {
			n++
		}
	}
	if n != maxPendingSignIns {
		t.Errorf("%d pre-login cookies kept, want %d", n, maxPendingSignIns)
	}
}
