package gateway

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"unicode/utf8"
)

// cleanPath is a request path after normalisation, in the three forms the
// gateway needs. Routing, public_paths and the policy decide on Match; the
// backend receives Raw (which decodes to Path), so the path that was judged
// is the path that is forwarded.
type cleanPath struct {
	// Match is the decoded path with every encoded slash kept as "%2F":
	// what routes and public_paths are compared with.
	Match string
	// Path is the fully decoded path (url.URL.Path).
	Path string
	// Raw is the escaped path sent to the backend (url.URL.RawPath).
	Raw string
}

// errBadPath is returned for paths the gateway refuses to interpret.
var errBadPath = errors.New("malformed request path")

// normalisePath cleans an escaped request path (url.URL.EscapedPath):
//   - a backslash is a slash (as browsers and some servers treat it);
//   - empty segments collapse ("//" is "/");
//   - percent-encoded octets are decoded, except an encoded slash, which
//     stays part of its segment ("%2F"), never a separator;
//   - "." and ".." segments (also written %2e) are resolved; ".." never
//     climbs above the root;
//   - refused: a path that does not start with "/", a bad %-escape, control
//     characters, an encoded backslash (%5C), and segments that would become
//     dot segments on a server that decodes %2F, drops ";parameters" or
//     decodes the path twice ("..%2F", "..;x", "%252e%252e", "..%255c").
//
// The query is not part of the path: url.URL has already split it off at
// the first "?", so a "?" inside the path is always encoded (%3F) and stays
// data. A trailing slash is kept.
func normalisePath(escaped string) (cleanPath, error) {
	if escaped == "" {
		return cleanPath{Match: "/", Path: "/", Raw: "/"}, nil
	}
	if escaped[0] != '/' {
		return cleanPath{}, errBadPath
	}
	// Fast path: nothing to decode, no dot segment, no empty segment,
	// no backslash, nothing to refuse. Most requests; nothing allocates.
	if isPlainPath(escaped) {
		return cleanPath{Match: escaped, Path: escaped, Raw: escaped}, nil
	}
	// Slow path: one pass to check the escapes and size the buffers, one
	// that writes each segment in match and raw form into them (a ".."
	// takes the last segment back off), one that copies the three forms into
	// a single string. Linear in the length of the path, whatever its
	// segments; at most two allocations (one for a short path).
	rawLen, ok := rawLength(escaped)
	if !ok {
		return cleanPath{}, errBadPath
	}
	// Match is never longer than escaped, nor Raw than rawLen; +1 each for
	// a trailing slash.
	mCap, rCap := len(escaped)+1, rawLen+1
	var small [256]byte
	buf := small[:]
	if mCap+rCap > len(buf) {
		buf = make([]byte, mCap+rCap)
	}
	m, r := buf[:0:mCap], buf[mCap:mCap:mCap+rCap]
	var scratch []byte // compatDotSegment's, for the segments that need it
	last := escaped[len(escaped)-1]
	trailing := last == '/' || last == '\\'
	for i := 1; i < len(escaped); i++ { // i: where a segment starts
		if c := escaped[i]; c == '/' || c == '\\' {
			continue // an empty one
		}
		mStart, rStart := len(m), len(r)
		var n int
		m, r, n = appendSegment(append(m, '/'), append(r, '/'), escaped[i:])
		i += n
		final := i == len(escaped)
		match := m[mStart+1:]
		if string(match) == "." || string(match) == ".." {
			m, r = m[:mStart], r[:rStart]
			if len(match) == 2 && len(m) > 0 { // the segment before goes
				m, r = m[:bytes.LastIndexByte(m, '/')], r[:bytes.LastIndexByte(r, '/')]
			}
			if final {
				trailing = true
			}
			continue
		}
		if hiddenDotSegment(match) || compatDotSegment(match, &scratch) {
			return cleanPath{}, errBadPath
		}
	}
	if len(m) == 0 || trailing {
		m, r = append(m, '/'), append(r, '/')
	}
	return joinPath(m, r), nil
}

// rawLength checks the escapes of a path that isPlainPath refused and
// returns the length of its raw form (Raw) before dot segments are
// resolved. ok is false for a bad %-escape, a control character (escaped or
// not) and an encoded backslash.
func rawLength(escaped string) (n int, ok bool) {
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch c {
		case '/', '\\':
			n++
			continue
		case '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return 0, false
			}
			c = unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			i += 2
			if c == '\\' {
				return 0, false
			}
		}
		switch {
		case c < 0x20 || c == 0x7f:
			return 0, false
		case isPchar(c):
			n++
		default:
			n += 3
		}
	}
	return n, true
}

