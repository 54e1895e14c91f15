package preauth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDiscoveryFailureRemembered: a provider that does not answer makes a
// discovery last as long as the gateway waits (providerTimeout). Its
// failure is remembered from when it ended, so the next requests fail at
// once instead of each waiting for a discovery of its own; once the
// provider is back, the app recovers by itself.
func TestDiscoveryFailureRemembered(t *testing.T) {
	rg := newIDPRig(t)
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != discoveryPath {
			return false
		}
		rg.clk.Advance(providerTimeout) // as long as the gateway waits
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return true
	})
	c := noRedirects(rg.browser())
	for i := range 3 {
		res, body := rg.get(c, rg.gwTS.URL+"/", nil)
		if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Error") != CodeProviderUnreachable {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, body)
		}
	}
	if n := rg.hits[discoveryPath].Load(); n != 1 {
		t.Errorf("%d discoveries for 3 requests right after a failed one, want 1", n)
	}
	rg.setHook(nil)
	rg.clk.Advance(discoveryRetry)
	if res, body := rg.get(c, rg.gwTS.URL+"/", nil); res.StatusCode != http.StatusFound {
		t.Fatalf("after the provider came back: %d %s", res.StatusCode, body)
	}
}

// TestDiscoveryWaitEndsWithTheRequest: while a discovery hangs, another
// request waits for it only as long as its own context lasts, and a
// request during the discovery does not start another one.
func TestDiscoveryWaitEndsWithTheRequest(t *testing.T) {
	rg := newIDPRig(t)
	started, release := rg.holdPath(discoveryPath)
	first := make(chan *httptest.ResponseRecorder)
	go func() {
		rec := httptest.NewRecorder()
		rg.serve(rec, httptest.NewRequest(http.MethodGet, "http://app.test/", nil))
		first <- rec
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the browser went away
	gone := make(chan *httptest.ResponseRecorder)
	go func() {
		rec := httptest.NewRecorder()
		rg.serve(rec, httptest.NewRequest(http.MethodGet, "http://app.test/", nil).WithContext(ctx))
		gone <- rec
	}()
	select {
	case rec := <-gone:
		if rec.Code != http.StatusBadGateway {
			t.Errorf("request whose context ended: %d %s", rec.Code, rec.Body)
		}
	case <-time.After(5 * time.Second):
		close(release)
		<-first
		<-gone
		t.Fatal("a request whose context ended still waits for another request's discovery")
	}
	close(release)
	if rec := <-first; rec.Code != http.StatusFound {
		t.Fatalf("first request: %d %s", rec.Code, rec.Body)
	}
	if n := rg.hits[discoveryPath].Load(); n != 1 {
		t.Errorf("%d discoveries, want 1", n)
	}
}

// TestLongReturnAddress: browsers drop a cookie over 4096 bytes without a
// word, so a pre-login cookie carrying a very long address would fail
// every sign-in from that link ("started in another browser"). The
// cookie stays small; the user returns to the path without the query, or
// to "/" when the path itself is too long.
func TestLongReturnAddress(t *testing.T) {
	rg := newIDPRig(t)
	for _, tc := range []struct{ ask, land string }{
		{"/report?state=" + strings.Repeat("x", 5000), "/report"},
		{"/" + strings.Repeat("p", 5000) + "?q=1", "/"},
		{"/short?q=" + strings.Repeat("y", 1000), "/short?q=" + strings.Repeat("y", 1000)},
	} {
		res, _ := rg.get(noRedirects(rg.browser()), rg.gwTS.URL+tc.ask, nil)
		if res.StatusCode != http.StatusFound {
			t.Fatalf("%.20s…: %d", tc.ask, res.StatusCode)
		}
		for _, ck := range res.Cookies() {
			if n := len(ck.Name) + len(ck.Value); n > 4096 {
				t.Errorf("%.20s…: cookie %s of %d bytes, which browsers drop", tc.ask, ck.Name, n)
			}
		}
		res, body := rg.signIn(rg.browser(), tc.ask)
		if got := res.Request.URL.RequestURI(); res.StatusCode != http.StatusOK || got != tc.land {
			t.Errorf("%.20s…: landed at %.30s… with %d %s, want %.30s…", tc.ask, got, res.StatusCode, body, tc.land)
		}
	}
}

// TestClockSkew: a provider whose clock is ahead of the gateway's (iat and
// nbf in the gateway's future) signs users in and refreshes. A gateway
// clock so far ahead that the provider's fresh ID tokens have already
// expired refuses the sign-in and says why in its log, since the gateway
// logs only the failures it answers with 5xx.
func TestClockSkew(t *testing.T) {
	rg := newIDPRig(t)
	rg.idpAhead.Store(int64(2 * time.Minute))
	c := rg.browser()
	if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("provider 2 minutes ahead: %d %s", res.StatusCode, body)
	}
	tok := rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient, "nbf": rg.clk.Now().Add(2 * time.Minute).Unix()})
	if res, body := rg.get(c, rg.gwTS.URL+"/api", map[string]string{"Authorization": "Bearer " + tok}); res.StatusCode != http.StatusOK {
		t.Fatalf("bearer token from a provider 2 minutes ahead: %d %s", res.StatusCode, body)
	}
	rg.clk.Advance(8 * time.Minute) // past the ID token's expiry: refresh
	if res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/page", nil); res.StatusCode != http.StatusOK {
		t.Fatalf("refresh: %d %s", res.StatusCode, body)
	}

	rg.idpAhead.Store(int64(-6 * time.Minute)) // tokens live 5 minutes
	res, body := rg.signIn(rg.browser(), "/page")
	if res.StatusCode != http.StatusForbidden || res.Header.Get("X-Error") != CodeSignInFailed {
		t.Fatalf("gateway 6 minutes ahead: %d %s", res.StatusCode, body)
	}
	if n := rg.logs.FilterMessageSnippet("expired by the gateway's clock").FilterFieldKey("hint").Len(); n != 1 {
		t.Errorf("%d log lines about the clocks, want 1; log: %v", n, rg.logs.All())
	}
}

