package gateway

import (
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// backendReadsElsewhere reports whether a backend could read match
// (cleanPath.Match) as a path that host routes to another app than rt:
// with its encoded slashes as separators (appendSlashesDecoded), without its
// ";parameters" (appendParamsStripped), or both, in either order; and, for a
// backend that ignores case (IIS, ASP.NET, a Windows or macOS file
// system), as the path of an app whose path_prefix differs from it only
// in case (foldsElsewhere); and, for a path with non-ASCII letters, in
// another Unicode form: canonically equivalent (macOS file systems) or as
// Windows' best fit simplifies it (formsElsewhere, pathforms.go). Dot
// segments that such a reading would make are refused by normalisePath
// already. rt is router.Match(host, match).
func backendReadsElsewhere(router *Router, host, match string, rt *Route) bool {
	if router.alone[rt] {
		return false // no other app on the host: most hosts
	}
	cased := hasCase(match)
	if router.foldsElsewhere(host, match, rt, cased) {
		return true
	}
	// Each reading is written up to the k bytes that decide it (see
	// readingLimit), without a copy per rewrite: a 64 KB path costs a look
	// at its first bytes, not a copy of it per reading and per rewrite.
	k := 0
	var seen []string    // readings whose forms were read (formsElsewhere)
	if nonASCII(match) { // only a non-ASCII letter has other forms: ASCII paths skip this
		k = router.readingLimit(host)
		// First k bytes in ASCII are their own forms (but for the last,
		// which a combining mark after it may change and which decides
		// nothing).
		if nonASCII(match[:min(len(match), k)]) {
			refused, decided := router.formsElsewhere(host, rt, k, func(int) (string, bool) { return match, true }, nil)
			if refused {
				return true
			}
			if decided != "" {
				seen = append(make([]string, 0, 7), decided)
			}
		}
	}
	if strings.IndexByte(match, '%') < 0 && strings.IndexByte(match, ';') < 0 {
		return false // nothing else to read otherwise: most requests
	}
	if k == 0 {
		k = router.readingLimit(host)
	}
	var scratch []byte // reading's buffer for first's part, shared by the readings
	formsIn := func(first, second rewrite) bool {
		refused, decided := router.formsElsewhere(host, rt, k, func(k1 int) (string, bool) {
			b := reading(match, k1, first, second, &scratch)
			return string(b), len(b) < k1
		}, seen)
		if decided != "" {
			seen = append(seen, decided)
		}
		return refused
	}
	reads := func(first, second rewrite) bool {
		alt := string(reading(match, k, first, second, &scratch))
		// Shorter than k, alt is the whole reading. A longer one may be
		// taken to have case: one without that foldsElsewhere finds at
		// another app is routed there by Match already. Whether the whole
		// reading is UTF-8 is asked only when it matters.
		if len(alt) < k && alt == match {
			return false // answered above
		}
		cased := len(alt) >= k || hasCase(alt)
		return router.Match(host, alt) != rt || router.foldsIn(host, alt, rt, cased, func() bool {
			return !utf8.Valid(reading(match, math.MaxInt, first, second, &scratch))
		}) || nonASCII(alt) && formsIn(first, second)
	}
	if reads(appendSlashesDecoded, nil) || reads(appendParamsStripped, nil) ||
		reads(appendSlashesDecoded, appendParamsStripped) || reads(appendParamsStripped, appendSlashesDecoded) {
		return true
	}
	// Decoded twice, a path without other escapes than %2F and %5C is
	// appendSlashesDecoded's.
	return otherEscape(match) && (reads(appendTwiceDecoded, nil) || reads(appendTwiceDecoded, appendParamsStripped))
}

// rewrite appends a reading of s to b (empty), up to limit bytes, and
// returns it and how much of s it read.
type rewrite func(b []byte, s string, limit int) ([]byte, int)

// reading returns the first k bytes of first's reading of match, read
// again by second unless it is nil. first reads match up to what makes 2k
// bytes; second, what first wrote, which it reads again with four times as
// many bytes when those were not enough for k bytes of its own, up to all.
// first writes into *scratch, over what the last round or reading left
// there, and second reads it in place, so the readings of a path that
// drop a long ";parameter" segment allocate about one and a third times
// the part of first's reading they needed, once (a 60 KB parameter cost
// 0.86 MB a call with a fresh buffer and a string copy per round and
// reading).
func reading(match string, k int, first, second rewrite, scratch *[]byte) []byte {
	if second == nil {
		b, _ := first(nil, match, k)
		return b
	}
	t := *scratch
	defer func() { *scratch = t }()
	for k1 := 2 * min(k, math.MaxInt/8); ; k1 = 4 * min(k1, math.MaxInt/8) {
		if n := min(k1, len(match)); cap(t) < n {
			// first writes at most k1 bytes, and no more than it reads:
			// the buffer grows fourfold, not by append's quarters.
			t = make([]byte, 0, n)
		}
		var i int
		t, i = first(t[:0], match, k1)
		// second only reads t and writes a buffer of its own, so t is
		// read as a string without a copy.
		b, j := second(nil, unsafe.String(unsafe.SliceData(t), len(t)), k)
		// second decides on a byte with the two after it in view, and
		// reads up to a "/": what it wrote holds for the whole reading
		// unless it got near the end of first's part.
		if i == len(match) || len(b) >= k && j+2 < len(t) {
			return b
		}
	}
}

// otherEscape reports whether s holds a %-escape other than %2F and %5C
// (either case), which appendTwiceDecoded decodes and appendSlashesDecoded keeps.
func otherEscape(s string) bool {
	for {
		i := strings.IndexByte(s, '%') // from one '%' to the next, not byte by byte
		if i < 0 || i+2 >= len(s) {
			return false
		}
		if isHex(s[i+1]) && isHex(s[i+2]) &&
			!(s[i+1] == '2' && s[i+2]|0x20 == 'f' || s[i+1] == '5' && s[i+2]|0x20 == 'c') {
			return true
		}
		s = s[i+1:]
	}
}

// hostRoutes are the routes of host's name: those of the name itself and
// those of its wildcard ("*.example.com" for "a.example.com").
func (r *Router) hostRoutes(host string) [2][]*Route {
	h := asciiLower(hostOnly(host))
	lists := [2][]*Route{r.exact[h]}
	if i := strings.IndexByte(h, '.'); i > 0 {
		lists[1] = r.wild[h[i+1:]]
	}
	return lists
}

// readingLimit is how many leading bytes of a reading of a path decide
// Match and foldsElsewhere for host: with L the longest path_prefix of the
// host's routes, Match looks at L+1 bytes; foldedPrefix takes at most 4
// bytes of the path for each byte of a prefix (a letter of another width
// in the other case), and the path it then routes adds L+1; codePagePrefix
// takes at most 2 for each. 6L+8 covers all of them, and the readings in
// other forms (formsElsewhere), compared by foldedPrefix with prefixes in
// NFC: L is the longer of a prefix and its NFC (a few letters, U+0958 and
// the like, NFC decomposes).
func (r *Router) readingLimit(host string) int {
	longest := 0
	for _, list := range r.hostRoutes(host) {
		for _, o := range list {
			longest = max(longest, len(o.PathPrefix), len(r.forms[o].nfc))
		}
	}
	return 6*longest + 8
}

// foldsElsewhere reports whether path, written with the case of another
// route's path_prefix, is routed there: with an app at "/" and one at
// "/admin" on a host, "/ADMIN/users" is routed to the first, and a backend
// that ignores case serves it as "/admin/users". A prefix that differs from
// rt's only in case does not count, so two apps at "/Admin" and "/admin"
// both stay reachable. Case is that of any letter, not only ASCII ones:
// "/ÄRZTE" is "/ärzte" on IIS (see foldedPrefix); and a path that is not
// UTF-8 may spell another app's prefix in a legacy code page: "/%E4rzte"
// is "/ärzte" on IIS too (see codePagePrefix). cased is hasCase(path),
// which the caller needs too.
func (r *Router) foldsElsewhere(host, path string, rt *Route, cased bool) bool {
	return r.foldsIn(host, path, rt, cased, func() bool { return !utf8.ValidString(path) })
}

// foldsIn is foldsElsewhere for path, or the first bytes of a longer
// reading (readingLimit): cased tells whether the whole may hold a letter
// with case (hasCase), and invalid whether it is not UTF-8.
func (r *Router) foldsIn(host, path string, rt *Route, cased bool, invalid func() bool) bool {
	notUTF8 := -1 // unknown; then 0 or 1 (see codePagePrefix)
	lists := r.hostRoutes(host)
	for _, list := range lists {
		for _, o := range list {
			p := o.PathPrefix
			if o == rt || p == "/" || !cased && !hasCase(p) {
				continue // the same app, or one only case could make match, and there is none
			}
			n, ok := foldedPrefix(path, p)
			folded := ok && (n == len(path) || path[n] == '/')
			codePage := false
			if cased && codePageStart(path, p) && codePagePrefix(path, p) {
				if notUTF8 < 0 { // once, and only for a path that may be read so
					notUTF8 = 0
					if invalid() {
						notUTF8 = 1
					}
				}
				codePage = notUTF8 == 1
			}
			if !folded && !codePage || foldsTo(p, rt.PathPrefix) {
				continue
			}
			if codePage || r.Match(host, p+path[n:]) == o {
				return true
			}
		}
	}
	return false
}

// hasCase reports whether s holds an upper-case ASCII letter or a
// non-ASCII byte (part of a letter that may have another case).
func hasCase(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// foldedPrefix reports whether s starts with prefix, ignoring case, and
// how many bytes of s that start takes (the cases of a letter may differ
// in length: "k" and the Kelvin sign). Two letters are one when their
// upper or their lower cases are (Unicode's simple mappings, code point
// by code point): NTFS's and IIS's upcase table and .NET's
// OrdinalIgnoreCase map one letter to one ("Ä" and "ä"; "ß" is not "SS"),
// and the lower cases add what a backend that lower-cases reads as one
// ("k" and the Kelvin sign). Refusing a look-alike too many costs
// nothing: no app links to "/admın" with a dotless i.
func foldedPrefix(s, prefix string) (int, bool) {
	i := 0
	for j := 0; j < len(prefix); {
		if i >= len(s) {
			return 0, false
		}
		a, b := s[i], prefix[j]
		if a < utf8.RuneSelf && b < utf8.RuneSelf {
			if a != b && asciiLowerByte(a) != asciiLowerByte(b) {
				return 0, false
			}
			i, j = i+1, j+1
			continue
		}
		ra, na := utf8.DecodeRuneInString(s[i:])
		rb, nb := utf8.DecodeRuneInString(prefix[j:])
		switch {
		case ra == utf8.RuneError && na == 1 || rb == utf8.RuneError && nb == 1:
			if na != nb || a != b { // not UTF-8: only the same byte is the same
				return 0, false
			}
		case ra != rb && unicode.ToUpper(ra) != unicode.ToUpper(rb) && unicode.ToLower(ra) != unicode.ToLower(rb):
			return 0, false
		}
		i, j = i+na, j+nb
	}
	return i, true
}

// codePagePrefix reports whether s may start with prefix, up to a "/" or
// its end, for a backend that reads s in a legacy code page: HTTP.sys
// (IIS, ASP.NET's HttpListener) decodes a URL that is not UTF-8 in the
// system's ANSI or DBCS code page by default (EnableNonUtf8), so
// "/%E4rzte" is "/ärzte" on a Western European Windows. Which letter a
// byte is depends on the code page: any one or two bytes from a non-ASCII
// one on may be any non-ASCII letter of prefix; an ASCII letter of prefix
// is the same ASCII byte, but for its case. Only prefixes with a
// non-ASCII letter count (foldedPrefix reads the others), and only for s
// that is not UTF-8, which the caller checks after this (and
// codePageStart, a cheaper first look). Past codePageReadings ways to read
// s so far it reports true: refusing such a path costs nothing, and the
// work stays linear in prefix.
func codePagePrefix(s, prefix string) bool {
	// at: the offsets in s where prefix, read so far, may end (increasing).
	var bufA, bufB [2 * codePageReadings]int
	at, next := append(bufA[:0], 0), bufB[:0]
	nonASCII := false
	for j := 0; j < len(prefix) && len(at) > 0; at, next = next, at[:0] {
		if b := prefix[j]; b < utf8.RuneSelf {
			for _, i := range at {
				if i < len(s) && s[i] < utf8.RuneSelf && asciiLowerByte(s[i]) == asciiLowerByte(b) {
					next = append(next, i+1)
				}
			}
			j++
			continue
		}
		nonASCII = true
		for _, i := range at {
			if i < len(s) && s[i] >= utf8.RuneSelf {
				if len(next) == 0 || next[len(next)-1] < i+1 {
					next = append(next, i+1) // a single-byte code page
				}
				if i+1 < len(s) {
					next = append(next, i+2) // a double-byte one: a lead byte and any trail byte
				}
			}
		}
		if len(next) > codePageReadings {
			return true
		}
		_, nb := utf8.DecodeRuneInString(prefix[j:])
		j += nb
	}
	if !nonASCII {
		return false
	}
	for _, i := range at {
		if i == len(s) || s[i] == '/' {
			return true
		}
	}
	return false
}

// codePageStart reports whether prefix has a non-ASCII letter, s and
// prefix are the same up to it but for ASCII case, and s has a non-ASCII
// byte there: what codePagePrefix needs to report true.
func codePageStart(s, prefix string) bool {
	for i := 0; i < len(prefix) && i < len(s); i++ {
		a, b := s[i], prefix[i]
		if b >= utf8.RuneSelf {
			return a >= utf8.RuneSelf
		}
		if a >= utf8.RuneSelf || asciiLowerByte(a) != asciiLowerByte(b) {
			return false
		}
	}
	return false
}

// codePageReadings bounds the ways codePagePrefix follows.
const codePageReadings = 8

func asciiLowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// foldsTo reports whether a and b differ at most in case (foldedPrefix).
func foldsTo(a, b string) bool {
	n, ok := foldedPrefix(a, b)
	return ok && n == len(a)
}

// appendSlashesDecoded reads s (cleanPath.Match) as a backend that
// decodes %2F does: every "%2F" a separator, empty segments collapsed. For
// a backend that decodes the path twice, a client's "%252F", "%252f" and
// "%255C" (here "%2F", "%2f" and "%5C", in either case) are separators
// too. A rewrite.
func appendSlashesDecoded(b []byte, s string, limit int) ([]byte, int) {
	i := 0
	for i < len(s) && len(b) < limit {
		c := s[i]
		if c == '%' && i+2 < len(s) && (s[i+1] == '2' && s[i+2]|0x20 == 'f' || s[i+1] == '5' && s[i+2]|0x20 == 'c') {
			c = '/'
			i += 3
		} else {
			i++
		}
		if c == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, c)
	}
	return b, i
}

// appendTwiceDecoded reads match as a backend that decodes the path a
// second time does: a client's "%2561dmin" is "%61dmin" here and "admin"
// there; "%2F" and "%5C" (either case) are separators, as in
// appendSlashesDecoded, empty segments collapsed. A "%" without two hex
// digits stays. A rewrite.
func appendTwiceDecoded(b []byte, match string, limit int) ([]byte, int) {
	i := 0
	for ; i < len(match) && len(b) < limit; i++ {
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
	return b, i
}

// appendParamsStripped reads s as a backend that drops path parameters
// does: each segment ends at its first ";" (or "%3B", a ";" for a backend
// that decodes twice), empty segments collapsed. A rewrite.
func appendParamsStripped(b []byte, s string, limit int) ([]byte, int) {
	i := 0
	for ; i < len(s) && len(b) < limit; i++ {
		c := s[i]
		if c == ';' || c == '%' && i+2 < len(s) && s[i+1] == '3' && s[i+2]|0x20 == 'b' {
			j := strings.IndexByte(s[i:], '/') // the segment's end
			if j < 0 {
				i = len(s)
				break
			}
			i += j
			c = '/'
		}
		if c == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, c)
	}
	return b, i
}
