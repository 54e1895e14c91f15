package gateway

import (
	"runtime"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// TestNormalFormCannotChangeApp: macOS file systems and some frameworks
// read a letter and its decomposition as one name, so "/a%CC%88rzte/x"
// (a and U+0308 COMBINING DIAERESIS) is "/ärzte/x" there, and a prefix
// written decomposed is reached by the composed letter: routed by "/" to
// the app without sign-in, they skipped the sign-in of the app at /ärzte
// (the check compared bytes and case only). Upper case too, and through
// an encoded slash or a second decoding. The apps themselves still get
// their requests.
func TestNormalFormCannotChangeApp(t *testing.T) {
	g := admitGateway(t,
		Route{App: "site", PathPrefix: "/"},
		Route{App: "aerzte", PathPrefix: "/ärzte"},                 // NFC
		Route{App: "oeffentlich", PathPrefix: "/o\u0308ffentlich"}, // NFD
	)
	wantRefused(t, g, "in NFC",
		"/a%CC%88rzte/x", "/a%CC%88rzte", "/A%CC%88RZTE/x", "/A%CC%88rzte/x", // NFD path, NFC prefix
		"/%C3%B6ffentlich/x", "/%C3%B6ffentlich", "/%C3%96FFENTLICH/x", "/O%CC%88ffentlich/x", // to the NFD prefix
		"/a%CC%88rzte%2Fx", "/a%CC%88rzte;p/x", "/a%25CC%2588rzte/x", // with an encoded slash, a ;parameter, escaped twice
	)
	wantAdmitted(t, g, map[string]string{
		"/%C3%A4rzte/x": "aerzte", "/%C3%A4rzte": "aerzte", "/%C3%A4rzte/A%CC%88": "aerzte",
		"/o%CC%88ffentlich/x": "oeffentlich", "/o%CC%88ffentlich": "oeffentlich",
		"/%C3%A4rzte/a%CC%88": "aerzte", "/x/a%CC%88rzte": "site", "/a%CC%88rztex/y": "site",
	})
}

// TestBestFitCannotChangeApp: Windows' best fit, in programs that read
// paths in a code page (CGI, PHP, ANSI Win32 calls), reads a fullwidth
// letter as its ASCII one and drops the diacritics of a letter the code
// page lacks: "/%EF%BD%81dmin/x" ("/ａdmin/x") and "/%C4%81dmin/x"
// ("/ādmin/x") are "/admin/x" there; routed by "/" to the app without
// sign-in, they skipped the sign-in of the app at /admin. Fullwidth upper
// case too, and NFKC's fullwidth letter with a combining mark.
func TestBestFitCannotChangeApp(t *testing.T) {
	g := admitGateway(t,
		Route{App: "site", PathPrefix: "/"},
		Route{App: "admin", PathPrefix: "/admin"},
		Route{App: "aerzte", PathPrefix: "/ärzte"},
		Route{App: "do", PathPrefix: "/do"},
		Route{App: "v1", PathPrefix: "/v1"},
	)
	wantRefused(t, g, "with best fit",
		"/%EF%BD%81dmin/x", "/%EF%BD%81dmin", "/%C4%81dmin/x", "/a%CC%81dmin/x", "/a%CC%84%CC%81dmin/x",
		"/%EF%BC%A1DMIN/x", "/%EF%BC%A1%EF%BC%A4%EF%BC%AD%EF%BC%A9%EF%BC%AE/x", "/%C3%82DMIN",
		"/%EF%BD%81%CC%88rzte/x", // fullwidth a and a diaeresis: NFKC's ä
		"/%EF%BD%81dmin%2Fx", "/%EF%BD%81dmin;p/x", "/%25EF%25BD%2581dmin/x",
		"/%C4%81dmin/x/%FF", // not UTF-8 after the prefix: a lenient decoder reads the prefix all the same
		// Letters without a decomposition that best fit maps all the same
		// (bestFitASCII): đ (U+0111), α (U+03B1), ı (U+0131).
		"/a%C4%91min/x", "/%CE%B1dmin", "/adm%C4%B1n/x", "/ADM%C4%B1N/x", "/a%C4%91m%C4%B1n;p/x",
		"/a%E2%99%AAmin/x", // a♪min: "admin" in code page 1250
		"/%C4%90%C3%98/x",  // ĐØ: "DO" in code page 1251
		"/%C3%86DMIN/x",    // ÆDMIN: "ADMIN" in code page 1250
		"/%C3%A6dmin",      // ædmin
		"/a%C3%B0min/x",    // aðmin: "admin" in code page 932
		"/v%D9%A1/x",       // v١ ARABIC-INDIC DIGIT ONE: "v1" in code page 1256
	)
	wantAdmitted(t, g, map[string]string{
		"/admin/x": "admin", "/admin/%EF%BD%81": "admin", "/%C3%A4rzte/%EF%BD%81": "aerzte", "/%C4%81/x": "site",
	})
}

// TestPlainPathsNotRefusedByForms: the compatibility readings simplify the
// path only, so an ASCII path never meets an app at "/ärzte" through them
// (no backend reads "/arzte" as "/ärzte"); near misses of a prefix stay
// routed; and apps whose prefixes differ only in normal form, case or what
// best fit makes of them all stay reachable.
func TestPlainPathsNotRefusedByForms(t *testing.T) {
	g := admitGateway(t,
		Route{App: "site", PathPrefix: "/"},
		Route{App: "aerzte", PathPrefix: "/ärzte"},
		Route{App: "admin", PathPrefix: "/admin"},
		Route{App: "Admin", PathPrefix: "/Admin"},
		Route{App: "ueber-nfc", PathPrefix: "/über"},
		Route{App: "ueber-nfd", PathPrefix: "/u\u0308ber"},
		Route{App: "a-macron", PathPrefix: "/ā"},
		Route{App: "a", PathPrefix: "/a"},
	)
	wantAdmitted(t, g, map[string]string{
		"/arzte/x": "site", "/arzte/%C3%BC": "site", "/ARZTE/x": "site", "/%C3%A4rztex/y": "site",
		"/admin-tools/x": "site", "/%EF%BD%81dmin-tools/x": "site", "/%C4%81dmins/x": "site", "/x/%EF%BD%81dmin": "site",
		"/admin/%EF%BD%81": "admin", "/Admin/%EF%BD%98": "Admin", "/Admin/x": "Admin",
		"/%C3%BCber/x": "ueber-nfc", "/u%CC%88ber/x": "ueber-nfd", "/%C3%BCber/a%CC%88": "ueber-nfc",
		"/%C4%81/x": "a-macron", "/%C4%81/%EF%BD%81": "a-macron", "/a/%C4%81": "a", "/ube/%C3%BC": "site",
	})
}

// TestPathFormsCostBounded: TestPathCostBounded for paths that the
// readings in other forms rewrite: each is read up to what decides it,
// so a 60 KB path allocates what its first bytes take. Bytes, not time.
func TestPathFormsCostBounded(t *testing.T) {
	u := mustURL(t, "http://127.0.0.1:9000")
	r, err := NewRouter([]Route{{App: "site", Hosts: []string{"h.example.com"}, Backend: u, Group: "g"},
		{App: "admin", Hosts: []string{"h.example.com"}, PathPrefix: "/admin", Backend: u, Group: "g"},
		{App: "aerzte", Hosts: []string{"h.example.com"}, PathPrefix: "/a\u0308rzte", Backend: u, Group: "g"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"nfd":        strings.Repeat("/a\u0308", 15000),
		"fullwidth":  strings.Repeat("\uff41", 20000),
		"fullwidth/": "/" + strings.Repeat("\uff41", 20000),
		"marks":      "/a" + strings.Repeat("\u0308", 25000) + "x",
		"marks%2F":   "/x" + strings.Repeat("\u0301%2F", 12000),
		"hangul":     "/" + strings.Repeat("\u1100\u1161\u11a8", 6500),
	} {
		rt := r.Match("h.example.com", path)
		const calls = 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range calls {
			if backendReadsElsewhere(r, "h.example.com", path, rt) {
				t.Fatalf("%s: refused", name)
			}
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 32<<10 {
			t.Errorf("%s (%d bytes): %d bytes allocated a call, want at most 32 KiB", name, len(path), per)
		}
		t.Logf("%s (%d bytes): %d bytes allocated a call", name, len(path), (after.TotalAlloc-before.TotalAlloc)/calls)
	}
}

// TestFormReadings: the rewrites, cut at a limit, are the first bytes of
// the whole reading, and say how much they read.
func TestFormReadings(t *testing.T) {
	forms := []struct {
		name  string
		form  rewrite
		whole func(string) string
	}{{"NFC", formNFC, norm.NFC.String}, {"NFKC", formNFKC, norm.NFKC.String}, {"best fit", formBestFit, wholeBestFit}}
	for _, s := range []string{
		"/a\u0308rzte/x", "/ａdmin", "/ādmin/Ａ", "/\u1100\u1161\u11a8/x", "/a" + strings.Repeat("\u0308", 100) + "bc",
		"/\xffa\u0308", "/ﬁle/№", "/x" + strings.Repeat("\u0301%2F", 50),
		"/a\u0111m\u0131n\u2215x\u00a5\u20a9", "/\u2017\u0302=", "/\u00c6\u00b4\u0661\u2081\u00bd",
		"/" + strings.Repeat("ä", 100) + "a\u0308" + strings.Repeat("x", 300), strings.Repeat("x", 300) + "\u0308",
		strings.Repeat("a\u0308\u0301", 100),
	} {
		for _, f := range forms {
			want := f.whole(s)
			for limit := 1; limit <= len(want)+2; limit++ {
				got, i := f.form(nil, s, limit)
				if string(got) != want[:min(limit, len(want))] || i > len(s) || len(got) < limit && i != len(s) {
					t.Errorf("%s of %q up to %d: %q, read %d; want %q", f.name, s, limit, got, i, want[:min(limit, len(want))])
				}
			}
		}
	}
}

// wholeFormsElsewhere is formsElsewhere on whole strings, for
// TestPathCostSameAnswers: the readings in other forms of match and of the
// old check's readings of it, each compared with every prefix in NFC.
func wholeFormsElsewhere(r *Router, host, match string, rt *Route) bool {
	if r.alone[rt] {
		return false
	}
	texts := []string{match}
	if strings.ContainsAny(match, "%;") {
		slashes, params := oldSlashesDecoded(match), oldParamsStripped(match)
		texts = append(texts, slashes, params, oldParamsStripped(slashes), oldSlashesDecoded(params))
		if twice := oldTwiceDecoded(match); twice != slashes {
			texts = append(texts, twice, oldParamsStripped(twice))
		}
	}
	forms := []func(string) string{norm.NFC.String, norm.NFKC.String, wholeBestFit}
	lists := r.hostRoutes(host)
	for _, text := range texts {
		if !nonASCII(text) {
			continue
		}
		for _, form := range forms {
			path := form(text)
			for _, list := range lists {
				for _, o := range list {
					p := o.PathPrefix
					np, own := norm.NFC.String(p), norm.NFC.String(rt.PathPrefix)
					if o == rt || p == "/" || own != "/" && (foldsTo(np, own) || foldsTo(form(own), np)) {
						continue
					}
					if n, ok := foldedPrefix(path, np); ok && (n == len(path) || path[n] == '/') &&
						r.Match(host, p+path[n:]) == o {
						return true
					}
				}
			}
		}
	}
	return false
}

// TestBestFitTable: bestFitASCII's characters lie within bestFitLow and
// bestFitHigh (appendSimplified looks only there), each becomes a printable
// ASCII character, and none is one that NFKD without non-spacing marks
// reads so already (the table holds only what that reading misses).
func TestBestFitTable(t *testing.T) {
	for r, c := range bestFitASCII {
		if r < bestFitLow || r > bestFitHigh {
			t.Errorf("%U outside %U-%U", r, bestFitLow, bestFitHigh)
		}
		if c < '!' || c > '~' {
			t.Errorf("%U becomes %q, not a printable ASCII character", r, c)
		}
		var plain []rune // NFKD without non-spacing marks, without the table
		for _, d := range norm.NFKD.String(string(r)) {
			if !unicode.Is(unicode.Mn, d) {
				plain = append(plain, d)
			}
		}
		if got := norm.NFC.String(string(plain)); got == string(c) || unicode.Is(unicode.Mn, r) {
			t.Errorf("%U: the reading without the table is %q already", r, got)
		}
	}
	if len(bestFitASCII) < 178 {
		t.Errorf("%d characters; the code pages' tables give 183", len(bestFitASCII))
	}
}

// wholeBestFit is formBestFit of all of s: bestFitASCII's characters as
// best fit writes them, the rest in NFKD without non-spacing marks, then
// NFC; bytes that are not UTF-8 stay.
func wholeBestFit(s string) string {
	var fit []byte
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if c, ok := bestFitASCII[r]; ok {
			fit = append(fit, c)
		} else {
			fit = append(fit, s[i:i+n]...)
		}
		i += n
	}
	d := norm.NFKD.String(string(fit))
	var b []byte
	for i := 0; i < len(d); {
		r, n := utf8.DecodeRuneInString(d[i:])
		if n == 1 || !unicode.Is(unicode.Mn, r) {
			b = append(b, d[i:i+n]...)
		}
		i += n
	}
	return norm.NFC.String(string(b))
}

// TestFormsDecidedPrefix: formsElsewhere says which leading bytes of a
// reading decided its answer, so that a reading starting with them is not
// read again; a reading read to its end decided nothing for longer ones
// ("/ä" is not "/ä/x"), and a longer one is decided by its first bytes.
func TestFormsDecidedPrefix(t *testing.T) {
	u := mustURL(t, "http://127.0.0.1:9000")
	r, err := NewRouter([]Route{{App: "site", Hosts: []string{"h"}, Backend: u, Group: "g"},
		{App: "aerzte", Hosts: []string{"h"}, PathPrefix: "/ärzte", Backend: u, Group: "g"}})
	if err != nil {
		t.Fatal(err)
	}
	rt, k := r.Match("h", "/"), r.readingLimit("h")
	whole := func(s string) func(int) (string, bool) { return func(int) (string, bool) { return s, true } }
	if refused, decided := r.formsElsewhere("h", rt, k, whole("/ä"), nil); refused || decided != "" {
		t.Errorf(`"/ä": %v, decided %q; want false, ""`, refused, decided)
	}
	if refused, _ := r.formsElsewhere("h", rt, k, whole("/a\u0308rzte/x"), nil); !refused {
		t.Error(`"/a\u0308rzte/x": not refused`)
	}
	long := "/ä" + strings.Repeat("x", 200)
	refused, decided := r.formsElsewhere("h", rt, k, whole(long), nil)
	if refused || decided == "" || !strings.HasPrefix(long, decided) || len(decided) > 2*k {
		t.Errorf("%d bytes: %v, decided %q (k %d)", len(long), refused, decided, k)
	}
}