// TestProviderErrorLogged: a provider's error at the callback is shown as
// its code, and logged with its description for the administrator; the
// page offers to try again at the page the user asked for.
func TestProviderErrorLogged(t *testing.T) {
	rg := newIDPRig(t)
	c := noRedirects(rg.browser())
	res, _ := rg.get(c, rg.gwTS.URL+"/wiki/page?x=1", nil)
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	res, body := rg.get(c, rg.gwTS.URL+callbackPath+"?error=access_denied&error_description=user+not+assigned&state="+
		url.QueryEscape(loc.Query().Get("state")), nil)
	if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "(access_denied)") || res.Header.Get("X-Link") != "/wiki/page?x=1" {
		t.Fatalf("%d %v %s", res.StatusCode, res.Header, body)
	}
	logged := rg.logs.FilterMessageSnippet("did not sign the user in").All()
	if len(logged) != 1 {
		t.Fatalf("%d log lines, want 1: %v", len(logged), rg.logs.All())
	}
	if e := logged[0].ContextMap()["error"]; !strings.Contains(fmt.Sprint(e), "user not assigned") {
		t.Errorf("logged error %q lacks the description", e)
	}
}

// TestCallbackWithoutCookies: a browser that refuses cookies comes back
// from the provider without the pre-login cookie. It is told that cookies
// are needed, rather than sent round again.
func TestCallbackWithoutCookies(t *testing.T) {
	rg := newIDPRig(t)
	noJar := &http.Client{Transport: rg.gwTS.Client().Transport}
	res, body := rg.signIn(noJar, "/page")
	if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Error") != CodeStateMismatch ||
		!strings.Contains(body, "sent no cookies") || !strings.Contains(body, "allow cookies") {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
}

// TestCallbackProviderFailsOffersRetry: when the provider fails to
// complete a sign-in (its token endpoint answers 500 or its keys cannot be
// fetched), the code is used up and reloading the callback cannot help:
// the 502 page links to a new sign-in for the page asked for.
func TestCallbackProviderFailsOffersRetry(t *testing.T) {
	for _, path := range []string{"/token", "/jwks"} {
		rg := newIDPRig(t)
		rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == path {
				http.Error(w, "<html>internal error</html>", http.StatusInternalServerError)
				return true
			}
			return false
		})
		res, body := rg.signIn(rg.browser(), "/wiki/page?x=1")
		if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Error") != CodeProviderUnreachable ||
			res.Header.Get("X-Link") != "/wiki/page?x=1" {
			t.Errorf("%s failing: %d %v %s", path, res.StatusCode, res.Header, body)
		}
	}
}

