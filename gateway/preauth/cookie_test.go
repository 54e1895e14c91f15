package preauth

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestSealer(t *testing.T) {
	s, err := newSealer(make([]byte, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.seal("session", &session{Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var got session
	if err := s.open("session", v, &got); err != nil || got.Subject != "alice" {
		t.Fatalf("%+v %v", got, err)
	}
	// A login cookie never passes for a session and vice versa.
	if err := s.open("login", v, &got); err == nil {
		t.Error("opened with another purpose")
	}
	other, _ := newSealer([]byte(strings.Repeat("k", KeySize)))
	if err := other.open("session", v, &got); err == nil {
		t.Error("opened with another key")
	}
	for i := len(cookieVersion); i < len(v); i += 7 {
		b := []byte(v)
		b[i] ^= 2
		if err := s.open("session", string(b), &got); err == nil && string(b) != v {
			t.Errorf("tampered byte %d accepted", i)
		}
	}
	for _, bad := range []string{"", "v1.", "v2." + v[3:], "v1.!!!", v[:20]} {
		if err := s.open("session", bad, &got); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := newSealer([]byte("short")); err == nil {
		t.Error("short key accepted")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "session.key")
	k1, err := LoadOrCreateKey(file)
	if err != nil || len(k1) != KeySize {
		t.Fatal(k1, err)
	}
	k2, err := LoadOrCreateKey(file)
	if err != nil || string(k1) != string(k2) {
		t.Fatal("key changed")
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	os.WriteFile(file, []byte("bm90IGEga2V5"), 0o600)
	if _, err := LoadOrCreateKey(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("bad key file: %v", err)
	}
}

func TestSafeReturn(t *testing.T) {
	for ret, want := range map[string]bool{
		"/": true, "/a?b=c": true, "/a/b#x": true, "/a?next=//evil": true,
		"": false, "a": false, "//evil.example": false, `/\evil.example`: false, "/a\\b": false,
		"https://evil.example/": false, "/\x00": false, "/a\r\nLocation: x": false, "javascript:alert(1)": false,
		"///evil": false,
	} {
		if got := safeReturn(ret); got != want {
			t.Errorf("safeReturn(%q) = %v", ret, got)
		}
	}
}

func TestCookieNamesAndDomain(t *testing.T) {
	s := &Service{cfg: Config{CookieDomain: "example.com"}}
	req := func(host string, tls bool) *http.Request {
		r, _ := http.NewRequest("GET", "http://"+host+"/", nil)
		if tls {
			r.TLS = new(tlsState)
		}
		return r
	}
	for _, tc := range []struct {
		host   string
		tls    bool
		name   string
		domain string
	}{
		{"a.example.com", false, "sallyport_session", "example.com"},
		{"a.example.com:8443", true, "__Secure-sallyport_session", "example.com"},
		{"example.com", true, "__Secure-sallyport_session", "example.com"},
		{"evilexample.com", true, "__Host-sallyport_session", ""},
		{"other.test", false, "sallyport_session", ""},
	} {
		r := req(tc.host, tc.tls)
		if n, d := s.sessionCookieName(r), s.cookieDomain(r); n != tc.name || d != tc.domain {
			t.Errorf("%s tls=%v: %s %q", tc.host, tc.tls, n, d)
		}
	}
	for name, want := range map[string]bool{"sallyport_session": true, "__Host-sallyport_session": true,
		"sallyport_login_ab": true, "session": false, "my_sallyport_x": false} {
		if IsGatewayCookie(name) != want {
			t.Errorf("IsGatewayCookie(%q)", name)
		}
	}
}

func TestStripGatewayCookies(t *testing.T) {
	h := http.Header{"Cookie": {"a=1; sallyport_session=x; b=2", "__Host-sallyport_session=y"}}
	StripGatewayCookies(h)
	if got := h.Values("Cookie"); len(got) != 1 || got[0] != "a=1; b=2" {
		t.Errorf("%q", got)
	}
	h = http.Header{"Cookie": {"sallyport_session=x"}}
	StripGatewayCookies(h)
	if _, ok := h["Cookie"]; ok {
		t.Error("empty Cookie header kept")
	}
}

func TestIdentityHeaderVariants(t *testing.T) {
	for k, want := range map[string]bool{"X-Sallyport-User": true, "x_sallyport_user": true, "X_SALLYPORT-Whatever": true,
		"X-Sallyport": false, "X-Forwarded-User": true, "X_Forwarded_Email": true, "Remote_User": true, "X-Other": false,
		// lighttpd and Apache httpd < 2.4 fold every byte but letters and
		// digits to "_" for CGI and FastCGI (HTTP_REMOTE_USER).
		"X.Sallyport.User": true, "Remote.User": true, "X~Forwarded~Groups": true, "X-Auth-Request.Email": true} {
		if got := isIdentityHeader(k, true); got != want {
			t.Errorf("%s: %v", k, got)
		}
	}
	if isIdentityHeader("X-Forwarded-User", false) || !isIdentityHeader("x_sallyport_email", false) {
		t.Error("without oidc only X-Sallyport-* is stripped")
	}
	h := http.Header{}
	SetIdentityHeaders(h, &Identity{Subject: "s\n", Email: "e%", Groups: []string{"a,b", "é"}}, "tok")
	if h.Get(HeaderUser) != "s%0A" || h.Get(HeaderEmail) != "e%25" || h.Get(HeaderGroups) != "a%2Cb,%C3%A9" || h.Get(HeaderAssertion) != "tok" {
		t.Errorf("%v", h)
	}
}

// TestLoadOrCreateKeyConcurrently: replicas that share data_dir and start
// together (or a restart while another process creates the key) must all
// end up with the one key, never fail on the file the other just created
// or read it half-written.
func TestLoadOrCreateKeyConcurrently(t *testing.T) {
	for i := range 50 {
		file := filepath.Join(t.TempDir(), "session.key")
		const n = 4
		keys, errs := make([][]byte, n), make([]error, n)
		var wg sync.WaitGroup
		for j := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				keys[j], errs[j] = LoadOrCreateKey(file)
			}()
		}
		wg.Wait()
		for j := range n {
			if errs[j] != nil || string(keys[j]) != string(keys[0]) {
				t.Fatalf("round %d, caller %d: %v (keys differ: %v)", i, j, errs[j], string(keys[j]) != string(keys[0]))
			}
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "*")); len(left) != 1 {
			t.Fatalf("round %d: files left: %v", i, left)
		}
	}
}
