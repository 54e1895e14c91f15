package gateway

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// TestPathCostSameAnswers: backendReadsElsewhere, which writes each
// reading once and looks only at its first bytes (readingLimit), answers
// as the version that copied the whole path for each rewrite
// (oldBackendReadsElsewhere below), over random routers and random paths,
// short and longer than the limit, as written and as normalisePath makes
// them. The readings in other Unicode forms (pathforms.go) came later: they
// refuse what the old check or wholeFormsElsewhere, the same readings of
// the whole path and of the old check's readings, refuses.
func TestPathCostSameAnswers(t *testing.T) {
	u := mustURL(t, "http://127.0.0.1:9000")
	hosts := []string{"h.example.com", "*.example.com", "a.example.com"}
	prefixes := []string{"/", "/admin", "/Admin", "/ärzte", "/ÄRZTE", "/api/v2", "/k", "/K", "/ß", "/a", "/a/b",
		"/a%2Fb", "/a;b", "/x", "/admin/users", "/Ωmega", "/ıd", "/a\u0308rzte", "/ā", "/v1", "/do"}
	reqHosts := []string{"h.example.com", "h.example.com", "H.EXAMPLE.com:443", "a.example.com", "b.example.com"}
	tokens := []string{"/", "/", "/", "admin", "ADMIN", "Admin", "a", "b", "x", "api", "v2", "users", "ärzte", "ÄRZTE",
		"ä", "Ä", "\xe4", "\xc3", "\xff", "\u212a", "ı", "ß", "Ω", "%2F", "%2f", "%5C", "%5c", ";", ";x", "%3B", "%3b",
		"%25", "%41", "%61", "%C3%A4", "%E4", "%2", "%", ".", "k", "K", "%252F", "%5C%2F",
		"a\u0308", "A\u0308", "\u0308", "ａ", "Ａ", "ā", "%CC%88", "\u1100\u1161", "ﬁ",
		"đ", "α", "Æ", "%C3%86", "ð", "\u0661", "1", "∕", "´"} // and best fit's (bestFitASCII)
	randPath := func(rng *rand.Rand) string {
		var sb strings.Builder
		sb.WriteByte('/')
		if rng.IntN(2) == 0 { // near another app's prefix
			p := prefixes[rng.IntN(len(prefixes))][1:]
			switch rng.IntN(4) {
			case 0:
				p = strings.ToUpper(p)
			case 1:
				p = ";y/" + p
			case 2:
				p = "%2F" + p
			}
			sb.WriteString(p)
			sb.WriteString(tokens[rng.IntN(len(tokens))])
		}
		n := 1 + rng.IntN(8)
		if rng.IntN(4) == 0 {
			n = 20 + rng.IntN(200) // past readingLimit
		}
		for range n {
			sb.WriteString(tokens[rng.IntN(len(tokens))])
		}
		return sb.String()
	}
	// Under the race detector (make test's first pass) a tenth of the
	// routers: the check runs on one goroutine, where the detector finds
	// nothing, and the whole test took 30 s under it; make test runs it
	// whole again without the detector (its pass of the allocation tests).
	seeds := 600
	if raceEnabled {
		seeds = 60
	}
	var routers, checked, refused, long, byForms int
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 31))
		routes := []Route{{App: "site", Hosts: []string{"h.example.com"}, Backend: u, Group: "g"}}
		for i := range 1 + rng.IntN(4) {
			routes = append(routes, Route{App: fmt.Sprint("app", i), Hosts: []string{hosts[rng.IntN(len(hosts))]},
				PathPrefix: prefixes[rng.IntN(len(prefixes))], Backend: u, Group: "g"})
		}
		r, err := NewRouter(routes)
		if err != nil {
			continue // two routes on one (host, prefix)
		}
		routers++
		for range 100 {
			p := randPath(rng)
			ps := []string{p}
			if cp, err := normalisePath(p); err == nil {
				ps = append(ps, cp.Match)
			}
			for _, path := range ps {
				h := reqHosts[rng.IntN(len(reqHosts))]
				rt := r.Match(h, path)
				if rt == nil {
					continue
				}
				got := backendReadsElsewhere(r, h, path, rt)
				want, formsOnly := readingsOracle(r, h, path, rt)
				if formsOnly {
					byForms++
				}
				if got != want {
					t.Fatalf("routes %+v, host %q, path %q (app %s): %v, the old check and whole-string readings %v", routes, h, path, rt.App, got, want)
				}
				checked++
				if want {
					refused++
				}
				if len(path) > r.readingLimit(h) {
					long++
				}
			}
		}
	}
	if routers < 400*seeds/600 || refused < 500*seeds/600 || checked < 20000*seeds/600 || long < checked/10 ||
		byForms < 100*seeds/600 {
		t.Errorf("%d routers, %d paths (%d past the limit), %d refusals (%d by other forms only): too few to compare",
			routers, checked, long, refused, byForms)
	}
	t.Logf("%d routers, %d paths (%d past the limit), %d refusals (%d by other forms only)", routers, checked, long, refused, byForms)
}

