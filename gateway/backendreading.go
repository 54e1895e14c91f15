package gateway

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// backendReadsElsewhere reports whether a backend could read match
// (cleanPath.Match) as a path that host routes to another app than rt:
// with its encoded slashes as separators (slashesDecoded), without its
// ";parameters" (paramsStripped), or both, in either order; and, for a
// backend that ignores case (IIS, ASP.NET, a Windows or macOS file
// system), as the path of an app whose path_prefix differs from it only
// in case (foldsElsewhere). Dot segments that such a reading would make
// are refused by normalisePath already. rt is router.Match(host, match).
func backendReadsElsewhere(router *Router, host, match string, rt *Route) bool {
	if router.alone[rt] {
		return false // no other app on the host: most hosts
	}
	if router.foldsElsewhere(host, match, rt) {
		return true
	}
	if strings.IndexByte(match, '%') < 0 && strings.IndexByte(match, ';') < 0 {
		return false // nothing else to read otherwise: most requests
	}
	slashes, params := slashesDecoded(match), paramsStripped(match)
	for _, alt := range [...]string{slashes, params, paramsStripped(slashes), slashesDecoded(params)} {
		if alt != match && (router.Match(host, alt) != rt || router.foldsElsewhere(host, alt, rt)) {
			return true
		}
	}
	return false
}

// foldsElsewhere reports whether path, written with the case of another
// route's path_prefix, is routed there: with an app at "/" and one at
// "/admin" on a host, "/ADMIN/users" is routed to the first, and a backend
// that ignores case serves it as "/admin/users". A prefix that differs from
// rt's only in case does not count, so two apps at "/Admin" and "/admin"
// both stay reachable. Case is that of any letter, not only ASCII ones:
// "/ÄRZTE" is "/ärzte" on IIS (see foldedPrefix).
func (r *Router) foldsElsewhere(host, path string, rt *Route) bool {
	cased := hasCase(path)
	h := asciiLower(hostOnly(host))
	lists := [2][]*Route{r.exact[h]}
	if i := strings.IndexByte(h, '.'); i > 0 {
		lists[1] = r.wild[h[i+1:]]
	}
	for _, list := range lists {
		for _, o := range list {
			p := o.PathPrefix
			if o == rt || p == "/" || !cased && !hasCase(p) {
				continue // the same app, or one only case could make match, and there is none
			}
			n, ok := foldedPrefix(path, p)
			if !ok || n < len(path) && path[n] != '/' || foldsTo(p, rt.PathPrefix) {
				continue
			}
			if r.Match(host, p+path[n:]) == o {
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

// slashesDecoded is match as a backend that decodes %2F sees it: every
// "%2F" a separator, empty segments collapsed. For a backend that decodes
// the path twice, a client's "%252F", "%252f" and "%255C" (here "%2F",
// "%2f" and "%5C", in either case) are separators too.
func slashesDecoded(match string) string {
	return rewriteSegments(match, func(s string, i int) (sep bool, skip int) {
		if s[i] == '%' && i+2 < len(s) && (s[i+1] == '2' && s[i+2]|0x20 == 'f' || s[i+1] == '5' && s[i+2]|0x20 == 'c') {
			return true, 3
		}
		return false, 0
	})
}

// paramsStripped is match as a backend that drops path parameters sees
// it: each segment ends at its first ";" (or "%3B", a ";" for a backend
// that decodes twice), empty segments collapsed.
func paramsStripped(match string) string {
	return rewriteSegments(match, func(s string, i int) (sep bool, skip int) {
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

// rewriteSegments copies s, asking at each byte what to do: sep writes a
// "/" for the skip bytes there, a skip alone drops them. "//" collapses.
func rewriteSegments(s string, at func(s string, i int) (sep bool, skip int)) string {
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