// TestRefreshTokenSentOnce: oauth2 tries both ways of authenticating the
// client (HTTP Basic, then the form) when a token request fails, unless it
// has learnt which way the provider wants. The gateway keeps what it
// learnt at the sign-in, so a refresh the provider fails is one request:
// the refresh token is not sent again (a provider that rotates refresh
// tokens may have used it up already, and may see the second use as
// theft), nor is the provider asked twice while it struggles.
func TestRefreshTokenSentOnce(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
	before := rg.hits["/token"].Load()
	if res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/page", nil); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("refresh while the provider fails: %d %s", res.StatusCode, body)
	}
	if n := rg.hits["/token"].Load() - before; n != 1 {
		t.Errorf("%d token requests for one refresh, want 1", n)
	}
}

// sessionRequest is a GET of path in the rig's gateway with the cookies of
// the browser c, and ctx.
func (rg *idpRig) sessionRequest(ctx context.Context, c *http.Client, path string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, rg.gwTS.URL+path, nil).WithContext(ctx)
	for _, ck := range c.Jar.Cookies(req.URL) {
		req.AddCookie(ck)
	}
	return req
}

// TestRefreshFailureRemembered: while the provider does not answer, a
// request whose session needs a refresh waits as long as the gateway waits
// for the provider (providerTimeout) before its 502. That failure is
// remembered for refreshRetry from its end, so the requests that need a
// refresh meanwhile, this user's and others', fail at once with the same
// 502 instead of waiting in turn; the sessions are kept, and refresh once
// the provider is back. A refresh the provider refuses is not remembered.
func TestRefreshFailureRemembered(t *testing.T) {
	rg := newIDPRig(t)
	users := []*http.Client{rg.browser(), rg.browser()}
	for _, c := range users {
		if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK {
			t.Fatalf("sign-in: %d %s", res.StatusCode, body)
		}
	}
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/token" {
			return false
		}
		rg.clk.Advance(providerTimeout) // as long as the gateway waits
		panic(http.ErrAbortHandler)     // and no answer
	})
	rg.clk.Advance(6 * time.Minute) // past the ID tokens' expiry
	if res, body := rg.get(noRedirects(users[0]), rg.gwTS.URL+"/page", nil); res.StatusCode != http.StatusBadGateway ||
		res.Header.Get("X-Error") != CodeProviderUnreachable {
		t.Fatalf("refresh while the provider does not answer: %d %s", res.StatusCode, body)
	}
	tried := rg.hits["/token"].Load()
	for i, c := range []*http.Client{users[0], users[1], users[1]} {
		res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/page", nil)
		if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Error") != CodeProviderUnreachable {
			t.Errorf("request %d right after: %d %s", i, res.StatusCode, body)
		}
		if len(res.Cookies()) != 0 {
			t.Errorf("request %d right after: set %v; the session must be kept", i, res.Header.Values("Set-Cookie"))
		}
	}
	if n := rg.hits["/token"].Load() - tried; n != 0 {
		t.Errorf("%d token requests within %v of a refresh the provider did not answer, want none", n, refreshRetry)
	}

	rg.setHook(nil)
	rg.clk.Advance(refreshRetry)
	for i, c := range users {
		if res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/page", nil); res.StatusCode != http.StatusOK {
			t.Errorf("user %d once the provider is back: %d %s", i, res.StatusCode, body)
		}
	}

	// A refusal is the token's, not the provider's: another user's refresh
	// right after it still asks the provider.
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
		return true
	})
	rg.clk.Advance(6 * time.Minute)
	for i, c := range users {
		before := rg.hits["/token"].Load()
		if res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/page", nil); res.StatusCode != http.StatusFound {
			t.Errorf("user %d, refresh refused: %d %s; want a new sign-in", i, res.StatusCode, body)
		}
		if n := rg.hits["/token"].Load() - before; n != 1 {
			t.Errorf("user %d: %d token requests after another user's refused refresh, want 1", i, n)
		}
	}
}

