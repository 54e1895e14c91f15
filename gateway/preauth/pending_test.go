package preauth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// preLogin lists the pre-login cookies that the browser c sends to the
// callback, and the size of its Cookie header there.
func (rg *idpRig) preLogin(c *http.Client) (names []string, header int) {
	u, err := url.Parse(rg.gwTS.URL + callbackPath)
	if err != nil {
		rg.t.Fatal(err)
	}
	for _, ck := range c.Jar.Cookies(u) {
		header += len(ck.Name) + len(ck.Value) + len("=; ")
		if strings.HasPrefix(ck.Name, loginCookiePfx) {
			names = append(names, ck.Name)
		}
	}
	return names, header
}

// startOf returns the pre-login cookie's name of the sign-in that
// redirected to authorize.
func startOf(t *testing.T, authorize string) string {
	t.Helper()
	u, err := url.Parse(authorize)
	if err != nil {
		t.Fatal(err)
	}
	return loginCookiePfx + stateID(u.Query().Get("state"))
}

// TestPreLoginCookiesBounded: every page load without a session starts a
// sign-in with a pre-login cookie of its own, which the browser sends to
// the callback for 10 minutes. A user who reloaded a page, or restored many
// tabs, with long addresses made the callback's Cookie header outgrow the
// gateway's head limit (64 KiB: 431) and browsers' limits, and no sign-in
// could complete for 10 minutes. A browser keeps the newest
// maxPendingSignIns: the oldest is forgotten, and each of the others still
// completes, at its own address.
func TestPreLoginCookiesBounded(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	query := "?q=" + strings.Repeat("x", 2000)
	var starts []string // where each sign-in sent the browser
	for i := range 20 {
		rg.clk.Advance(time.Second)
		res, body := rg.get(noRedirects(c), rg.gwTS.URL+fmt.Sprintf("/tab%d%s", i, query), nil)
		if res.StatusCode != http.StatusFound {
			t.Fatalf("page load %d: %d %s", i, res.StatusCode, body)
		}
		starts = append(starts, res.Header.Get("Location"))
	}
	names, size := rg.preLogin(c)
	if len(names) != maxPendingSignIns || size > 40<<10 {
		t.Fatalf("after 20 page loads the callback gets %d pre-login cookies in %d bytes; want %d, within 40 KiB",
			len(names), size, maxPendingSignIns)
	}
	if res, body := rg.finish(c, starts[0]); res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Error") != CodeStateMismatch {
		t.Errorf("the oldest sign-in, forgotten: %d %s", res.StatusCode, body)
	}
	for i := len(starts) - 1; i >= len(starts)-maxPendingSignIns; i-- {
		res, body := rg.finish(c, starts[i])
		if want := fmt.Sprintf("/tab%d", i); res.StatusCode != http.StatusOK || res.Request.URL.Path != want || res.Request.URL.RawQuery != query[1:] {
			t.Errorf("sign-in %d: %d at %.40s…, want 200 at %s%.20s…: %s", i, res.StatusCode, res.Request.URL, want, query, body)
		}
	}
	if names, _ := rg.preLogin(c); len(names) != 0 {
		t.Errorf("pre-login cookies left after every sign-in ended: %v", names)
	}
	u, _ := url.Parse(rg.gwTS.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == pendingCookie {
			t.Errorf("%s left after every sign-in ended: %q", ck.Name, ck.Value)
		}
	}
}

