package gateway

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkBackendReadsElsewhere: the per-request check of the path
// readings (admit), on a host with one route and on one with 50.
func BenchmarkBackendReadsElsewhere(b *testing.B) {
	u := mustURL(b, "http://127.0.0.1:9000")
	one := []Route{{App: "site", Hosts: []string{"h.example.com"}, Backend: u, Group: "g"}}
	fifty := []Route{{App: "site", Hosts: []string{"h.example.com"}, Backend: u, Group: "g"}}
	for i := range 49 {
		fifty = append(fifty, Route{App: fmt.Sprintf("app%d", i), Hosts: []string{"h.example.com"},
			PathPrefix: fmt.Sprintf("/app%d", i), Backend: u, Group: "g"})
	}
	for _, rs := range []struct {
		name   string
		routes []Route
	}{{"1route", one}, {"50routes", fifty}} {
		r, err := NewRouter(rs.routes)
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range []struct{ name, path string }{
			{"plain", "/static/app.js"},
			{"cased", "/Static/App.js"},
			{"encoded", "/static%2Fapp.js;v=1"},
		} {
			rt := r.Match("h.example.com", p.path)
			b.Run(rs.name+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if backendReadsElsewhere(r, "h.example.com", p.path, rt) {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}

// TestPathReadingsOneRouteIsFree: on a host with one route no reading of
// a path can lead to another app, so the check answers at once: an
// encoded slash and a ";parameter" there used to cost 4 allocations and
// about 1 µs per request, for nothing. A host with two routes still reads.
func TestPathReadingsOneRouteIsFree(t *testing.T) {
	u := mustURL(t, "http://127.0.0.1:9000")
	r, err := NewRouter([]Route{
		{App: "site", Hosts: []string{"h.example.com"}, Backend: u, Group: "g"},
		{App: "two", Hosts: []string{"two.example.com"}, Backend: u, Group: "g"},
		{App: "admin", Hosts: []string{"two.example.com"}, PathPrefix: "/admin", Backend: u, Group: "g"},
	})
	if err != nil {
		t.Fatal(err)
	}
	const path = "/static%2Fapp.js;v=1"
	rt := r.Match("h.example.com", path)
	if allocs := testing.AllocsPerRun(100, func() {
		if backendReadsElsewhere(r, "h.example.com", path, rt) {
			t.Fatal("refused on a host with one route")
		}
	}); allocs != 0 {
		t.Errorf("the check on a host with one route: %v allocations, want 0 (it looked for another app)", allocs)
	}
	if !backendReadsElsewhere(r, "two.example.com", "/admin%2Fx", r.Match("two.example.com", "/admin%2Fx")) {
		t.Error(`"/admin%2Fx" on a host with an app at /admin: not refused`)
	}
}

// TestPathReadingsFastExitSameAnswers: the answer for a route alone on
// its hosts (Router.alone) is the answer of the full check, for hosts
// that share a wildcard with an exact host, prefixes that differ in case
// only or below another's, and prefixes NewRouter takes though the config refuses them
// ("%2F", ";", "//"), over paths that every reading changes.
func TestPathReadingsFastExitSameAnswers(t *testing.T) {
	u := mustURL(t, "http://127.0.0.1:9000")
	hosts := []string{"h.example.com", "*.example.com", "a.example.com", "x.y.example.com", "*.y.example.com", "10.0.0.1", "[::1]"}
	prefixes := []string{"/", "/admin", "/Admin", "/ärzte", "/api/v2", "/API/V2", "/ADMIN/x", "/a%2Fb", "/a;b", "/a//b", "/a%3Bb"}
	reqHosts := []string{"h.example.com", "H.Example.COM:443", "a.example.com", "b.example.com", "x.y.example.com",
		"q.y.example.com", "10.0.0.1", "[::1]:8443", "a.b.example.com"}
	paths := []string{"/", "/x", "/admin", "/ADMIN/x", "/Admin/x", "/admin%2Fx", "/x%2Fadmin", "/admin;x/y", "/x;y/admin",
		"/ÄRZTE/x", "/ärzte;x", "/api/v2", "/api%2Fv2/x", "/api;x/v2", "/a%2Fb", "/a%2Fb/x", "/a/b/x", "/a;b/x", "/a//b/x",
		"/a%3Bb/x", "/a%2fb/x", "/a%5Cb", "/admın", "/admin/X/y", "/api/v2/x", "/Api/V2"}
	var routers, fast, refused int
	for seed := range uint64(400) {
		rng := rand.New(rand.NewPCG(seed, 22))
		var routes []Route
		for i := range 1 + rng.IntN(3) {
			hs := []string{hosts[rng.IntN(len(hosts))]}
			if rng.IntN(3) == 0 {
				hs = append(hs, hosts[rng.IntN(len(hosts))])
			}
			routes = append(routes, Route{App: fmt.Sprint("app", i), Hosts: hs, PathPrefix: prefixes[rng.IntN(len(prefixes))],
				Backend: u, Group: "g"})
		}
		r, err := NewRouter(routes)
		if err != nil {
			continue // two routes on one (host, prefix)
		}
		routers++
		full := *r
		full.alone = nil
		for _, h := range reqHosts {
			for _, p := range paths {
				rt := r.Match(h, p)
				if rt == nil {
					continue
				}
				got, want := backendReadsElsewhere(r, h, p, rt), backendReadsElsewhere(&full, h, p, rt)
				if got != want {
					t.Fatalf("routes %+v, host %q, path %q (app %s): %v with the fast exit, %v without", routes, h, p, rt.App, got, want)
				}
				if r.alone[rt] {
					fast++
				}
				if want {
					refused++
				}
			}
		}
	}
	if routers < 300 || fast < 1000 || refused < 500 {
		t.Errorf("%d routers, %d answers by the fast exit, %d refusals: too few to compare", routers, fast, refused)
	}
	t.Logf("%d routers, %d answers by the fast exit, %d refusals", routers, fast, refused)
}
