package gateway

import (
	"fmt"
	"strings"
	"testing"
)

// pathCostCases are paths of a request head (max_header_bytes is 64 KiB)
// that every reading rewrites: escaped as sent, and as Match after
// normalisePath.
func pathCostCases() []struct{ name, escaped string } {
	const n = 60 << 10
	rep := func(head, s string) string { return head + strings.Repeat(s, (n-len(head))/len(s)) }
	return []struct{ name, escaped string }{
		{"plain", "/static/app.js"},
		{"one2F", "/static/js%2Fapp.js"},
		{"60k_2F", rep("/x", "a%2F")},
		{"60k_semi", rep("", "/a;b")},
		{"60k_25XX", rep("/x", "%2541")},
		{"60k_mixed", rep("/x", "a%2Fb;c%253Bd%2541/")},
		{"60k_nonASCII", rep("/x", "%C3%A4%2F")},
		// One ";parameter" segment of 60 KB that appendParamsStripped
		// drops after the %2F reading: 0.86 MB a call when reading
		// doubled first's part until it covered the segment.
		{"60k_param", rep("/x;", "a") + "%2F"},
		{"60k_param_slash", rep("/x;", "a") + "/%2F"},
	}
}

// BenchmarkPathCost: backendReadsElsewhere for pathCostCases, on a host
// with one route (Router.alone), with apps at "/" and "/admin", and with
// 50 apps (normalisePath's cost: BenchmarkNormalisePathCost).
func BenchmarkPathCost(b *testing.B) {
	u := mustURL(b, "http://127.0.0.1:9000")
	site := Route{App: "site", Hosts: []string{"h.example.com"}, Backend: u, Group: "g"}
	two := []Route{site, {App: "admin", Hosts: []string{"h.example.com"}, PathPrefix: "/admin", Backend: u, Group: "g"}}
	fifty := []Route{site}
	for i := range 49 {
		fifty = append(fifty, Route{App: fmt.Sprintf("app%d", i), Hosts: []string{"h.example.com"},
			PathPrefix: fmt.Sprintf("/app%d/v%d", i, i), Backend: u, Group: "g"})
	}
	for _, rs := range []struct {
		name   string
		routes []Route
	}{{"1route", []Route{site}}, {"2routes", two}, {"50routes", fifty}} {
		r, err := NewRouter(rs.routes)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range pathCostCases() {
			cp, err := normalisePath(c.escaped)
			if err != nil {
				b.Fatal(err)
			}
			rt := r.Match("h.example.com", cp.Match)
			b.Run(rs.name+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if backendReadsElsewhere(r, "h.example.com", cp.Match, rt) {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}
