package gateway

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func testRoutes(t testing.TB) []Route {
	b := mustURL(t, "http://127.0.0.1:9000")
	return []Route{
		{App: "hello", Hosts: []string{"hello.example.com", "*.apps.example.com"}, Backend: b, Group: "default"},
		{App: "api", Hosts: []string{"hello.example.com"}, PathPrefix: "/api", Backend: b, Group: "default"},
		{App: "apiv2", Hosts: []string{"hello.example.com"}, PathPrefix: "/api/v2/", Backend: b, Group: "default"},
		{App: "wildapi", Hosts: []string{"*.apps.example.com"}, PathPrefix: "/api", Backend: b, Group: "default"},
		{App: "exact-a", Hosts: []string{"a.apps.example.com"}, PathPrefix: "/only", Backend: b, Group: "default"},
		{App: "ipv6", Hosts: []string{"[::1]"}, Backend: b, Group: "default"},
		{App: "ipv4", Hosts: []string{"10.0.0.1"}, Backend: b, Group: "default"},
		{App: "mixed", Hosts: []string{"MiXeD.Example.COM."}, Backend: b, Group: "default"},
		{App: "sub-only", Hosts: []string{"sub.example.org"}, PathPrefix: "/sub", Backend: b, Group: "default"},
	}
}

