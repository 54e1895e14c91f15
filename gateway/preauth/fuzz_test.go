package preauth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/assertion"
)

// FuzzSafeReturn: a return path safeReturn accepts, sent as the callback's
// redirect, never leads a browser to another origin. The browser's reading
// of Location is approximated: tabs and line breaks are dropped and a
// backslash is a slash, as URL parsers in browsers do for http(s).
func FuzzSafeReturn(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "/a/b#x", "/a?next=//evil", "//evil.example", `/\evil.example`,
		"/.//evil.example", "/..//evil.example", "/%2F%2Fevil.example", "/\t/evil.example", "https://evil.example/",
		"/a/../../evil", "/@evil.example", "/a;b", "/?//evil", "/#//evil", "/%5Cevil.example", "/a\u3002b"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://app.example/.sallyport/auth/callback?code=c&state=s")
	f.Fuzz(func(t *testing.T, ret string) {
		if !safeReturn(ret) {
			return
		}
		r := httptest.NewRequest("GET", base.String(), nil)
		w := httptest.NewRecorder()
		http.Redirect(w, r, ret, http.StatusFound)
		loc := w.Header().Get("Location")
		browser := strings.NewReplacer("\t", "", "\n", "", "\r", "", `\`, "/").Replace(loc)
		u, err := url.Parse(browser)
		if err != nil {
			t.Fatalf("safeReturn(%q): Location %q does not parse: %v", ret, loc, err)
		}
		if got := base.ResolveReference(u); got.Scheme != "https" || got.Host != "app.example" || got.User != nil {
			t.Fatalf("safeReturn(%q): Location %q leads to %s", ret, loc, got)
		}
	})
}

// FuzzStripGatewayCookies: whatever the Cookie header, no cookie the
// backend parses from what is left is one of the gateway's, and the other
// cookies reach it unchanged and in order.
func FuzzStripGatewayCookies(f *testing.F) {
	for _, s := range []string{"a=1; sallyport_session=x; b=2", "__Host-sallyport_session=y", "sallyport_session=x",
		"a=1;sallyport_login_00=x;;b", " sallyport_session =x; c=3", "\tsallyport_session_1=x", "a=\"q;sallyport_session=x\"",
		"__Secure-sallyport_session=v1.abc; theme=dark", "sallyport=1; x_sallyport_y=2", ""} {
		f.Add(s, "k=v")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		h := http.Header{"Cookie": {a, b}}
		before := (&http.Request{Header: h.Clone()}).Cookies()
		StripGatewayCookies(h)
		after := (&http.Request{Header: h}).Cookies()
		var want []string
		for _, c := range before {
			if !IsGatewayCookie(c.Name) {
				want = append(want, c.Name+"="+c.Value)
			}
		}
		var got []string
		for _, c := range after {
			if IsGatewayCookie(c.Name) {
				t.Fatalf("Cookie %q, %q: the gateway's %s reached the backend", a, b, c.Name)
			}
			got = append(got, c.Name+"="+c.Value)
		}
		// Parts are re-joined with their white space trimmed, so a part
		// the backend would have dropped may now parse: that is harmless.
		// Losing one of the app's own cookies is not.
		rest := got
		for _, c := range want {
			for len(rest) > 0 && rest[0] != c {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				t.Fatalf("Cookie %q, %q: backend cookies %q lack %q", a, b, got, c)
			}
			rest = rest[1:]
		}
	})
}

// FuzzReadSession: a session cookie (and its chunks) as any client may send
// it never panics and never yields a session that was not sealed with the
// key; the seeds hold a real sealed value to mutate.
func FuzzReadSession(f *testing.F) {
	s, err := New(Config{CookieKey: make([]byte, KeySize), Keys: fuzzKeys(f),
		Providers: []ProviderConfig{{Name: "corp", Issuer: "https://idp.example", ClientID: "c"}}})
	if err != nil {
		f.Fatal(err)
	}
	sealed, err := s.sealer.seal("session", &session{Provider: "corp", Subject: "alice", Expires: 1 << 40})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, "")
	f.Add(sealed[:40], sealed[40:])
	f.Add("v1.", "")
	f.Add("v1.AAAA", "AAAA")
	f.Fuzz(func(t *testing.T, first, second string) {
		r := httptest.NewRequest("GET", "http://app.example/", nil)
		r.Header.Set("Cookie", sessionCookie+"="+first+"; "+sessionCookie+"_1="+second)
		// Only a spelling of a sealed value opens, and gives what was
		// sealed (each fuzz worker seals its own seed).
		if ss, _ := s.readSession(r, s.providers["corp"]); ss != nil && (ss.Subject != "alice" || len(ss.Groups) != 0) {
			t.Fatalf("a session %+v from %q + %q that was not sealed by the key", ss, first, second)
		}
	})
}

func fuzzKeys(f *testing.F) *assertion.KeySet {
	ks, err := assertion.NewKeySet(assertion.KeySetConfig{})
	if err != nil {
		f.Fatal(err)
	}
	return ks
}

// FuzzPendingSignIns: whatever list of pending sign-ins and pre-login
// cookies a client sends, starting a sign-in and tidying at the callback
// never panic, leave at most maxPendingSignIns in the list, and expire
// only pre-login cookies, at the callback's path.
func FuzzPendingSignIns(f *testing.F) {
	s, err := New(Config{CookieKey: make([]byte, KeySize), Keys: fuzzKeys(f),
		Providers: []ProviderConfig{{Name: "corp", Issuer: "https://idp.example", ClientID: "c"}}})
	if err != nil {
		f.Fatal(err)
	}
	end := time.Now().Add(time.Minute).Unix()
	f.Add(fmt.Sprintf("0123456789abcdef:%d.fedcba9876543210:%d", end, end+1), loginCookiePfx+"0123456789abcdef=v1.AAAA")
	f.Add("..::..", loginCookiePfx+"=; "+loginCookiePfx+"x=y")
	f.Fuzz(func(t *testing.T, list, cookies string) {
		r := httptest.NewRequest("GET", "http://app.example/", nil)
		r.Header.Set("Cookie", pendingCookie+"="+list+"; "+cookies)
		for _, step := range []func(w http.ResponseWriter){
			func(w http.ResponseWriter) { s.addPending(w, r, "00000000000000aa", end) },
			func(w http.ResponseWriter) { s.tidyPending(w, r, loginCookiePfx+"00000000000000aa") },
		} {
			rec := httptest.NewRecorder()
			step(rec)
			for _, c := range rec.Result().Cookies() {
				switch {
				case c.Name == pendingCookie:
					if n := len(strings.Split(c.Value, ".")); c.Value != "" && n > maxPendingSignIns {
						t.Fatalf("%q, %q: a list of %d", list, cookies, n)
					}
				case !strings.HasPrefix(c.Name, loginCookiePfx) || c.MaxAge >= 0 || c.Path != callbackPath:
					t.Fatalf("%q, %q: set %s", list, cookies, c)
				}
			}
		}
	})
}
