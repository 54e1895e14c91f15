package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// TestFullwidthDotSegmentsRefused: a segment whose letters a server reads
// in compatibility form (Windows' best fit, NFKC) as a dot segment, or as
// one beside a slash, is refused like "..%2F": "/public/．．/admin" is
// "/public/../admin" there, past the routing and public_paths the gateway
// decided on "/public/．．/admin". Written escaped, as browsers send them,
// and as raw bytes, which Go's server takes as they are.
func TestFullwidthDotSegmentsRefused(t *testing.T) {
	for _, p := range []string{
		"/public/%EF%BC%8E%EF%BC%8E/admin",   // ．．
		"/public/%EF%BC%8E./admin",           // ．.
		"/public/%E2%80%A5/admin",            // ‥ TWO DOT LEADER
		"/public/%E2%80%A4%E2%80%A4/admin",   // ․․ ONE DOT LEADER
		"/public/%EF%B9%92%EF%B9%92/admin",   // ﹒﹒ SMALL FULL STOP
		"/public/..%EF%BC%8Fadmin",           // ..／admin
		"/public/..%EF%BC%BCadmin",           // ..＼admin
		"/public/..%EF%B9%A8admin",           // ..﹨admin SMALL REVERSE SOLIDUS
		"/public/x%EF%BC%8F..%EF%BC%8Fadmin", // x／..／admin
		"/public/..%EF%BC%9Bx/admin",         // ..；x FULLWIDTH SEMICOLON
		"/public/..%CC%81/admin",             // .. and a combining acute, which best fit drops
		"/public/.%CC%87./admin",             // . U+0307 .
		"/public/%EF%BC%8E%EF%BC%8E%252fadmin",
		"/public/%25%EF%BC%92%EF%BD%85%25%EF%BC%92%EF%BD%85/admin", // %２ｅ%２ｅ: %2e%2e, decoded twice ".."
		"/public/%25%EF%BC%92e%252%EF%BD%85/admin",                 // %２e%2ｅ
		"/public/..%CD%BEx/admin",                                  // U+037E GREEK QUESTION MARK is ';': "..;x"
		"/public/..%E2%88%95admin",                                 // ..∕admin DIVISION SLASH, "/" for best fit
		"/public/..%E2%88%96admin",                                 // ..∖admin SET MINUS, "\\"
		"/public/..%E2%81%84admin",                                 // ..⁄admin FRACTION SLASH
		"/public/..%C2%A5admin",                                    // ..¥admin: "\\" in code page 932
		"/public/..%E2%82%A9admin",                                 // ..₩admin: "\\" in code page 949
		"/public/..%C2%B4admin",                                    // ..´admin: "/" in code page 1253
		"/public/%C2%B4..%C2%B4admin",                              // ´..´admin
		"/public/%D9%AA2e%D9%AA2e/admin",                           // ٪2e٪2e ARABIC PERCENT SIGN: %2e%2e
		"/public/．．/admin",                                         // raw bytes
		"/public/‥",
	} {
		if cp, err := normalisePath(p); err != errBadPath {
			t.Errorf("%q: %+v, %v; want errBadPath", p, cp, err)
		}
	}
}

// TestFullwidthLegitPathsKept: non-ASCII segments that no reading makes a
// dot segment pass as before, escaped for the backend.
func TestFullwidthLegitPathsKept(t *testing.T) {
	for _, c := range []struct{ in, match, raw string }{
		{"/%C3%A4rzte/x", "/ärzte/x", "/%C3%A4rzte/x"},
		{"/%E2%80%A6", "/…", "/%E2%80%A6"}, // … is "..." in NFKC: three dots, no dot segment
		{"/caf%C3%A9", "/café", "/caf%C3%A9"},
		{"/%E6%97%A5%E6%9C%AC/%EF%AC%81le", "/日本/ﬁle", "/%E6%97%A5%E6%9C%AC/%EF%AC%81le"},
		{"/x/%EF%BC%8Ehidden", "/x/．hidden", "/x/%EF%BC%8Ehidden"}, // .hidden
		{"/x/a%EF%BC%8Fb", "/x/a／b", "/x/a%EF%BC%8Fb"},             // a/b: no dot
		{"/x/%E2%92%88.", "/x/⒈.", "/x/%E2%92%88."},                // "1..": no dot segment
		{"/x/%CD%BE..", "/x/\u037e..", "/x/%CD%BE.."},              // ";..": nothing before the ';', as for ";.."
		{"/x/%EF%BC%8E%EF%BC%8E%EF%BC%8E", "/x/．．．", "/x/%EF%BC%8E%EF%BC%8E%EF%BC%8E"},
		{"/ärzte/x", "/ärzte/x", "/%C3%A4rzte/x"}, // raw bytes: escaped for the backend
	} {
		cp, err := normalisePath(c.in)
		if err != nil || cp.Match != c.match || cp.Raw != c.raw {
			t.Errorf("%q: %+v, %v; want Match %q, Raw %q", c.in, cp, err, c.match, c.raw)
		}
	}
}

// TestCompatPunctComplete: compatPunct names every character whose
// compatibility decomposition holds a dot, a slash, a backslash, a ';' or
// a '%', so compatDotSegment skips no segment whose reading has one.
func TestCompatPunctComplete(t *testing.T) {
	n := 0
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		d := norm.NFKD.String(string(r))
		want := r >= utf8.RuneSelf && d != string(r) && strings.ContainsAny(d, `./\;%`)
		if c, ok := bestFitASCII[r]; ok {
			want = want || strings.IndexByte(`./\;%`, c) >= 0
		}
		if compatPunct(r) != want {
			t.Errorf("compatPunct(%U) = %v; its decomposition is %q, best fit's %q", r, !want, d, bestFitASCII[r])
		}
		if want {
			n++
		}
	}
	if n < 47 {
		t.Errorf("%d such characters; Unicode 15 and best fit have 51", n)
	}
}

// TestLookAlikeDotsAnswerSaysWhy: the gateway answers such a path with
// 400 and says what it took for a dot segment, so that whoever wrote the
// URL can fix it (the answer named only %2F and ; before).
func TestLookAlikeDotsAnswerSaysWhy(t *testing.T) {
	g := admitGateway(t, Route{App: "site", PathPrefix: "/"})
	rec := httptest.NewRecorder()
	ok := g.handler.admit(rec, httptest.NewRequest("GET", "http://h/public/%EF%BC%8E%EF%BC%8E/admin", nil), &exchangeState{})
	if ok || rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "look-alike dots and slashes") {
		t.Errorf("admitted %v, answer %d %q; want 400 naming look-alike dots", ok, rec.Code, rec.Body.String())
	}
}
