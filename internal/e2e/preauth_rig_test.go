package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/devoidc"
	"github.com/sallyport/sallyport/internal/testrig"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Test users of the in-process provider.
var (
	alice = devoidc.User{Username: "alice", Password: "alice-pw", Subject: "sub-alice", Email: "alice@example.com",
		Name: "Alice", Groups: []string{"staff", "a,b"}}
	mallory = devoidc.User{Username: "mallory", Password: "mallory-pw", Subject: "sub-mallory", Email: "mallory@evil.example"}
	// many is in so many groups that the session needs several cookies.
	many = devoidc.User{Username: "many", Password: "many-pw", Subject: "sub-many", Email: "many@example.com", Groups: manyGroups()}
)

func manyGroups() []string {
	gs := make([]string, 150)
	for i := range gs {
		gs[i] = fmt.Sprintf("%08d-1111-2222-3333-444455556666", i)
	}
	return gs
}

const (
	clientID     = "sallyport-test"
	clientSecret = "test-secret"
)

// authRig is a gateway with pre-authentication against an in-process OIDC
// provider, an agent, and a backend that echoes what it received.
type authRig struct {
	*testrig.Rig
	t     *testing.T
	idp   *devoidc.Provider
	idpTS *httptest.Server
	clock *fakeClock
	keys  *assertion.KeySet
	agent *testrig.Agent
	logs  *observer.ObservedLogs // the gateway's log at info level
	// idpHold, when set, names a path of the provider whose requests wait
	// (holdIDPPath).
	idpHold atomic.Pointer[idpHold]
}

// idpHold is a provider path whose requests tell arrived and then wait
// for release.
type idpHold struct {
	path             string
	arrived, release chan struct{}
}

// holdIDPPath makes the provider hold each request for path: arrived gets
// a value as one comes (it keeps one without a reader), and the requests
// go on once release is called (at the test's end at the latest, before
// the provider stops).
func (a *authRig) holdIDPPath(path string) (arrived <-chan struct{}, release func()) {
	h := &idpHold{path: path, arrived: make(chan struct{}, 1), release: make(chan struct{})}
	a.idpHold.Store(h)
	var once sync.Once
	release = func() { once.Do(func() { close(h.release) }) }
	a.t.Cleanup(release)
	return h.arrived, release
}

// echoed is what the echo backend saw.
type echoed struct {
	Path     string      `json:"path"` // escaped
	Query    string      `json:"query"`
	Headers  http.Header `json:"headers"`
	Body     string      `json:"body"`
	Trailers http.Header `json:"trailers"`
}

func echoBackend(t *testing.T) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/hints" {
			w.Header().Set("Link", hintStyle)
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Headers: r.Header,
			Body: string(body), Trailers: r.Trailer})
	}))
	t.Cleanup(ts.Close)
	return ts
}