// TestPreLoginCookiesBoundedAtCallback: sign-ins that start at the same
// moment each read the list of pending sign-ins before the others wrote it,
// so their cookies may outnumber the bound. The callback, which receives
// them all, forgets the oldest beyond maxPendingSignIns.
func TestPreLoginCookiesBoundedAtCallback(t *testing.T) {
	rg := newIDPRig(t)
	c := rg.browser()
	gw, _ := url.Parse(rg.gwTS.URL)
	fresh := noRedirects(&http.Client{Transport: rg.gwTS.Client().Transport})
	var starts []string
	for i := range 12 {
		rg.clk.Advance(time.Second)
		res, _ := rg.get(fresh, rg.gwTS.URL+fmt.Sprintf("/tab%d", i), nil) // a request without the list
		var set []*http.Cookie
		for _, ck := range res.Cookies() {
			if strings.HasPrefix(ck.Name, loginCookiePfx) {
				set = append(set, ck)
			}
		}
		if len(set) != 1 {
			t.Fatalf("start %d set %v", i, res.Header.Values("Set-Cookie"))
		}
		c.Jar.SetCookies(gw, set)
		starts = append(starts, res.Header.Get("Location"))
	}
	// And one that cannot complete a sign-in (from another key, say).
	c.Jar.SetCookies(gw, []*http.Cookie{{Name: loginCookiePfx + "0123456789abcdef", Value: "v1.junk", Path: callbackPath}})
	if names, _ := rg.preLogin(c); len(names) != 13 {
		t.Fatalf("%d pre-login cookies, want 13", len(names))
	}
	if res, body := rg.finish(c, starts[11]); res.StatusCode != http.StatusOK || res.Request.URL.Path != "/tab11" {
		t.Fatalf("the newest sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
	names, _ := rg.preLogin(c)
	want := map[string]bool{}
	for _, a := range starts[11-maxPendingSignIns : 11] {
		want[startOf(t, a)] = true
	}
	for _, n := range names {
		if !want[n] {
			t.Errorf("kept %s, which is not among the %d newest", n, maxPendingSignIns)
		}
	}
	if len(names) != maxPendingSignIns {
		t.Errorf("%d pre-login cookies after the callback, want %d", len(names), maxPendingSignIns)
	}
}

// TestTwoTabsSignIn: sign-ins started in two tabs, one after the other or
// at the same moment, both complete, in either order.
func TestTwoTabsSignIn(t *testing.T) {
	rg := newIDPRig(t)
	start := func(c *http.Client, path string) string {
		res, body := rg.get(noRedirects(c), rg.gwTS.URL+path, nil)
		if res.StatusCode != http.StatusFound {
			t.Errorf("GET %s: %d %s", path, res.StatusCode, body)
		}
		return res.Header.Get("Location")
	}
	for _, together := range []bool{false, true} {
		c := rg.browser()
		var a, b string
		if together {
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); a = start(c, "/a") }()
			go func() { defer wg.Done(); b = start(c, "/b") }()
			wg.Wait()
		} else {
			a, b = start(c, "/a"), start(c, "/b")
		}
		for _, tab := range []struct{ authorize, path string }{{b, "/b"}, {a, "/a"}} {
			if res, body := rg.finish(c, tab.authorize); res.StatusCode != http.StatusOK || res.Request.URL.Path != tab.path {
				t.Errorf("together %v: tab %s: %d at %s: %s", together, tab.path, res.StatusCode, res.Request.URL, body)
			}
		}
	}
}

// TestPendingCookieRead: the list of pending sign-ins comes from the
// browser; what does not parse, and what has ended, is left out, and the
// rest is read oldest first, at most twice the bound.
func TestPendingCookieRead(t *testing.T) {
	rg := newIDPRig(t)
	now := rg.clk.Now().Unix()
	id := func(i int) string { return fmt.Sprintf("%016x", i) }
	var long []string
	for i := range 40 {
		long = append(long, fmt.Sprintf("%s:%d", id(i), now+int64(i)+1))
	}
	skew := int64(refreshClockSkew / time.Second)
	for _, tc := range []struct {
		value string
		want  []string
	}{
		{"", nil},
		{fmt.Sprintf("%s:%d.%s:%d", id(2), now+20, id(1), now+10), []string{id(1), id(2)}},
		{fmt.Sprintf("%s:%d.%s:%d", id(1), now, id(2), now-5), nil}, // ended
		{fmt.Sprintf("ABCDEF0123456789:%d.%s:x.%s.:%d.%s:%d:9.%s:%d", now+1, id(1), id(2), now+1, id(3), now+1, id(4), now+1),
			[]string{id(4)}},
		{fmt.Sprintf("../../x:%d.%s:99999999999999999999", now+1, id(1)), nil},
		// Planted entries that would outlive any real pre-login cookie
		// (started by a replica whose clock is ahead, at most
		// refreshClockSkew).
		{fmt.Sprintf("%s:%d.%s:%d", id(1), now+loginCookieLife+skew+1, id(2), now+loginCookieLife+skew), []string{id(2)}},
		{strings.Join(long, "."), func() (w []string) {
			for i := range 2 * maxPendingSignIns {
				w = append(w, id(i))
			}
			return w
		}()},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://app.test/", nil)
		r.AddCookie(&http.Cookie{Name: pendingCookie, Value: tc.value})
		var got []string
		for _, p := range rg.svc.readPending(r) {
			got = append(got, p.id)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%.60q: read %v, want %v", tc.value, got, tc.want)
		}
	}
}
