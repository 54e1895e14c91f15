//go:build !agentonly

package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/shortskip"
	"github.com/sallyport/sallyport/internal/testrig"
)

// startDemo runs the demo on a free loopback port until the test ends and
// returns its public URL.
func startDemo(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	urls := make(chan string, 1)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runDemo(ctx, "127.0.0.1:0", zap.NewNop(), out, func(u string) { urls <- u }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	})
	select {
	case u := <-urls:
		if !strings.Contains(out.String(), privateURL(u)) || !strings.Contains(out.String(), "alice / alice") {
			t.Errorf("the demo did not print the protected app and its user:\n%s", out)
		}
		return u
	case err := <-done:
		t.Fatalf("demo ended early: %v\n%s", err, out)
	}
	return ""
}

// loopbackClient dials 127.0.0.1 for every *.localhost host, as browsers do.
func loopbackClient(t *testing.T) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}}
	t.Cleanup(tr.CloseIdleConnections)
	jar, _ := cookiejar.New(nil)
	return &http.Client{Transport: tr, Jar: jar}
}

// TestDemoProtectedApp signs in to the demo's protected app as a browser
// would, with a cookie jar: alice gets the page with her identity, bob a
// 403 that names him.
func TestDemoProtectedApp(t *testing.T) {
	base := startDemo(t)
	private := privateURL(base)
	for _, tc := range []struct {
		user, password string
		status         int
		want           string
	}{
		{"alice", "alice", 200, `<dd id="id-email">alice@example.com</dd>`},
		{"bob", "bob", 403, "bob@example.org"},
	} {
		c := loopbackClient(t)
		res, err := c.Get(private + "/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if !strings.HasSuffix(res.Request.URL.Path, "/authorize") {
			t.Fatalf("not sent to the provider: %s", res.Request.URL)
		}
		form := url.Values{}
		for k, v := range res.Request.URL.Query() {
			form[k] = v
		}
		form.Set("username", tc.user)
		form.Set("password", tc.password)
		authorize := *res.Request.URL
		authorize.RawQuery = ""
		res, err = c.PostForm(authorize.String(), form)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
			t.Fatalf("%s: %d, page without %q:\n%.2000s", tc.user, res.StatusCode, tc.want, b)
		}
	}
	// The open app stays open; its health check path is public on the
	// protected one.
	c := loopbackClient(t)
	for _, u := range []string{base + "/healthz", private + "/healthz"} {
		res, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d", u, res.StatusCode)
		}
	}
}

// chromiumPath finds Debian's chromium. `make chromium` (run by .ci/run)
// installs it; under CI a missing browser fails the test rather than
// skipping it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("SALLYPORT_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	shortskip.Unsupported(t, "chromium is not installed: run `make chromium` (apt-get install -y chromium) before the tests; .ci/run does")
	return ""
}

// browserOptions start headless Chromium (exe) with a profile of its own
// that the test removes, quiet (no QUIC, sync, updates or first-run
// pages), and with extra. Its TMPDIR is the test's too: Chromium keeps its
// profile lock's socket in a directory of its own there
// (org.chromium.Chromium.*), which a browser that is killed, as the tests'
// cancel does, never removes (TestBrowserLeavesNoTempDir).
func browserOptions(t *testing.T, exe string, extra ...chromedp.ExecAllocatorOption) []chromedp.ExecAllocatorOption {
	return append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Env("TMPDIR=" + t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}, extra...)
}

// TestDemoBrowserSignIn drives headless Chromium through the demo
// provider's sign-in page to the protected app.
func TestDemoBrowserSignIn(t *testing.T) {
	testrig.SkipShort(t, "drives headless Chromium")
	exe := chromiumPath(t)
	base := startDemo(t)
	private := privateURL(base)

	// *.localhost is loopback anyway; pin it to the IPv4 listener.
	opts := browserOptions(t, exe, chromedp.Flag("host-resolver-rules", "MAP "+demoPrivateHost+" 127.0.0.1"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("browser, %s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("browser, text of %s: %v", sel, err)
		}
		return strings.TrimSpace(v)
	}
	location := func() string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatalf("browser, location: %v", err)
		}
		return v
	}

	step("open the protected app", chromedp.Navigate(private+"/?from=browser"), chromedp.WaitVisible("#password"))
	if h := text("h1"); h != "Sign in" {
		t.Fatalf("expected the provider's sign-in page, got %q at %s", h, location())
	}
	step("sign in", chromedp.SetValue("#username", "alice"), chromedp.SendKeys("#password", "alice"),
		chromedp.Click("#signin"), chromedp.WaitVisible("#identity"))
	if email, loc := text("#id-email"), location(); email != "alice@example.com" || loc != private+"/?from=browser" {
		t.Fatalf("after sign-in: %s showing %q", loc, email)
	}
	// Sign out, and the app asks for sign-in again.
	step("sign out", chromedp.Click(`a[href="/.sallyport/auth/logout"]`), chromedp.WaitVisible("h1"))
	if h := text("h1"); h != "Signed out" {
		t.Fatalf("sign-out page: %q", h)
	}
	step("open again", chromedp.Navigate(private+"/"), chromedp.WaitVisible("#password"))
	if loc := location(); !strings.Contains(loc, "/authorize?") {
		t.Fatalf("after sign-out: %s", loc)
	}
	cancelBrowser()
}