// newAuthRig starts everything. Routes: "app" (preauth oidc, policy pol,
// public path /public) on host 127.0.0.1, "open" (no preauth) on open.test.
// gw edits the gateway's config.
func newAuthRig(t *testing.T, pol preauth.Policy, edit func(*preauth.Config), gw ...func(*gateway.Config)) *authRig {
	t.Helper()
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	a := &authRig{t: t, clock: clock}
	a.idpTS = httptest.NewUnstartedServer(nil)
	a.idpTS.Start()
	t.Cleanup(a.idpTS.Close)
	a.idp = devoidc.New(devoidc.Config{
		Issuer: a.idpTS.URL, Users: []devoidc.User{alice, mallory, many},
		Clients: []devoidc.Client{{ID: clientID, Secret: clientSecret}}, TokenLifetime: 5 * time.Minute, Now: clock.Now,
	})
	idp := a.idp.Handler()
	a.idpTS.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := a.idpHold.Load(); h != nil && r.URL.Path == h.path {
			select {
			case h.arrived <- struct{}{}:
			default:
			}
			<-h.release
		}
		idp.ServeHTTP(w, r)
	})
	keys, err := assertion.NewKeySet(assertion.KeySetConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	a.keys = keys
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := preauth.Config{
		Providers: []preauth.ProviderConfig{{Name: "corp", Issuer: a.idpTS.URL, ClientID: clientID, ClientSecret: clientSecret,
			Scopes: []string{"openid", "email", "profile", "groups"}}},
		CookieKey: make([]byte, preauth.KeySize), Keys: keys, Now: clock.Now,
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
	}
	if edit != nil {
		edit(&cfg)
	}
	svc, err := preauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	backend := echoBackend(t)
	if pol.Provider == "" {
		pol.Provider = "corp"
	}
	if pol.PublicPaths == nil {
		pol.PublicPaths = []string{"/public"}
	}
	core, logs := observer.New(zap.InfoLevel)
	a.logs = logs
	a.Rig = testrig.New(t, testrig.Options{
		Log: zap.New(core),
		Routes: []gateway.Route{
			{App: "app", Hosts: []string{"127.0.0.1"}, Backend: testrig.MustURL(t, backend.URL), Preauth: &pol},
			{App: "open", Hosts: []string{"open.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
		Gateway: func(c *gateway.Config) {
			c.Preauth = svc
			for _, f := range gw {
				f(c)
			}
		},
	})
	a.agent = a.StartAgent(nil)
	return a
}

// browser is a client with a cookie jar that follows redirects.
func (a *authRig) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	c := a.Client()
	c.Jar = jar
	return c
}

// noRedirect is a client that stops at the first redirect.
func noRedirect(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// get sends GET rawURL (joined to the rig URL when it starts with "/")
// with headers, and returns the response with its body read.
func getH(t *testing.T, c *http.Client, rawURL string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(t, c, req)
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

// stopAtCallback signs browser c in as alice from /, but stops at the
// provider's redirect to the gateway's callback: it returns the callback
// URL and a client of c's cookies that does not follow redirects.
func (a *authRig) stopAtCallback(c *http.Client) (callback string, nr *http.Client) {
	a.t.Helper()
	res, _ := getH(a.t, c, a.URL+"/", nil)
	nr = noRedirect(c)
	res, _, err := devoidc.SubmitSignIn(nr, res.Request.URL, alice)
	if err != nil {
		a.t.Fatal(err)
	}
	callback = res.Header.Get("Location")
	if !strings.HasPrefix(callback, a.URL+preauth.CallbackPath+"?") {
		a.t.Fatalf("provider redirected to %q", callback)
	}
	return callback, nr
}

// signIn signs the browser in as u starting at path; it returns the final
// response (the app's answer) and its body.
func (a *authRig) signIn(c *http.Client, path string, u devoidc.User) (*http.Response, string) {
	a.t.Helper()
	res, body := getH(a.t, c, a.URL+path, nil)
	if res.StatusCode != 200 || !strings.Contains(body, "Development OIDC provider") {
		a.t.Fatalf("GET %s: want the provider's sign-in page, got %d %s", path, res.StatusCode, body)
	}
	res, body, err := devoidc.SubmitSignIn(c, res.Request.URL, u)
	if err != nil {
		a.t.Fatal(err)
	}
	return res, body
}

func decodeEchoed(t *testing.T, body string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("backend answer %q: %v", body, err)
	}
	return e
}

// jwks fetches the gateway's published assertion keys.
func (a *authRig) jwks(c *http.Client) *jose.JSONWebKeySet {
	a.t.Helper()
	res, body := getH(a.t, c, a.URL+assertion.JWKSPath, nil)
	if res.StatusCode != 200 {
		a.t.Fatalf("JWKS: %d %s", res.StatusCode, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		a.t.Fatal(err)
	}
	return &set
}

// sessionCookie returns the browser's session cookie for the rig.
func (a *authRig) sessionCookie(c *http.Client) *http.Cookie {
	u, _ := url.Parse(a.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "sallyport_session" {
			return ck
		}
	}
	return nil
}
