package gateway

import (
	"errors"
	"strings"
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
		match, path, err := decodeSegment(p)
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
		if hiddenDotSegment(match) {
			return cleanPath{}, errBadPath
		}
		out = append(out, seg{match, path, escapeSegment(path)})
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

// isPlainPath reports whether p needs no normalisation.
func isPlainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '%' || c == '\\' || c == ';' || c < 0x20 || c == 0x7f:
			return false
		case c == '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return false
			}
		}
	}
	return true
}

// decodeSegment decodes one escaped segment. match keeps an encoded slash
// as "%2F"; path decodes it.
func decodeSegment(s string) (match, path string, err error) {
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

// doubleDecoded turns the %-escapes that a second decoding makes into
// separators, dots and parameters into what they become (lower case).
var doubleDecoded = strings.NewReplacer("%5c", "%2f", "%2e", ".", "%3b", ";")

// hiddenDotSegment reports whether a segment (match form) turns into a dot
// segment for a server that decodes %2F or strips ";parameters", or that
// decodes the path a second time: a client's "%252e%252e" is "%2e%2e" here
// and ".." there, and its "%255c" a backslash, which such servers (IIS,
// among others) take for a slash.
func hiddenDotSegment(match string) bool {
	if strings.IndexByte(match, '%') >= 0 {
		match = strings.ToLower(match)
		match = doubleDecoded.Replace(match)
	}
	for part := range strings.SplitSeq(match, "%2f") {
		if before, _, _ := strings.Cut(part, ";"); before == "." || before == ".." {
			return true
		}
	}
	return false
}

// escapeSegment escapes a decoded segment: RFC 3986 pchar stays, everything
// else (including "/", "?", "#", "%" and non-ASCII bytes) is %XX.
func escapeSegment(s string) string { return percentEncode(s, isPchar) }

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

func isPchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0
}

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
