package gateway

import (
	"math/rand/v2"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// normaliseCostCases are paths a request head may carry (max_header_bytes
// is 64 KiB) that take normalisePath's slow path: one long segment, many
// short ones, escapes in all their forms, and two ordinary paths.
func normaliseCostCases() []struct{ name, escaped string } {
	return []struct{ name, escaped string }{
		{"plain", "/static/app.js"},
		{"one2F", "/static/js%2Fapp.js"},
		{"60k_2F", "/" + strings.Repeat("a%2F", 15000)},
		{"60k_semi", strings.Repeat("/a;b", 15000)},
		{"60k_25XX", "/" + strings.Repeat("%2541", 12000)},
		{"60k_mixed", "/" + strings.Repeat("a%2Fb;c%253Bd%2541/", 3000)},
		{"60k_nonASCII", "/" + strings.Repeat("%C3%A4%2F", 6600)},
		{"30k_a2Fb", strings.Repeat("/a%2Fb", 5000)},
	}
}

// TestNormalisePathAllocsBounded: the slow path allocates at most twice,
// however many segments and escapes the path has (the version before
// allocated for every segment: 27,063 times for 60k_mixed, 35,060 for
// 30k_a2Fb).
func TestNormalisePathAllocsBounded(t *testing.T) {
	for _, c := range normaliseCostCases() {
		n := testing.AllocsPerRun(20, func() {
			if _, err := normalisePath(c.escaped); err != nil {
				t.Fatal(err)
			}
		})
		if n > 2 {
			t.Errorf("%s (%d bytes): %v allocations, want at most 2", c.name, len(c.escaped), n)
		}
	}
}

// normaliseTokens make up the random paths: separators, dots and
// parameters in every spelling (escaped, escaped twice, either case), bad
// and odd escapes, letters whose lower case is ASCII, bytes that are not
// UTF-8, control characters.
var normaliseTokens = []string{
	"/", "/", "/", "//", `\`, ".", ".", "..", "..", "%2e", "%2E", "%252e", "%252E", "%2F", "%2f", "%252F", "%252f",
	"%5C", "%5c", "%255c", "%255C", ";", ";x", "%3B", "%3b", "%253b", "%253B", "%25", "%41", "%61", "%C3%A4", "%E4",
	"%00", "%1F", "%7F", "%7E", "%20", "%", "%2", "%5", "%3", "%G1", "%2G", "a", "A", "b", "c", "e", "f", "C", "E",
	"F", "B", "2", "5", "3", "ä", "\xe4", "\xff", "\u0130", "\u212a", "\x01", "\x7f", "?", "#", "%3F", "%23",
	"%32", "%35", "%33", "%65", "%45", "%66", "%46", "%63", "%43", "%62", "%42", "~", "@", ":", "!", "'", "=", "+",
	// letters that compatibility forms read as dots, slashes, ';' or
	// nothing (compatDotSegment), escaped and raw
	"%EF%BC%8E", "%ef%bc%8e", "．", "%E2%80%A5", "%E2%80%A4", "%EF%BC%8F", "／", "%EF%BC%BC", "%EF%BC%9B", "%CC%81",
	"\u0301", "%E2%80%A6", "%EF%AC%81",
	// and those that best fit reads so (bestFitASCII): ∖ ∕ ´ ¥ ₩ ٪
	"%E2%88%96", "%E2%88%95", "%C2%B4", "\u00a5", "%E2%82%A9", "%D9%AA",
}

// randomEscapedPath joins n random tokens, mostly after a leading "/".
func randomEscapedPath(rng *rand.Rand, n int) string {
	var b strings.Builder
	if rng.IntN(50) != 0 {
		b.WriteByte('/')
	}
	for range n {
		b.WriteString(normaliseTokens[rng.IntN(len(normaliseTokens))])
	}
	return b.String()
}

// normaliseKnownPaths are the paths of the other normalisePath tests.
func normaliseKnownPaths() []string {
	return []string{
		"", "/", "/a/b", "/a/b/", "/a/../b", "/../../b", "/a/./b/.", "/a/..", "//a///b", `/a\b`, `\a`,
		"/a/%2e%2e/b", "/a/%2E/b", "/a%2Fb", "/a%2fb/c", "/%7Euser/%41", "/a%20b", "/a%3Fb%23c%25", "/a;b=c/d",
		"/caf%C3%A9", "/.well-known/x", "a", "/a%", "/a%2", "/a%zz", "/a%00", "/a%0a", "/a\x01", "/a%5Cb", "/a%5c",
		"/..%2F", "/a/..%2fb", "/a/.%2F", "/..;/a", "/.;x/a", "/a/..;", "/x%2F..%2Fy",
		"/public/%252e%252e/admin", "/public/%252E%252e/admin", "/public/.%252e/admin", "/public/%252e/admin",
		"/public/..%255cadmin", "/public/..%255Cadmin", "/public/%252e%252e%252fadmin", "/public/x%252F%252e%252e",
		"/public/%252e%252e;x/admin", "/public/..%253bx/admin", "/public/%252e%252e%253b/admin",
		"/a/%252e%252ex", "/a/100%25", "/a/%25zz", "/a/x.%252e", "/a/%2Fb%2e",
		"/admin;x/users", "/admin;/users", "/admin;jsessionid=1", "/;x/admin", "/admin%3Bx/users",
		"/admin%253bx/users", "/admin%252fusers", "/admin%255cusers", "/admin%255Cusers", "/%2Fadmin;x/users",
		"/admin/a;b", "/admin;x/../api", "/a;b/admin", "/docs;v=1/x", "/api/v4/projects/group%2Fproject",
		"/group%2Fsub/project", "/admin/x;jsessionid=1", "/a%2fb%5cc", "/%2F%2Fa%2F", "/a;x/b;y", "/a%3bx%2Fy/z", "/a%3",
		"/a/../b/x", "/b/%2e%2e/a", "//a", `/b\..\a`, "/api/v1/items/123", "/%25%32%66..", "/x/%25%32%65%25%32%65/y",
		"/x/.%25%33%62", "/%2e%2E%2F", "/..%2", "/.%", "/a/..%", "/a/%2e%2e%25", "/a/.;%2F..", "/a/x;%2F..",
	}
}

// sameNormalised reports (through t) whether normalisePath and the version
// before it answer alike for p, and whether p was refused.
func sameNormalised(t testing.TB, p string) (refused bool) {
	t.Helper()
	got, err := normalisePath(p)
	want, wantErr := oldNormalisePath(p)
	if err == errBadPath && wantErr == nil && (compatDotOracle(want.Match) || compatDotSegmentOf(p)) {
		compatRefused.Add(1)
		return true // refused since session 23 (compatDotSegment)
	}
	if got != want || err != wantErr {
		if len(p) > 200 {
			t.Fatalf("%d-byte path %.200q...: got %.200q %v, the old normalisePath %.200q %v", len(p), p, got, err, want, wantErr)
		}
		t.Fatalf("%q: got %q %v, the old normalisePath %q %v", p, got, err, want, wantErr)
	}
	return err != nil
}

// TestNormalisePathSameAnswers: normalisePath answers as the version that
// split the path and decoded each segment into builders of its own
// (oldNormalisePath below): Match, Path, Raw and the error, for the paths
// of the other tests, for random paths of the tokens that matter, and for
// long ones.
func TestNormalisePathSameAnswers(t *testing.T) {
	for _, p := range normaliseKnownPaths() {
		sameNormalised(t, p)
	}
	rng := rand.New(rand.NewPCG(23, 5))
	var checked, refused int
	cases := 50000
	if raceEnabled {
		cases = 5000 // a tenth, as TestPathCostSameAnswers: make test runs it whole without the detector
	}
	for range cases {
		n := 1 + rng.IntN(6)
		if rng.IntN(3) == 0 {
			n = 6 + rng.IntN(40)
		}
		if sameNormalised(t, randomEscapedPath(rng, n)) {
			refused++
		}
		checked++
	}
	for _, c := range normaliseCostCases() {
		sameNormalised(t, c.escaped)
	}
	var long, longRefused int
	for i := range 12 { // 10-60 KB: accepted paths one after the other, and one token among them in every other
		var b strings.Builder
		size := 10<<10 + rng.IntN(50<<10)
		for b.Len() < size {
			p := randomEscapedPath(rng, 1+rng.IntN(30))
			_, errOld := oldNormalisePath(p)
			if _, err := normalisePath(p); err == nil && errOld == nil && p != "" && p[0] == '/' {
				b.WriteString(p)
			}
		}
		p := b.String()
		if i%2 == 1 {
			at := rng.IntN(len(p))
			p = p[:at] + normaliseTokens[rng.IntN(len(normaliseTokens))] + p[at:]
		}
		if sameNormalised(t, p) {
			longRefused++
		}
		long++
	}
	if refused < checked/10 || refused > checked*9/10 || longRefused > long*3/4 {
		t.Errorf("%d of %d random paths refused, %d of %d long ones: too one-sided to compare", refused, checked, longRefused, long)
	}
	if n := compatRefused.Load(); n < int64(100*cases/50000) {
		t.Errorf("%d paths refused by compatibility forms only: too few to compare", n)
	}
	t.Logf("%d random paths, %d refused (%d by compatibility forms only); %d long ones, %d refused", checked, refused,
		compatRefused.Load(), long, longRefused)
}

// FuzzNormalisePath compares normalisePath with oldNormalisePath.
func FuzzNormalisePath(f *testing.F) {
	for _, p := range normaliseKnownPaths() {
		f.Add(p)
	}
	for _, tok := range normaliseTokens {
		f.Add("/" + tok)
		f.Add("/a/" + tok + "./" + tok + "%2e;x/")
	}
	f.Fuzz(func(t *testing.T, p string) {
		sameNormalised(t, p)
	})
}

// compatRefused counts the paths sameNormalised saw refused only by
// compatDotSegment.
var compatRefused atomic.Int64

// compatDotSegmentOf is compatDotOracle for the segments of an escaped
// path before dot segments are resolved: "/＼.．/.." is "/" for the old
// normalisePath, but its first segment reads as "\.." and is refused.
func compatDotSegmentOf(escaped string) bool {
	for _, seg := range strings.FieldsFunc(escaped, func(r rune) bool { return r == '/' || r == '\\' }) {
		if d, err := url.PathUnescape(seg); err == nil && compatDotOracle(strings.ReplaceAll(d, "/", "%2F")) {
			return true
		}
	}
	return false
}

// compatDotOracle reports whether a path the old normalisePath accepted
// (match form) has a segment that is a dot segment, or holds one, once read
// as best fit does (wholeBestFit), with "/" and "\" in it as
// separators: what compatDotSegment refuses, found here on whole strings.
func compatDotOracle(match string) bool {
	for _, seg := range strings.Split(match, "/") {
		read := strings.NewReplacer("/", "%2F", `\`, "%2F").Replace(wholeBestFit(seg))
		if read != seg && oldNormHiddenDotSegment(read) {
			return true
		}
	}
	return false
}

// normalisePath and its helpers as they were before the slow path became
// linear, to compare answers with (percentEncode, isHex and unhex, which
// did not change, are called as they are). One change since: the fast
// path takes no byte from 0x7f on (session 23: raw non-ASCII letters are
// checked by compatDotSegment and escaped for the backend like escaped
// ones).

func oldNormalisePath(escaped string) (cleanPath, error) {
	if escaped == "" {
		return cleanPath{Match: "/", Path: "/", Raw: "/"}, nil
	}
	if escaped[0] != '/' {
		return cleanPath{}, errBadPath
	}
	// Fast path: nothing to decode, no dot segment, no empty segment,
	// no backslash, nothing to refuse. Most requests; nothing allocates.
	if oldNormIsPlainPath(escaped) {
		return cleanPath{Match: escaped, Path: escaped, Raw: escaped}, nil
	}
	// Slow path: decode and resolve segment by segment.
	s := strings.ReplaceAll(escaped, `\`, "/")
	trailing := strings.HasSuffix(s, "/")
	parts := strings.Split(s[1:], "/")
	type seg struct{ match, path, raw string }
	out := make([]seg, 0, len(parts))
	for i, p := range parts {
		if p == "" {
			continue
		}
		match, path, err := oldNormDecodeSegment(p)
		if err != nil {
			return cleanPath{}, err
		}
		switch match {
		case ".":
			if i == len(parts)-1 {
				trailing = true
			}
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if i == len(parts)-1 {
				trailing = true
			}
			continue
		}
		if oldNormHiddenDotSegment(match) {
			return cleanPath{}, errBadPath
		}
		out = append(out, seg{match, path, oldNormEscapeSegment(path)})
	}
	var m, pa, raw strings.Builder
	for _, sg := range out {
		m.WriteByte('/')
		m.WriteString(sg.match)
		pa.WriteByte('/')
		pa.WriteString(sg.path)
		raw.WriteByte('/')
		raw.WriteString(sg.raw)
	}
	if len(out) == 0 || trailing {
		m.WriteByte('/')
		pa.WriteByte('/')
		raw.WriteByte('/')
	}
	return cleanPath{Match: m.String(), Path: pa.String(), Raw: raw.String()}, nil
}

// oldNormIsPlainPath reports whether p needs no normalisation.
func oldNormIsPlainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '%' || c == '\\' || c == ';' || c < 0x20 || c >= 0x7f:
			return false
		case c == '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return false
			}
		}
	}
	return true
}

// oldNormDecodeSegment decodes one escaped segment. match keeps an encoded slash
// as "%2F"; path decodes it.
func oldNormDecodeSegment(s string) (match, path string, err error) {
	if !strings.ContainsRune(s, '%') {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] == 0x7f {
				return "", "", errBadPath
			}
		}
		return s, s, nil
	}
	var m, p strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if c < 0x20 || c == 0x7f {
				return "", "", errBadPath
			}
			m.WriteByte(c)
			p.WriteByte(c)
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", "", errBadPath
		}
		d := unhex(s[i+1])<<4 | unhex(s[i+2])
		i += 2
		switch {
		case d < 0x20 || d == 0x7f || d == '\\':
			return "", "", errBadPath
		case d == '/':
			m.WriteString("%2F")
		default:
			m.WriteByte(d)
		}
		p.WriteByte(d)
	}
	return m.String(), p.String(), nil
}

// oldNormDoubleDecoded turns the %-escapes that a second decoding makes into
// separators, dots and parameters into what they become (lower case).
var oldNormDoubleDecoded = strings.NewReplacer("%5c", "%2f", "%2e", ".", "%3b", ";")

// oldNormHiddenDotSegment reports whether a segment (match form) turns into a dot
// segment for a server that decodes %2F or strips ";parameters", or that
// decodes the path a second time: a client's "%252e%252e" is "%2e%2e" here
// and ".." there, and its "%255c" a backslash, which such servers (IIS,
// among others) take for a slash.
func oldNormHiddenDotSegment(match string) bool {
	if strings.IndexByte(match, '%') >= 0 {
		match = strings.ToLower(match)
		match = oldNormDoubleDecoded.Replace(match)
	}
	for part := range strings.SplitSeq(match, "%2f") {
		if before, _, _ := strings.Cut(part, ";"); before == "." || before == ".." {
			return true
		}
	}
	return false
}

// oldNormEscapeSegment escapes a decoded segment: RFC 3986 pchar stays, everything
// else (including "/", "?", "#", "%" and non-ASCII bytes) is %XX.
func oldNormEscapeSegment(s string) string { return percentEncode(s, oldNormIsPchar) }

// oldNormIsPchar is isPchar as it was before its table.
func oldNormIsPchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0
}
