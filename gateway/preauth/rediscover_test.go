package preauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// authorizeTarget is where the gateway sends a browser without a session
// to sign in.
func (rg *idpRig) authorizeTarget() string {
	rg.t.Helper()
	res, body := rg.get(noRedirects(rg.browser()), rg.gwTS.URL+"/", nil)
	if res.StatusCode != http.StatusFound {
		rg.t.Fatalf("GET / without a session: %d %s", res.StatusCode, body)
	}
	return res.Header.Get("Location")
}

// waitAuthorizeAt waits until the gateway sends browsers to sign in at
// prefix (a discovery in the background ends).
func (rg *idpRig) waitAuthorizeAt(prefix string) {
	rg.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for at := rg.authorizeTarget(); !strings.HasPrefix(at, prefix); at = rg.authorizeTarget() {
		if time.Now().After(deadline) {
			rg.t.Fatalf("the gateway still sends browsers to %s, want %s…", at, prefix)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDiscoveryFollowsMovedEndpoints: a provider that moves its endpoints
// and its jwks_uri (and signs with a new key, published only at the new
// address) is followed without a restart: the token endpoint's 404 at a
// sign-in under way runs the discovery again, in the background, and the
// next sign-in uses the new addresses. The gateway used to keep the first
// discovery for the life of the process: every sign-in went to the old
// addresses and failed.
func TestDiscoveryFollowsMovedEndpoints(t *testing.T) {
	rg := newIDPRig(t)
	if res, body := rg.signIn(rg.browser(), "/"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	c := rg.browser()
	callback := rg.stopAtCallback(c, "/page") // a sign-in under way
	rg.idp.MoveEndpoints("/v2")
	rg.idp.RotateKey(false)

	res, body := rg.get(noRedirects(c), callback, nil)
	if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Error") != CodeProviderUnreachable || res.Header.Get("X-Link") == "" {
		t.Errorf("callback whose code exchange met a moved token endpoint: %d %s; want 502 %s with a link to try again",
			res.StatusCode, body, CodeProviderUnreachable)
	}
	rg.waitAuthorizeAt(rg.idpTS.URL + "/v2/authorize")
	if res, body := rg.signIn(rg.browser(), "/"); res.StatusCode != http.StatusOK || body != "ok "+rigUser.Subject {
		t.Fatalf("sign-in after the provider moved: %d %s", res.StatusCode, body)
	}
	if n := rg.hits[discoveryPath].Load(); n != 2 {
		t.Errorf("%d discoveries, want 2", n)
	}
}

// TestDiscoveryFollowsMovedKeys: a bearer token signed with a key that the
// provider publishes only at a new jwks_uri is refused while the old
// address answers 404 (502: the keys cannot be fetched), runs the
// discovery again, and is accepted once it ends. An address that keeps
// answering 404 runs it at most once per rediscoverInterval.
func TestDiscoveryFollowsMovedKeys(t *testing.T) {
	rg := newIDPRig(t)
	bearer := func(tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, rg.gwTS.URL+"/api", nil).WithContext(context.Background())
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		rg.serve(rec, req)
		return rec
	}
	if rec := bearer(rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient})); rec.Code != http.StatusOK {
		t.Fatalf("bearer: %d %s", rec.Code, rec.Body)
	}
	rg.idp.MoveEndpoints("/v2")
	rg.idp.RotateKey(false)
	tok := rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient})
	rg.clk.Advance(keyRefetchInterval) // a key it has not seen is fetched
	if rec := bearer(tok); rec.Code != http.StatusBadGateway {
		t.Errorf("bearer signed with a key published only at the new jwks_uri, before the discovery: %d %s", rec.Code, rec.Body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rec := bearer(tok); rec.Code != http.StatusOK; rec = bearer(tok) {
		if time.Now().After(deadline) {
			t.Fatalf("bearer after the provider moved its keys: %d %s", rec.Code, rec.Body)
		}
		time.Sleep(time.Millisecond)
	}
	if n := rg.hits[discoveryPath].Load(); n != 2 {
		t.Errorf("%d discoveries, want 2", n)
	}

	// A jwks_uri that answers 404 for good (not moved): tokens naming
	// unknown keys fetch the keys once per keyRefetchInterval, and each
	// 404 may run the discovery, but not more than once per
	// rediscoverInterval.
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/jwks" {
			http.NotFound(w, r)
			return true
		}
		return false
	})
	start := rg.clk.Now()
	for range 12 {
		rg.clk.Advance(keyRefetchInterval)
		rg.idp.RotateKey(true) // a key the gateway has not seen
		if rec := bearer(rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient})); rec.Code != http.StatusBadGateway {
			t.Fatalf("bearer while the jwks_uri answers 404: %d %s", rec.Code, rec.Body)
		}
	}
	elapsed := rg.clk.Now().Sub(start)
	max := 2 + int(elapsed/rediscoverInterval)
	if n := int(rg.hits[discoveryPath].Load()); n > max {
		t.Errorf("%d discoveries in %v of a jwks_uri answering 404, want at most %d", n, elapsed, max)
	}
}