// TestPathCostBounded: on a 60 KB path that every reading rewrites, the
// check allocates what the first bytes of its readings take, not copies of
// the whole path (the old check: 300-520 KB a call); where a reading drops
// a long ";parameter" segment, at most twice the path. Bytes, not time:
// the machines are shared.
func TestPathCostBounded(t *testing.T) {
	u := mustURL(t, "http://127.0.0.1:9000")
	r, err := NewRouter([]Route{{App: "site", Hosts: []string{"h.example.com"}, Backend: u, Group: "g"},
		{App: "admin", Hosts: []string{"h.example.com"}, PathPrefix: "/admin", Backend: u, Group: "g"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range pathCostCases()[2:] {
		cp, err := normalisePath(c.escaped)
		if err != nil {
			t.Fatal(err)
		}
		rt := r.Match("h.example.com", cp.Match)
		const calls = 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range calls {
			if backendReadsElsewhere(r, "h.example.com", cp.Match, rt) {
				t.Fatalf("%s: refused", c.name)
			}
		}
		runtime.ReadMemStats(&after)
		bound := uint64(32 << 10)
		if strings.Contains(c.name, "param") {
			// A reading that drops a segment must see where it ends: the
			// part of first's reading up to there, once, in buffers that
			// grow fourfold (860 KB a call before, 14 times the path).
			bound = 2 * uint64(len(cp.Match))
		}
		if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > bound {
			t.Errorf("%s (%d bytes): %d bytes allocated a call, want at most %d", c.name, len(cp.Match), per, bound)
		}
	}
}

// The check as it was before readingLimit, to compare answers with: the
// readings written whole, by the rewrites as they were then (the case
// folding, which readingLimit did not change, is foldsElsewhere).

func oldBackendReadsElsewhere(router *Router, host, match string, rt *Route) bool {
	if router.alone[rt] {
		return false // no other app on the host: most hosts
	}
	if router.foldsElsewhere(host, match, rt, hasCase(match)) {
		return true
	}
	if strings.IndexByte(match, '%') < 0 && strings.IndexByte(match, ';') < 0 {
		return false // nothing else to read otherwise: most requests
	}
	slashes, params := oldSlashesDecoded(match), oldParamsStripped(match)
	alts := [...]string{slashes, params, oldParamsStripped(slashes), oldSlashesDecoded(params), "", ""}
	if twice := oldTwiceDecoded(match); twice != slashes { // other escapes than %2F and %5C
		alts[4], alts[5] = twice, oldParamsStripped(twice)
	}
	for _, alt := range alts {
		if alt != "" && alt != match && (router.Match(host, alt) != rt || router.foldsElsewhere(host, alt, rt, hasCase(alt))) {
			return true
		}
	}
	return false
}

func oldSlashesDecoded(match string) string {
	return oldRewriteSegments(match, func(s string, i int) (sep bool, skip int) {
		if s[i] == '%' && i+2 < len(s) && (s[i+1] == '2' && s[i+2]|0x20 == 'f' || s[i+1] == '5' && s[i+2]|0x20 == 'c') {
			return true, 3
		}
		return false, 0
	})
}

func oldTwiceDecoded(match string) string {
	b := make([]byte, 0, len(match))
	for i := 0; i < len(match); i++ {
		c := match[i]
		if c == '%' && i+2 < len(match) && isHex(match[i+1]) && isHex(match[i+2]) {
			c = unhex(match[i+1])<<4 | unhex(match[i+2])
			i += 2
			if c == '\\' {
				c = '/'
			}
		}
		if c == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

func oldParamsStripped(match string) string {
	return oldRewriteSegments(match, func(s string, i int) (sep bool, skip int) {
		if s[i] == ';' || s[i] == '%' && i+2 < len(s) && s[i+1] == '3' && s[i+2]|0x20 == 'b' {
			j := strings.IndexByte(s[i:], '/')
			if j < 0 {
				return false, len(s) - i
			}
			return false, j
		}
		return false, 0
	})
}

func oldRewriteSegments(s string, at func(s string, i int) (sep bool, skip int)) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		sep, skip := at(s, i)
		c := s[i]
		switch {
		case sep:
			c = '/'
		case skip > 0:
			i += skip
			continue
		default:
			skip = 1
		}
		i += skip
		if c == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// readingsOracle is what backendReadsElsewhere must answer for path: the
// old check's answer (oldBackendReadsElsewhere) or, where that admits it,
// the readings in other forms on whole strings (wholeFormsElsewhere);
// formsOnly is the latter case.
func readingsOracle(r *Router, host, path string, rt *Route) (refuse, formsOnly bool) {
	if oldBackendReadsElsewhere(r, host, path, rt) {
		return true, false
	}
	forms := wholeFormsElsewhere(r, host, path, rt)
	return forms, forms
}

// FuzzPathReadings compares backendReadsElsewhere with the old check and
// the readings in other forms on whole strings (TestPathCostSameAnswers'
// comparison) for paths the fuzzer makes, with apps at look-alike
// prefixes on one host.
func FuzzPathReadings(f *testing.F) {
	u := mustURL(f, "http://127.0.0.1:9000")
	var routes []Route
	for i, p := range []string{"/", "/admin", "/ärzte", "/a\u0308b", "/v1", "/do", "/a;b", "/api/v2", "/K", "/ß"} {
		routes = append(routes, Route{App: fmt.Sprint("app", i), Hosts: []string{"h.example.com"}, PathPrefix: p, Backend: u, Group: "g"})
	}
	r, err := NewRouter(routes)
	if err != nil {
		f.Fatal(err)
	}
	refused := 0
	for _, p := range []string{"/admin/x", "/%EF%BD%81dmin", "/a%C4%91min", "/%C3%86DMIN", "/v%D9%A1", "/admin%2Fx",
		"/x;y/admin", "/a%CC%88rzte", "/%C3%A4rzte/x", "/%E2%84%AA", "/ss", "/do%C3%B0"} {
		f.Add(p)
		if rt := r.Match("h.example.com", p); rt != nil && backendReadsElsewhere(r, "h.example.com", p, rt) {
			refused++
		}
	}
	if refused < 6 { // the comparison is not of answers that are all false
		f.Fatalf("%d of the seeds refused, want 6 or more", refused)
	}
	f.Fuzz(func(t *testing.T, path string) {
		const h = "h.example.com"
		rt := r.Match(h, path)
		if rt == nil {
			return
		}
		want, _ := readingsOracle(r, h, path, rt)
		if got := backendReadsElsewhere(r, h, path, rt); got != want {
			t.Fatalf("path %q (app at %q): %v, the old check and whole-string readings %v", path, rt.PathPrefix, got, want)
		}
	})
}
