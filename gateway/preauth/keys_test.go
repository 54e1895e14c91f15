package preauth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/devoidc"
)

// TestUnknownKeyIDsFetchKeysOncePerInterval: bearer tokens naming keys the
// provider does not have, or forging the signature of one it has, make the
// gateway fetch the provider's keys at most once per keyRefetchInterval,
// not once per request.
func TestUnknownKeyIDsFetchKeysOncePerInterval(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	bearer := func(tok string) (*http.Response, string) {
		return rg.get(c, rg.gwTS.URL+"/api", map[string]string{"Authorization": "Bearer " + tok})
	}
	if res, body := bearer(rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient})); res.StatusCode != http.StatusOK {
		t.Fatalf("valid token: %d %s", res.StatusCode, body)
	}
	before := rg.hits["/jwks"].Load()
	claims := map[string]any{"iss": rg.idpTS.URL, "sub": "svc", "aud": rigClient, "exp": rg.clk.Now().Add(time.Hour).Unix()}
	forge := func(kid string) string { return devoidc.MintWith(devoidc.NewForeignSigner(kid), claims) }
	for i := range 20 {
		tok := forge(fmt.Sprint("made-up-", i))
		if i == 10 {
			rg.clk.Advance(keyRefetchInterval) // one more fetch is allowed
		}
		if res, body := bearer(tok); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token with an unknown key: %d %s", res.StatusCode, body)
		}
	}
	if res, body := bearer(forge(errKeyFetch)); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token whose kid reads like a fetch failure: %d %s", res.StatusCode, body)
	}
	if res, body := bearer(forge(rg.idp.KeyID())); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged signature of the provider's key: %d %s", res.StatusCode, body)
	}
	if n := rg.hits["/jwks"].Load() - before; n > 1 {
		t.Errorf("%d fetches of the provider's keys for 22 forged tokens over %s, want at most 1", n, keyRefetchInterval)
	}
}

// TestKeyRotation: a provider that replaces its signing key is followed
// without a restart, for bearer tokens, sign-ins and refreshes. A key that
// appears right after the gateway fetched the keys is picked up by a
// bearer token once keyRefetchInterval has passed, by a sign-in at once.
func TestKeyRotation(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK || body != "ok sub-alice" {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	bearer := func() (*http.Response, string) {
		tok := rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient})
		return rg.get(rg.browser(), rg.gwTS.URL+"/api", map[string]string{"Authorization": "Bearer " + tok})
	}
	rg.clk.Advance(keyRefetchInterval)
	rg.idp.RotateKey(false)
	if res, body := bearer(); res.StatusCode != http.StatusOK {
		t.Fatalf("bearer token with the new key: %d %s", res.StatusCode, body)
	}
	// The ID token expires: the refresh brings one signed with the new key.
	rg.clk.Advance(6 * time.Minute)
	if res, body := rg.get(noRedirects(c), rg.gwTS.URL+"/page", nil); res.StatusCode != http.StatusOK {
		t.Fatalf("refresh with the new key: %d %s", res.StatusCode, body)
	}
	if res, body := rg.signIn(rg.browser(), "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in with the new key: %d %s", res.StatusCode, body)
	}
	// Keys were just fetched for a new key: a bearer token with a newer
	// one waits for the interval...
	rg.clk.Advance(keyRefetchInterval)
	rg.idp.RotateKey(true)
	if res, body := bearer(); res.StatusCode != http.StatusOK {
		t.Fatalf("second new key: %d %s", res.StatusCode, body)
	}
	rg.idp.RotateKey(true)
	if res, body := bearer(); res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "fetched again at most every") {
		t.Fatalf("key newer than the last fetch, within the interval: %d %s", res.StatusCode, body)
	}
	rg.clk.Advance(keyRefetchInterval)
	if res, body := bearer(); res.StatusCode != http.StatusOK {
		t.Fatalf("same key after the interval: %d %s", res.StatusCode, body)
	}
	// ...but an ID token from the provider's token endpoint, which no
	// client can make up, has its key fetched at once.
	rg.idp.RotateKey(true)
	if res, body := rg.signIn(rg.browser(), "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in with a key newer than the last fetch, within the interval: %d %s", res.StatusCode, body)
	}
	if res, body := bearer(); res.StatusCode != http.StatusOK {
		t.Fatalf("bearer token with the key the sign-in fetched: %d %s", res.StatusCode, body)
	}
}

