package preauth

import (
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/devoidc"
)

// idpRig is a Service in front of a development OIDC provider, both on
// loopback, sharing a fake clock. Its gateway answers like the real one
// (ServeEndpoint, then Authorize) with "ok <subject>" for the app, and an
// *Error as its status, X-Error: code and "message | error".
type idpRig struct {
	t     *testing.T
	clk   *clock.Fake
	idp   *devoidc.Provider
	idpTS *httptest.Server
	gwTS  *httptest.Server
	svc   *Service
	pol   Policy
	user  devoidc.User           // who signIn signs in
	logs  *observer.ObservedLogs // the service's log, info and up
	// idpAhead is how far the provider's clock is ahead of the gateway's
	// (a time.Duration; negative: behind).
	idpAhead atomic.Int64
	// hits counts the provider's requests by path.
	hits map[string]*atomic.Int64
	// hook, if set, answers a provider request instead of the provider
	// when it returns true.
	hook atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

const (
	discoveryPath = "/.well-known/openid-configuration"
	rigClient     = "rig-client"
)

var rigUser = devoidc.User{Username: "alice", Password: "alice-pw", Subject: "sub-alice", Email: "alice@example.com"}

// newIDPRig starts a rig whose provider has the user u, rigUser if none.
func newIDPRig(t *testing.T, u ...devoidc.User) *idpRig {
	t.Helper()
	return newIDPRigWith(t, nil, u...)
}

// newIDPRigWith is newIDPRig whose provider's config is changed by edit
// first (when not nil).
func newIDPRigWith(t *testing.T, edit func(*devoidc.Config), u ...devoidc.User) *idpRig {
	t.Helper()
	rg := &idpRig{t: t, clk: clock.NewFake(time.Now().Truncate(time.Second)), hits: map[string]*atomic.Int64{}, user: rigUser}
	if len(u) > 0 {
		rg.user = u[0]
	}
	for _, p := range []string{discoveryPath, "/jwks", "/token", "/authorize"} {
		rg.hits[p] = new(atomic.Int64)
	}
	rg.idpTS = httptest.NewUnstartedServer(nil)
	rg.idpTS.Start()
	t.Cleanup(rg.idpTS.Close)
	idpCfg := devoidc.Config{Issuer: rg.idpTS.URL, Users: []devoidc.User{rg.user},
		Clients: []devoidc.Client{{ID: rigClient, Secret: "s"}}, TokenLifetime: 5 * time.Minute,
		Now: func() time.Time { return rg.clk.Now().Add(time.Duration(rg.idpAhead.Load())) }}
	if edit != nil {
		edit(&idpCfg)
	}
	rg.idp = devoidc.New(idpCfg)
	h := rg.idp.Handler()
	rg.idpTS.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := rg.hits[r.URL.Path]; c != nil {
			c.Add(1)
		}
		if f := rg.hook.Load(); f != nil && (*f)(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
	keys, err := assertion.NewKeySet(assertion.KeySetConfig{Now: rg.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	core, logs := observer.New(zap.InfoLevel)
	rg.logs = logs
	rg.svc, err = New(Config{
		Log:       zap.New(core),
		Providers: []ProviderConfig{{Name: "corp", Issuer: rg.idpTS.URL, ClientID: rigClient, ClientSecret: "s"}},
		CookieKey: make([]byte, KeySize), Keys: keys, Now: rg.clk.Now,
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	rg.pol = Policy{Provider: "corp"}
	rg.gwTS = httptest.NewServer(http.HandlerFunc(rg.serve))
	t.Cleanup(rg.gwTS.Close)
	return rg
}

// setHook makes f answer the provider's requests first; nil removes it.
func (rg *idpRig) setHook(f func(w http.ResponseWriter, r *http.Request) bool) {
	if f == nil {
		rg.hook.Store(nil)
		return
	}
	rg.hook.Store(&f)
}

// holdPath makes the provider hold each request for path: started gets a
// value as one arrives (it holds one without a reader), and the request
// goes on once release is closed.
func (rg *idpRig) holdPath(path string) (started chan struct{}, release chan struct{}) {
	started, release = make(chan struct{}, 1), make(chan struct{})
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == path {
			started <- struct{}{}
			<-release
		}
		return false
	})
	return started, release
}

func (rg *idpRig) serve(w http.ResponseWriter, r *http.Request) {
	if handled, err := rg.svc.ServeEndpoint(w, r, r.URL.Path); handled {
		rigAnswer(w, err)
		return
	}
	id, err := rg.svc.Authorize(w, r, &rg.pol, r.URL.Path)
	if err != nil {
		rigAnswer(w, err)
		return
	}
	who := ""
	if id != nil {
		who = id.Subject
	}
	_, _ = io.WriteString(w, "ok "+who)
}

func rigAnswer(w http.ResponseWriter, err error) {
	var pe *Error
	switch {
	case err == nil || errors.Is(err, ErrHandled):
	case errors.As(err, &pe):
		w.Header().Set("X-Error", pe.Code)
		w.Header().Set("X-Link", pe.LinkURL)
		w.WriteHeader(pe.Status)
		_, _ = io.WriteString(w, pe.Msg+" | "+pe.Error())
	default:
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, err.Error())
	}
}

// browser is a client with a cookie jar that follows redirects.
func (rg *idpRig) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Transport: rg.gwTS.Client().Transport, Timeout: 30 * time.Second}
}

// noRedirects is c stopping at the first redirect.
func noRedirects(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// get sends GET u with the headers hdr and reads the answer.
func (rg *idpRig) get(c *http.Client, u string, hdr map[string]string) (*http.Response, string) {
	rg.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		rg.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		rg.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

// signIn opens path in the browser c and signs in at the provider's page;
// it returns the answer the browser ends at.
func (rg *idpRig) signIn(c *http.Client, path string) (*http.Response, string) {
	rg.t.Helper()
	res, body := rg.get(c, rg.gwTS.URL+path, nil)
	if !strings.Contains(body, "Development OIDC provider") {
		rg.t.Fatalf("GET %s: want the provider's sign-in page, got %d %s", path, res.StatusCode, body)
	}
	return rg.finish(c, res.Request.URL.String())
}

// finish signs in at the provider's page authorize (the address a sign-in
// redirected to) in the browser c; it returns the answer the browser ends
// at.
func (rg *idpRig) finish(c *http.Client, authorize string) (*http.Response, string) {
	rg.t.Helper()
	u, err := url.Parse(authorize)
	if err != nil {
		rg.t.Fatal(err)
	}
	res, body, err := devoidc.SubmitSignIn(c, u, rg.user)
	if err != nil {
		rg.t.Fatal(err)
	}
	return res, body
}