// appendSegment appends the escaped segment that s starts with (up to the
// first "/" or "\\"; rawLength has checked its escapes) to m, decoded with an
// encoded slash kept as "%2F" (match form), and to r, escaped again: RFC
// 3986 pchar stays, everything else (including "/", "?", "#", "%" and
// non-ASCII bytes) is %XX (raw form). n is the length of the segment.
func appendSegment(m, r []byte, s string) (_, _ []byte, n int) {
	const hex = "0123456789ABCDEF"
	for ; n < len(s); n++ {
		c := s[n]
		switch c {
		case '/', '\\':
			return m, r, n
		case '%':
			c = unhex(s[n+1])<<4 | unhex(s[n+2])
			n += 2
		}
		switch {
		case c == '/':
			m = append(m, "%2F"...)
			r = append(r, "%2F"...)
		case isPchar(c):
			m = append(m, c)
			r = append(r, c)
		default:
			m = append(m, c)
			r = append(r, '%', hex[c>>4], hex[c&0xf])
		}
	}
	return m, r, n
}

// joinPath makes the cleanPath of a path in match form (m) and raw form
// (r): Path is r decoded. The three share one string.
func joinPath(m, r []byte) cleanPath {
	pathLen := len(r) - 2*bytes.Count(r, []byte{'%'})
	var b strings.Builder
	b.Grow(len(m) + len(r) + pathLen)
	b.Write(m)
	b.Write(r)
	for i := 0; i < len(r); {
		j := i
		for j < len(r) && r[j] != '%' {
			j++
		}
		b.Write(r[i:j])
		if j == len(r) {
			break
		}
		b.WriteByte(unhex(r[j+1])<<4 | unhex(r[j+2]))
		i = j + 3
	}
	s := b.String()
	return cleanPath{Match: s[:len(m)], Raw: s[len(m) : len(m)+len(r)], Path: s[len(m)+len(r):]}
}

// isPlainPath reports whether p needs no normalisation.
func isPlainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '%' || c == '\\' || c == ';' || c < 0x20 || c >= 0x7f:
			return false // also bytes from 0x80 on: their letters may read as dots (compatDotSegment)
		case c == '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return false
			}
		}
	}
	return true
}

// compatDotSegment reports whether a segment (match form) with non-ASCII
// letters turns into a dot segment, or holds one, for a server that reads
// it in Unicode compatibility form, as Windows' best fit does for programs
// that read paths in a code page (and NFKC for others): FULLWIDTH FULL
// STOP "．" and ONE DOT LEADER "․" are ".", TWO DOT LEADER "‥" is "..",
// FULLWIDTH SOLIDUS "／" and REVERSE SOLIDUS "＼" separate, and "..\u0301"
// loses its accent, so "/public/．．/admin" or "/public/..／admin" is
// "/public/../admin" there. The reading is NFKD without non-spacing marks
// (unicode.Mn), which makes every dot, slash or ';' that NFKC makes; a
// "/" or "\" in it separates parts, as hiddenDotSegment reads "%2F". Only a
// segment with a dot, or a letter that reads as one, is read so (by
// appendSimplified, formBestFit's reading, into *scratch, reused across
// segments): in a segment of other letters the reading can make no dot
// segment, and it costs a look at its bytes.
func compatDotSegment(match []byte, scratch *[]byte) bool {
	// The reading can hold a dot segment only if it holds a dot: one of
	// the segment's, spelled "." or "%2E" (twice decoded), or one that a
	// letter reads as (compatPunct). Most non-ASCII segments have none,
	// and cost a look at their bytes.
	dot, nonASCII := false, false
	for i := 0; i < len(match); {
		if c := match[i]; c < utf8.RuneSelf {
			dot = dot || c == '.' || c == '%' && escapedDot(match[i+1:])
			i++
			continue
		}
		nonASCII = true
		r, n := utf8.DecodeRune(match[i:])
		dot = dot || compatPunct(r)
		i += n
	}
	if !nonASCII || !dot {
		return false
	}
	b, _ := appendSimplified((*scratch)[:0], string(match), math.MaxInt)
	*scratch = b
	for part := range bytes.FieldsFuncSeq(b, func(r rune) bool { return r == '/' || r == '\\' }) {
		if hiddenDotSegment(part) {
			return true
		}
	}
	return false
}