// TestRefreshWaitEndsWithTheRequest: a request whose session needs a
// refresh waits for the provider only as long as its client does, whether
// it asked the provider or waits for another request's refresh of the same
// token. The refresh goes on without them, and a later request with the
// same cookie uses its result.
func TestRefreshWaitEndsWithTheRequest(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	started, release := rg.holdPath("/token")
	rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
	tokens := rg.hits["/token"].Load()
	ctx, cancel := context.WithCancel(context.Background())
	answers := make(chan *httptest.ResponseRecorder, 2)
	serve := func(req *http.Request) {
		rec := httptest.NewRecorder()
		rg.serve(rec, req)
		answers <- rec
	}
	go serve(rg.sessionRequest(ctx, c, "/page"))
	<-started
	go serve(rg.sessionRequest(ctx, c, "/page")) // waits for the first one's refresh
	cancel()                                     // both clients go away
	for i := range 2 {
		select {
		case rec := <-answers:
			if rec.Code != http.StatusBadGateway || len(rec.Result().Cookies()) != 0 {
				t.Errorf("request %d whose client went away: %d %v %s", i, rec.Code, rec.Header(), rec.Body)
			}
		case <-time.After(5 * time.Second):
			close(release)
			t.Fatal("a request whose client went away still waits for the provider")
		}
	}
	close(release)
	rec := httptest.NewRecorder()
	rg.serve(rec, rg.sessionRequest(context.Background(), c, "/page"))
	if rec.Code != http.StatusOK {
		t.Errorf("after the provider answered: %d %s", rec.Code, rec.Body)
	}
	if n := rg.hits["/token"].Load() - tokens; n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

// TestRefreshedSessionTooLarge: a refreshed session too big for the
// cookies (here, the provider's new refresh token is 16,000 bytes) is
// written without its refresh token. The refreshed session is shared by
// the requests that carried the old cookie at the same time, and each of
// them dropped the token from it while the others were sealing it (a data
// race); they write a smaller copy now.
func TestRefreshedSessionTooLarge(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"access_token":"at","token_type":"Bearer","expires_in":300,"refresh_token":%q,"id_token":%q}`,
			strings.Repeat("r", 16000), rg.idp.Mint(map[string]any{"sub": rigUser.Subject, "aud": rigClient}))
		return true
	})
	rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/page", nil)
			if res.StatusCode != http.StatusOK {
				t.Errorf("request %d: %d %s", i, res.StatusCode, body)
				return
			}
			req := &http.Request{Header: http.Header{"Cookie": {}}}
			for _, ck := range res.Cookies() {
				req.AddCookie(ck)
			}
			ss, why := rg.svc.openSession(req)
			if ss == nil || ss.Token != "" || ss.Refresh != 0 || ss.Subject != rigUser.Subject {
				t.Errorf("request %d wrote the session %+v (%s); want it without the refresh token", i, ss, why)
			}
		})
	}
	wg.Wait()
}