// TestKeyReplacedUnderItsID: a provider that rotates its key under the
// same key id. Sign-in (an ID token from the token endpoint) fetches the
// keys again and works at once; it used to be refused as a forgery on a
// known key until the hourly refetch.
func TestKeyReplacedUnderItsID(t *testing.T) {
	rg := newIDPRig(t)
	if res, body := rg.signIn(rg.browser(), "/page"); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	rg.idp.ReplaceKey()
	if res, body := rg.signIn(rg.browser(), "/page"); res.StatusCode != http.StatusOK || body != "ok sub-alice" {
		t.Fatalf("sign-in after the provider replaced its key under the same id: %d %s", res.StatusCode, body)
	}
}

// TestKeysUnreachable: when the provider's keys cannot be fetched, a token
// signed with a key the gateway does not have yet gets 502 (try again),
// at sign-in too, not a refusal of the token or of the sign-in.
func TestKeysUnreachable(t *testing.T) {
	rg := newIDPRig(t)
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/jwks" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	tok := rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient})
	res, body := rg.get(rg.browser(), rg.gwTS.URL+"/api", map[string]string{"Authorization": "Bearer " + tok})
	if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Error") != CodeProviderUnreachable {
		t.Fatalf("bearer token: %d %s", res.StatusCode, body)
	}
	res, body = rg.signIn(rg.browser(), "/page")
	if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Error") != CodeProviderUnreachable {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
}

// TestWithdrawnKeyStopsVerifying: keys are fetched again keyMaxAge after
// the last fetch, so a key the provider no longer publishes (withdrawn
// after a leak) stops being accepted, without a restart.
func TestWithdrawnKeyStopsVerifying(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	leaked := rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient, "exp": rg.clk.Now().Add(3 * time.Hour).Unix()})
	bearer := func() int {
		res, _ := rg.get(c, rg.gwTS.URL+"/api", map[string]string{"Authorization": "Bearer " + leaked})
		return res.StatusCode
	}
	if st := bearer(); st != http.StatusOK {
		t.Fatalf("valid token: %d", st)
	}
	rg.idp.RotateKey(false) // the old key is withdrawn
	if st := bearer(); st != http.StatusOK {
		t.Fatalf("right after the withdrawal (keys not fetched again yet): %d", st)
	}
	rg.clk.Advance(keyMaxAge)
	before := rg.hits["/jwks"].Load()
	bearer() // starts fetching the keys again in the background
	p := rg.svc.providers["corp"]
	p.mu.Lock()
	ks := p.found.keys
	p.mu.Unlock()
	ks.mu.Lock()
	pending := ks.pending
	ks.mu.Unlock()
	if pending != nil {
		<-pending
	}
	if n := rg.hits["/jwks"].Load() - before; n != 1 {
		t.Fatalf("%d fetches of keys %s old, want 1", n, keyMaxAge)
	}
	if st := bearer(); st != http.StatusUnauthorized {
		t.Fatalf("token signed with the withdrawn key: %d", st)
	}
}

// TestBearerKeyWaitEndsWithTheRequest: a bearer token that makes the
// gateway fetch the provider's keys waits for the fetch only as long as its
// client does; the fetch goes on for the requests that follow.
func TestBearerKeyWaitEndsWithTheRequest(t *testing.T) {
	rg := newIDPRig(t)
	started, release := rg.holdPath("/jwks")
	tok := rg.idp.Mint(map[string]any{"sub": "svc", "aud": rigClient})
	request := func(ctx context.Context) *http.Request {
		req := httptest.NewRequest(http.MethodGet, rg.gwTS.URL+"/api", nil).WithContext(ctx)
		req.Header.Set("Authorization", "Bearer "+tok)
		return req
	}
	ctx, cancel := context.WithCancel(context.Background())
	answer := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		rg.serve(rec, request(ctx))
		answer <- rec
	}()
	<-started
	cancel() // the client goes away
	select {
	case rec := <-answer:
		if rec.Code != http.StatusBadGateway {
			t.Errorf("request whose client went away: %d %s", rec.Code, rec.Body)
		}
	case <-time.After(5 * time.Second):
		close(release)
		<-answer
		t.Fatal("a request whose client went away still waits for the provider's keys")
	}
	close(release)
	rec := httptest.NewRecorder()
	rg.serve(rec, request(context.Background()))
	if rec.Code != http.StatusOK {
		t.Errorf("after the keys came: %d %s", rec.Code, rec.Body)
	}
	if n := rg.hits["/jwks"].Load(); n != 1 {
		t.Errorf("%d fetches of the keys, want 1", n)
	}
}