// escapedDot reports whether the bytes after a '%' in match form may read
// as "2E" (a dot, decoded twice): "2E" in either case, or with a
// non-ASCII letter that may read as one of them ("２ｅ").
func escapedDot(s []byte) bool {
	switch {
	case len(s) < 2:
		return false
	case s[0] >= utf8.RuneSelf:
		return true
	}
	return s[0] == '2' && (s[1]|0x20 == 'e' || s[1] >= utf8.RuneSelf)
}

// compatPunct reports whether r's compatibility decomposition holds a
// ".", "/", "\\", ";" or "%", or best fit makes one of r (bestFitASCII;
// TestCompatPunctComplete checks the list against all of Unicode): U+2025
// TWO DOT LEADER is "..", U+FF0F FULLWIDTH SOLIDUS "/", U+037E GREEK
// QUESTION MARK ";", U+2488 DIGIT ONE FULL STOP "1.", U+2215 DIVISION
// SLASH "/" for best fit.
func compatPunct(r rune) bool {
	switch {
	case r < 0x037e:
		// YEN SIGN, ACUTE ACCENT: a backslash and a slash for best fit
		// (bestFitASCII)
		return r == 0x00a5 || r == 0x00b4
	case r == 0x037e, 0x2024 <= r && r <= 0x2026, 0x2100 <= r && r <= 0x2101, 0x2105 <= r && r <= 0x2106,
		0x2488 <= r && r <= 0x249b, r == 0x33c2, r == 0x33c7, r == 0x33d8, r == 0x1f100,
		r == 0x066a, r == 0x2044, r == 0x20a9, r == 0x2215, r == 0x2216: // bestFitASCII's
		return true
	case 0xfe14 <= r && r <= 0xff3c:
		switch r {
		case 0xfe14, 0xfe19, 0xfe30, 0xfe52, 0xfe54, 0xfe68, 0xfe6a, 0xff05, 0xff0e, 0xff0f, 0xff1b, 0xff3c:
			return true
		}
	}
	return false
}

// hiddenDotSegment reports whether a segment (match form) turns into a dot
// segment for a server that decodes %2F or strips ";parameters", or that
// decodes the path a second time: a client's "%252e%252e" is "%2e%2e" here
// and ".." there, and its "%255c" a backslash, which such servers (IIS,
// among others) take for a slash.
//
// It reads the segment as the most eager of them would, in one pass and
// without a copy: "%2F" and "%5C" separate parts, "%2E" is a dot and "%3B"
// a ';' (any case in the hex digits), and a part whose text before its
// first ';' is "." or ".." is a dot segment. In match form a '%' is an
// encoded slash or a decoded "%25".
func hiddenDotSegment(match []byte) bool {
	dots, other, param := 0, false, false // of the current part
	for i := 0; i <= len(match); i++ {
		for (other || param) && i < len(match) && match[i] != '%' {
			i++ // the part is no dot segment: on to its end
		}
		c, sep := byte(0), i == len(match) // the end closes the last part
		if !sep {
			c = match[i]
		}
		if c == '%' && i+2 < len(match) {
			switch x, y := match[i+1], match[i+2]|0x20; {
			case x == '2' && y == 'f', x == '5' && y == 'c':
				sep = true
				i += 2
			case x == '2' && y == 'e':
				c = '.'
				i += 2
			case x == '3' && y == 'b':
				c = ';'
				i += 2
			}
		}
		switch {
		case sep:
			if !other && (dots == 1 || dots == 2) {
				return true
			}
			dots, other, param = 0, false, false
		case param:
		case c == ';':
			param = true
		case c == '.':
			dots++
		default:
			other = true
		}
	}
	return false
}

// percentEncode writes every byte of s that keep refuses as %XX. When keep
// takes every byte, s itself is returned without a copy.
func percentEncode(s string, keep func(c byte) bool) string {
	i := 0
	for i < len(s) && keep(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// isPchar reports whether RFC 3986 allows c unescaped in a path segment.
func isPchar(c byte) bool { return pchars[c] }

var pchars = func() (t [256]bool) {
	for c := range t {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-._~!$&'()*+,;=:@", byte(c)) >= 0
	}
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