func TestRouterMatch(t *testing.T) {
	r, err := NewRouter(testRoutes(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, path string
		want       string // app; "" for no match
	}{
		{"hello.example.com", "/", "hello"},
		{"hello.example.com", "", "hello"},
		{"hello.example.com", "/x/y", "hello"},
		{"hello.example.com:8080", "/x", "hello"},
		{"HELLO.Example.com", "/x", "hello"},
		{"hello.example.com.", "/x", "hello"},
		{"Hello.Example.Com.:443", "/x", "hello"},
		// Longest prefix on segment boundaries.
		{"hello.example.com", "/api", "api"},
		{"hello.example.com", "/api/", "api"},
		{"hello.example.com", "/api/x", "api"},
		{"hello.example.com", "/apix", "hello"},
		{"hello.example.com", "/API", "hello"}, // paths are case-sensitive
		{"hello.example.com", "/api/v2", "apiv2"},
		{"hello.example.com", "/api/v2/", "apiv2"},
		{"hello.example.com", "/api/v2/users", "apiv2"},
		{"hello.example.com", "/api/v20", "api"},
		// One leading wildcard label.
		{"a.apps.example.com", "/x", "hello"},
		{"b.apps.example.com", "/api/1", "wildapi"},
		{"B.APPS.example.com:8443", "/api", "wildapi"},
		{"apps.example.com", "/", ""},
		{"a.b.apps.example.com", "/", ""},
		{".apps.example.com", "/", ""},
		{"xapps.example.com", "/", ""},
		// Exact beats wildcard; the wildcard's routes remain for other paths.
		{"a.apps.example.com", "/only", "exact-a"},
		{"a.apps.example.com", "/only/x", "exact-a"},
		{"a.apps.example.com:443", "/only", "exact-a"},
		{"a.apps.example.com", "/onlyx", "hello"},
		{"a.apps.example.com", "/api", "wildapi"},
		// IP literals.
		{"[::1]:8080", "/", "ipv6"},
		{"[::1]", "/x", "ipv6"},
		{"::1", "/", "ipv6"},
		{"[::2]:8080", "/", ""},
		{"10.0.0.1", "/", "ipv4"},
		{"10.0.0.1:80", "/", "ipv4"},
		{"10.0.0.2", "/", ""},
		// Pattern normalised at build time.
		{"mixed.example.com", "/", "mixed"},
		{"MIXED.EXAMPLE.COM.", "/", "mixed"},
		// A host with routes, none of whose prefixes match.
		{"sub.example.org", "/", ""},
		{"sub.example.org", "/subway", ""},
		{"sub.example.org", "/sub/way", "sub-only"},
		// Junk.
		{"", "/", ""},
		{":8080", "/", ""},
		{"[", "/", ""},
		{"other.example.com", "/", ""},
	}
	for _, tt := range tests {
		got := r.Match(tt.host, tt.path)
		var app string
		if got != nil {
			app = got.App
		}
		if app != tt.want {
			t.Errorf("Match(%q, %q) = %q, want %q", tt.host, tt.path, app, tt.want)
		}
	}
}

func TestRouterNormalisesRoutes(t *testing.T) {
	r, err := NewRouter(testRoutes(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, path string
		wantHosts  []string
		wantPrefix string
	}{
		{"hello.example.com", "/", []string{"hello.example.com", "*.apps.example.com"}, "/"},
		{"hello.example.com", "/api/v2/x", []string{"hello.example.com"}, "/api/v2"},
		{"mixed.example.com", "/", []string{"mixed.example.com"}, "/"},
		{"[::1]", "/", []string{"::1"}, "/"},
	}
	for _, tt := range tests {
		rt := r.Match(tt.host, tt.path)
		if rt == nil {
			t.Fatalf("Match(%q, %q) = nil", tt.host, tt.path)
		}
		if strings.Join(rt.Hosts, ",") != strings.Join(tt.wantHosts, ",") || rt.PathPrefix != tt.wantPrefix {
			t.Errorf("Match(%q, %q) = hosts %q prefix %q, want %q %q",
				tt.host, tt.path, rt.Hosts, rt.PathPrefix, tt.wantHosts, tt.wantPrefix)
		}
	}
}

func TestRouterCopiesRoutes(t *testing.T) {
	routes := testRoutes(t)
	r, err := NewRouter(routes)
	if err != nil {
		t.Fatal(err)
	}
	routes[0].App = "changed"
	routes[0].Hosts[0] = "changed.example.com"
	routes[0].Backend.Host = "changed:1"
	rt := r.Match("hello.example.com", "/")
	if rt == nil || rt.App != "hello" || rt.Hosts[0] != "hello.example.com" || rt.Backend.Host != "127.0.0.1:9000" {
		t.Fatalf("router shares state with its input: %+v", rt)
	}
}

func TestNewRouterErrors(t *testing.T) {
	b := mustURL(t, "http://127.0.0.1:9000")
	ok := Route{App: "ok", Hosts: []string{"ok.example.com"}, Backend: b, Group: "g"}
	with := func(f func(*Route)) []Route {
		rt := ok
		rt.Hosts = append([]string(nil), ok.Hosts...)
		f(&rt)
		return []Route{rt}
	}
	tests := []struct {
		name   string
		routes []Route
		want   string // substring of the error; "" for success
	}{
		{"valid", with(func(*Route) {}), ""},
		{"no routes", nil, ""},
		{"timeout", with(func(r *Route) { r.Timeout = time.Minute }), ""},
		{"https backend", with(func(r *Route) { r.Backend = mustURL(t, "https://internal:8443/base") }), ""},
		{"wildcard", with(func(r *Route) { r.Hosts = []string{"*.example.com"} }), ""},
		{"ipv6", with(func(r *Route) { r.Hosts = []string{"[fe80::1]", "::2"} }), ""},
		{"no hosts", with(func(r *Route) { r.Hosts = nil }), "no hosts"},
		{"empty host", with(func(r *Route) { r.Hosts = []string{""} }), "empty"},
		{"dot host", with(func(r *Route) { r.Hosts = []string{"."} }), "empty"},
		{"bare wildcard", with(func(r *Route) { r.Hosts = []string{"*"} }), "wildcard"},
		{"wildcard only", with(func(r *Route) { r.Hosts = []string{"*."} }), "wildcard"},
		{"inner wildcard", with(func(r *Route) { r.Hosts = []string{"a.*.example.com"} }), "wildcard"},
		{"two wildcards", with(func(r *Route) { r.Hosts = []string{"*.*.example.com"} }), "wildcard"},
		{"partial wildcard", with(func(r *Route) { r.Hosts = []string{"app*.example.com"} }), "wildcard"},
		{"port", with(func(r *Route) { r.Hosts = []string{"ok.example.com:8080"} }), "port"},
		{"slash", with(func(r *Route) { r.Hosts = []string{"ok.example.com/x"} }), "invalid character"},
		{"space", with(func(r *Route) { r.Hosts = []string{"ok example.com"} }), "invalid character"},
		{"empty label", with(func(r *Route) { r.Hosts = []string{"ok..example.com"} }), "empty label"},
		{"prefix without slash", with(func(r *Route) { r.PathPrefix = "api" }), "must start with /"},
		{"prefix with query", with(func(r *Route) { r.PathPrefix = "/api?x=1" }), "query"},
		{"no backend", with(func(r *Route) { r.Backend = nil }), "no backend"},
		{"ftp backend", with(func(r *Route) { r.Backend = mustURL(t, "ftp://x") }), "scheme"},
		{"backend without host", with(func(r *Route) { r.Backend = mustURL(t, "http:///x") }), "no host"},
		{"no group", with(func(r *Route) { r.Group = "" }), "no connector group"},
		{"negative timeout", with(func(r *Route) { r.Timeout = -time.Second }), "negative timeout"},
		{"duplicate in one route", with(func(r *Route) { r.Hosts = []string{"ok.example.com", "OK.example.com."} }), "already used"},
		{"duplicate host and prefix", []Route{ok, {App: "b", Hosts: []string{"ok.example.com"}, PathPrefix: "/", Backend: b, Group: "g"}}, `already used by app "ok"`},
		{"duplicate after normalising", []Route{
			{App: "a", Hosts: []string{"x.example.com"}, PathPrefix: "/api", Backend: b, Group: "g"},
			{App: "b", Hosts: []string{"X.Example.com."}, PathPrefix: "/api/", Backend: b, Group: "g"},
		}, "already used"},
		{"duplicate wildcard", []Route{
			{App: "a", Hosts: []string{"*.example.com"}, Backend: b, Group: "g"},
			{App: "b", Hosts: []string{"*.EXAMPLE.com"}, Backend: b, Group: "g"},
		}, "already used"},
		{"same host other prefix", []Route{ok, {App: "b", Hosts: []string{"ok.example.com"}, PathPrefix: "/b", Backend: b, Group: "g"}}, ""},
		{"same prefix other host", []Route{ok, {App: "b", Hosts: []string{"b.example.com"}, Backend: b, Group: "g"}}, ""},
		{"exact and wildcard", []Route{ok, {App: "b", Hosts: []string{"*.ok.example.com"}, Backend: b, Group: "g"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRouter(tt.routes)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("NewRouter: %v", err)
			case tt.want == "" && r == nil:
				t.Fatal("NewRouter returned a nil router")
			case tt.want != "" && err == nil:
				t.Fatalf("NewRouter succeeded, want error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("NewRouter error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNewRouterReportsEveryBadRoute(t *testing.T) {
	_, err := NewRouter([]Route{{App: "one"}, {App: "two"}})
	if err == nil || !strings.Contains(err.Error(), `"one"`) || !strings.Contains(err.Error(), `"two"`) {
		t.Fatalf("error %v, want both routes named", err)
	}
}

// TestRouterMatchNoAlloc proves the fast path (style rule 9): a lower-case
// host, with or without port, costs no allocation.
func TestRouterMatchNoAlloc(t *testing.T) {
	r, err := NewRouter(testRoutes(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ host, path string }{
		{"hello.example.com", "/api/v2/users"},
		{"hello.example.com", "/"},
		{"hello.example.com:8080", "/x"},
		{"b.apps.example.com", "/api/x"},
		{"[::1]:8080", "/"},
		{"nothing.example.net", "/"},
	}
	for _, tt := range tests {
		var got *Route
		allocs := testing.AllocsPerRun(1000, func() { got = r.Match(tt.host, tt.path) })
		if allocs != 0 {
			t.Errorf("Match(%q, %q): %v allocations, want 0", tt.host, tt.path, allocs)
		}
		_ = got
	}
}

func FuzzRouterMatch(f *testing.F) {
	r, err := NewRouter(testRoutes(f))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][2]string{
		{"hello.example.com", "/api"}, {"[::1]:1", "/"}, {"[", ""}, {"a.", "/"}, {".", "/"}, {"]:", "/"},
		{"HELLO.EXAMPLE.COM.", "/api/v2"}, {"*.apps.example.com", "/"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		rt := r.Match(host, path)
		if rt == nil {
			return
		}
		if !underPrefix(rt.PathPrefix, path) && path != "" {
			t.Fatalf("Match(%q, %q) = %q whose prefix %q does not hold the path", host, path, rt.App, rt.PathPrefix)
		}
		// Case and a trailing dot never change the answer.
		if again := r.Match(strings.ToUpper(host), path); again != rt && !strings.ContainsFunc(host, func(c rune) bool { return c > 0x7f }) {
			t.Fatalf("Match(%q) and Match(upper case) differ", host)
		}
	})
}

func BenchmarkRouterMatch(b *testing.B) {
	r, err := NewRouter(testRoutes(b))
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct{ name, host, path string }{
		{"exact", "hello.example.com", "/api/v2/users"},
		{"port", "hello.example.com:8443", "/api/v2/users"},
		{"wildcard", "b.apps.example.com", "/api/x"},
		{"upper", "Hello.Example.com", "/api/v2/users"},
		{"miss", "nothing.example.net", "/"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Match(bb.host, bb.path)
			}
		})
	}
}
