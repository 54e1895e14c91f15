//go:build !agentonly

package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/shortskip"
)

// bindDomain is the cookie_domain of TestSessionBindingBrowser; its apps are
// app1, app2 and app3 under it, and example.test is the registrable domain
// a sibling host shares with them.
const bindDomain = "apps.example.test"

// startBindingGateway runs the real gateway over TLS (a test certificate for
// *.apps.example.test) with cookie_domain apps.example.test, the demo
// provider, the demo backend behind an agent and the apps app1, app2 and
// app3, which let alice (staff) and bob (guests) in. It returns the public
// port and the certificate's SPKI hash (for Chromium's
// --ignore-certificate-errors-spki-list).
func startBindingGateway(t *testing.T) (port, spki string) {
	t.Helper()
	dir := t.TempDir()
	cert, _, _, err := selfsigned.LoadOrCreate(filepath.Join(dir, "public"), []string{"*." + bindDomain})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	spki = base64.StdEncoding.EncodeToString(sum[:])

	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: demoapp.New(), ReadHeaderTimeout: 10 * time.Second}
	go backend.Serve(bl) //nolint:errcheck // ends with Close
	t.Cleanup(func() { backend.Close() })

	token := randomToken()
	gcfg := &config.Gateway{
		Public: config.Public{Addr: "127.0.0.1:0", TLS: config.TLSFiles{
			CertFile: filepath.Join(dir, "public", selfsigned.CertFile), KeyFile: filepath.Join(dir, "public", selfsigned.KeyFile)}},
		Tunnel:        config.Tunnel{Addr: "127.0.0.1:0", Tokens: []config.Token{{Token: token, Group: "demo"}}},
		DataDir:       dir,
		ShutdownGrace: time.Second,
	}
	idp, err := startDemoProvider(gcfg, dir, "http://"+bl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	gcfg.OIDC.CookieDomain = bindDomain
	for _, name := range []string{"app1", "app2", "app3"} {
		gcfg.Apps = append(gcfg.Apps, config.App{Name: name, Hosts: []string{name + "." + bindDomain},
			Backend: "http://" + bl.Addr().String(), Group: "demo", Preauth: config.PreauthOIDC, OIDCProvider: "demo",
			Policy: config.Policy{Groups: []string{"staff", "guests"}}})
	}
	if err := gcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	settings, err := gatewayConfig(gcfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	settings.AdminAddr = ""
	gw, err := gateway.New(settings)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Listen(); err != nil {
		t.Fatal(err)
	}
	gctx, stopGateway := context.WithCancel(context.Background())
	gdone := make(chan error, 1)
	go func() { gdone <- gw.Serve(gctx) }()
	t.Cleanup(func() {
		stopGateway()
		if err := <-gdone; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})

	acfg := &config.Agent{Gateway: gw.TunnelAddr().String(), GatewayCAFile: filepath.Join(dir, "tunnel-cert.pem"),
		Token: token, DataDir: filepath.Join(dir, "agent"), Name: "bind-agent", Connections: 1,
		Allow: []string{bl.Addr().String()}}
	if err := acfg.Validate(); err != nil {
		t.Fatal(err)
	}
	asettings, err := agentConfig(acfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(asettings)
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(context.Background())
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	t.Cleanup(func() {
		stopAgent()
		if err := <-adone; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-adone:
		t.Fatalf("agent ended before it connected: %v", err)
	}
	_, port, _ = net.SplitHostPort(gw.PublicAddr().String())
	return port, spki
}

// TestSessionBindingBrowser drives headless Chromium through the session
// binding of README "Sessions" against the real gateway: sign-in on app1;
// app2's first page load bound through app1 (/.sallyport/auth/bind) and
// back (/.sallyport/auth/bound), its second without a redirect; a session
// of another user that a sibling host planted (Domain=example.test, a
// longer Path) changes the user on no app; sign-out on app2 ends the
// session on app1 too.
func TestSessionBindingBrowser(t *testing.T) {
	shortskip.Long(t, "drives headless Chromium against the gateway")
	exe := chromiumPath(t)
	port, spki := startBindingGateway(t)
	at := func(app, path string) string { return "https://" + app + "." + bindDomain + ":" + port + path }

	opts := browserOptions(t, exe,
		chromedp.Flag("host-resolver-rules", "MAP *."+bindDomain+" 127.0.0.1"),
		// Accept the test certificate, and no other.
		chromedp.Flag("ignore-certificate-errors-spki-list", spki))
	// Bounds a hung browser; no step is timed.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	// The documents the browser loads (redirects too), as app/path.
	var mu sync.Mutex
	var docs []string
	short := func(u string) string {
		u, _, _ = strings.Cut(strings.TrimPrefix(u, "https://"), "?")
		return strings.Replace(u, "."+bindDomain+":"+port, "", 1)
	}
	if err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && e.Type == network.ResourceTypeDocument {
			mu.Lock()
			docs = append(docs, short(e.Request.URL))
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("browser: %v", err)
	}
	loads := func() []string {
		mu.Lock()
		defer mu.Unlock()
		d := docs
		docs = nil
		return d
	}
	step := func(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("browser, %s: %v (at %s)", what, err, browserLocation(ctx))
		}
	}
	signIn := func(ctx context.Context, user, password string) {
		t.Helper()
		step(ctx, "sign in as "+user, chromedp.WaitVisible("#password"), chromedp.SetValue("#username", user),
			chromedp.SendKeys("#password", password), chromedp.Click("#signin"), chromedp.WaitVisible("#identity"))
	}
	email := func(ctx context.Context) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text("#id-email"))
		if err != nil {
			t.Fatalf("browser, the signed-in user at %s: %v", browserLocation(ctx), err)
		}
		return strings.TrimSpace(v)
	}
	// echoed is who the backend's /echo saw at the page loaded.
	echoed := func(ctx context.Context) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
			try { return (JSON.parse(document.body.innerText).headers["X-Sallyport-Email"] || ["(nobody)"])[0]; }
			catch (e) { return "(not the echo: " + document.title + ")"; }
		})()`))
		if err != nil {
			t.Fatalf("browser, the echo at %s: %v", browserLocation(ctx), err)
		}
		return v
	}

	// Sign in on app1: back on the page, as alice.
	step(bctx, "open app1", chromedp.Navigate(at("app1", "/?from=start")))
	signIn(bctx, "alice", "alice")
	if got, loc := email(bctx), browserLocation(bctx); got != "alice@example.com" || loc != at("app1", "/?from=start") {
		t.Fatalf("after sign-in on app1: %s as %q", loc, got)
	}
	loads()

	// The first page load on app2 is vouched for by app1.
	step(bctx, "open app2", chromedp.Navigate(at("app2", "/?from=app1")), chromedp.WaitVisible("#identity"))
	want := []string{"app2/", "app1/.sallyport/auth/bind", "app2/.sallyport/auth/bound", "app2/"}
	if got, loc, d := email(bctx), browserLocation(bctx), loads(); got != "alice@example.com" || loc != at("app2", "/?from=app1") || !slices.Equal(d, want) {
		t.Errorf("first visit of app2: %s as %q through %q; want %s as alice@example.com through %q", loc, got, d, at("app2", "/?from=app1"), want)
	}
	// The second is bound already.
	step(bctx, "open app2 again", chromedp.Navigate(at("app2", "/?again=1")), chromedp.WaitVisible("#identity"))
	if got, d := email(bctx), loads(); got != "alice@example.com" || !slices.Equal(d, []string{"app2/"}) {
		t.Errorf("second visit of app2: as %q through %q; want alice@example.com without a redirect", got, d)
	}

	// bob signs in on app3 in a browser context of his own, and a sibling
	// host (any host under example.test) plants his session cookies in
	// alice's browser with Domain=example.test and Path=/echo, which
	// Chromium sends before the gateway's Path=/ cookie there.
	mctx, cancelBob := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer cancelBob()
	step(mctx, "open app3 as bob", chromedp.Navigate(at("app3", "/")))
	signIn(mctx, "bob", "bob")
	if got := email(mctx); got != "bob@example.org" {
		t.Fatalf("bob on app3: signed in as %q", got)
	}
	jar, err := chromedp.Call(mctx, network.GetCookies, network.GetCookiesParams{URLs: []string{at("app3", "/")}})
	if err != nil {
		t.Fatalf("browser, bob's cookies: %v", err)
	}
	cancelBob()
	planted := 0
	for _, c := range jar.Cookies {
		if !strings.HasPrefix(c.Name, "__Secure-sallyport_session") {
			continue
		}
		yes := true
		if _, err := chromedp.Call(bctx, network.SetCookie, network.SetCookieParams{Name: c.Name, Value: c.Value,
			Domain: ".example.test", Path: "/echo", Secure: &yes, HTTPOnly: &yes, SameSite: network.CookieSameSiteLax}); err != nil {
			t.Fatalf("browser, plant %s: %v", c.Name, err)
		}
		planted++
	}
	if planted == 0 {
		t.Fatalf("bob's browser holds no session cookie: %d cookies", len(jar.Cookies))
	}
	// Chromium drops a cookie it refuses without an error: check that
	// alice's browser sends bob's session at /echo.
	sent, err := chromedp.Call(bctx, network.GetCookies, network.GetCookiesParams{URLs: []string{at("app1", "/echo/x")}})
	if err != nil {
		t.Fatalf("browser, alice's cookies: %v", err)
	}
	if n := slices.IndexFunc(sent.Cookies, func(c *network.Cookie) bool { return c.Path == "/echo" && c.Domain == ".example.test" }); n < 0 {
		t.Fatalf("Chromium did not keep the planted cookies: %d cookies sent at /echo", len(sent.Cookies))
	}
	// alice stays alice at that path on the hosts she uses, and on app3,
	// bob's session's home, which she opens there first (bound through
	// app1: the binding's own paths do not get the planted cookie).
	for _, app := range []string{"app1", "app2", "app3"} {
		step(bctx, "open "+app+"/echo/x", chromedp.Navigate(at(app, "/echo/x")))
		if got, d := echoed(bctx), loads(); got != "alice@example.com" {
			t.Errorf("%s/echo/x with bob's session planted at /echo: the backend saw %q (through %q); want alice@example.com", app, got, d)
		}
	}

	// Sign-out on app2 ends the session on app1 too.
	step(bctx, "sign out on app2", chromedp.Navigate(at("app2", "/.sallyport/auth/logout")), chromedp.WaitVisible("h1"))
	if h, err := chromedp.Run(bctx, chromedp.Text("h1")); err != nil || strings.TrimSpace(h) != "Signed out" {
		t.Errorf("sign-out page on app2: %q, %v", h, err)
	}
	step(bctx, "open app1 after sign-out", chromedp.Navigate(at("app1", "/")), chromedp.WaitVisible("#password"))
	if loc := browserLocation(bctx); !strings.Contains(loc, "/authorize?") {
		t.Errorf("app1 after sign-out on app2: at %s, not the provider's sign-in page", loc)
	}
	cancelBrowser()
}

// browserLocation is the browser's address, or why it is unknown.
func browserLocation(ctx context.Context) string {
	v, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return v
}