// TestDiscoveryRunAgainWhenOld: a discovery older than discoveryMaxAge is
// run again in the background: requests meanwhile go on with the old one
// at once, and later ones use what it found. It used to be kept for the
// life of the process.
func TestDiscoveryRunAgainWhenOld(t *testing.T) {
	rg := newIDPRig(t)
	if at := rg.authorizeTarget(); !strings.HasPrefix(at, rg.idpTS.URL+"/authorize") {
		t.Fatalf("sign-in at %s", at)
	}
	rg.idp.MoveEndpoints("/v2")
	started, release := rg.holdPath(discoveryPath)
	rg.clk.Advance(discoveryMaxAge - time.Second)
	if at := rg.authorizeTarget(); !strings.HasPrefix(at, rg.idpTS.URL+"/authorize") {
		t.Fatalf("sign-in at %s before the discovery's age", at)
	}
	rg.clk.Advance(time.Second)
	// Answered at once with the old discovery while the new one hangs.
	if at := rg.authorizeTarget(); !strings.HasPrefix(at, rg.idpTS.URL+"/authorize") {
		t.Errorf("sign-in at %s while the discovery runs again", at)
	}
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("no discovery after discoveryMaxAge")
	}
	close(release)
	rg.waitAuthorizeAt(rg.idpTS.URL + "/v2/authorize")
	rg.setHook(nil)
	if res, body := rg.signIn(rg.browser(), "/"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in after the discovery: %d %s", res.StatusCode, body)
	}
	if n := rg.hits[discoveryPath].Load(); n != 2 {
		t.Errorf("%d discoveries, want 2", n)
	}

	// A day later the provider fails its discovery: requests go on with
	// what the last one found, and it is tried again after
	// rediscoverInterval, not at every request.
	failed := make(chan struct{}, 10)
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != discoveryPath {
			return false
		}
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		failed <- struct{}{}
		return true
	})
	waitFailed := func() {
		t.Helper()
		select {
		case <-failed:
		case <-time.After(5 * time.Second):
			t.Fatal("no discovery")
		}
	}
	rg.clk.Advance(discoveryMaxAge)
	for i := range 5 {
		if at := rg.authorizeTarget(); !strings.HasPrefix(at, rg.idpTS.URL+"/v2/authorize") {
			t.Fatalf("request %d while the discovery fails: sign-in at %s", i, at)
		}
		if i == 0 {
			waitFailed() // the failure is recorded before the next request
			rg.waitFailureRecorded()
		}
	}
	rg.clk.Advance(rediscoverInterval)
	rg.authorizeTarget()
	waitFailed()
	if n := rg.hits[discoveryPath].Load(); n != 4 {
		t.Errorf("%d discoveries, want 4 (one at the day's end, one after %v)", n, rediscoverInterval)
	}
}

// waitFailureRecorded waits until the discovery in flight of the rig's
// provider has ended.
func (rg *idpRig) waitFailureRecorded() {
	rg.t.Helper()
	p := rg.svc.providers["corp"]
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		done := p.pending == nil
		p.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			rg.t.Fatal("the discovery did not end")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRefreshFollowsMovedTokenEndpoint: a session refresh that meets a
// token endpoint answering 404 (moved) keeps the session (502, not a
// sign-in) and runs the discovery again; once it ends, the session
// refreshes at the new endpoint. The 404 used to count as the provider
// refusing the refresh: the session ended, and signing in failed too.
func TestRefreshFollowsMovedTokenEndpoint(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	rg.idp.MoveEndpoints("/v2")
	rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
	nc := noRedirects(c)
	if res, body := rg.get(nc, rg.gwTS.URL+"/page", nil); res.StatusCode != http.StatusBadGateway ||
		res.Header.Get("X-Error") != CodeProviderUnreachable {
		t.Errorf("refresh at a moved token endpoint: %d %s; want 502 %s", res.StatusCode, body, CodeProviderUnreachable)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, body := rg.get(nc, rg.gwTS.URL+"/page", nil)
		if res.StatusCode == http.StatusOK && body == "ok "+rigUser.Subject {
			break
		}
		if res.StatusCode != http.StatusBadGateway || time.Now().After(deadline) {
			t.Fatalf("the session after the provider moved its token endpoint: %d %s", res.StatusCode, body)
		}
		time.Sleep(time.Millisecond)
	}
	if n := rg.hits[discoveryPath].Load(); n != 2 {
		t.Errorf("%d discoveries, want 2", n)
	}
}
