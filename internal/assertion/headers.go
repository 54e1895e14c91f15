package assertion

import (
	"net/http"
	"strings"
)

// The identity headers an app receives next to the assertion.
const (
	HeaderUser   = "X-Sallyport-User"   // the provider's subject (sub)
	HeaderEmail  = "X-Sallyport-Email"  // verified email, if any
	HeaderGroups = "X-Sallyport-Groups" // comma-separated, each group %-encoded
)

// SetHeaders sets the identity headers and the assertion tok. Values are
// UTF-8 with '%' and bytes outside printable ASCII %-encoded; in groups ','
// is encoded too, so splitting at ',' and decoding gives the list back.
func SetHeaders(h http.Header, subject, email string, groups []string, tok string) {
	h.Set(HeaderUser, percentEncode(subject, "%"))
	h.Del(HeaderEmail)
	if email != "" {
		h.Set(HeaderEmail, percentEncode(email, "%"))
	}
	h.Del(HeaderGroups)
	if len(groups) > 0 {
		gs := make([]string, len(groups))
		for i, g := range groups {
			gs[i] = percentEncode(g, "%,")
		}
		h.Set(HeaderGroups, strings.Join(gs, ","))
	}
	h.Set(Header, tok)
}

// Header names in any spelling. Servers that hand headers to apps as
// variables fold names: CGI, PHP, WSGI and Rack take "-" and "_" for the
// same (HTTP_X_SALLYPORT_USER), and lighttpd (CGI, FastCGI, SCGI) and
// Apache httpd before 2.4 turn every byte that is not a letter or a digit
// into "_", so "X.Sallyport.User" and "X~Sallyport~User", which HTTP
// allows as names, reach a PHP app behind them as X-Sallyport-User. So a
// name is compared with ASCII case ignored and every byte other than a
// letter or digit taken for "-".

// namePrefix is the prefix of the gateway's identity headers, folded.
const namePrefix = "x-sallyport-"

// IsHeader reports whether name is one of the gateway's identity headers
// (X-Sallyport-*) in any spelling that some server takes for it.
func IsHeader(name string) bool {
	return len(name) >= len(namePrefix) && FoldEqual(name[:len(namePrefix)], namePrefix)
}

// StripHeaders removes from h every header that IsHeader reports.
func StripHeaders(h http.Header) {
	for k := range h {
		if IsHeader(k) {
			delete(h, k)
		}
	}
}

// FoldEqual reports whether the header names a and b are the same name to
// some server (see above): ASCII letters compared without case, and every
// byte other than a letter or digit equal to every other such byte.
func FoldEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if x, y := a[i], b[i]; x != y && foldTable[x] != foldTable[y] {
			return false
		}
	}
	return true
}

// FoldName returns name with every byte other than an ASCII letter or
// digit replaced by "-" (name itself when there is none to replace), for
// looking a name up among canonical ones after http.CanonicalHeaderKey.
func FoldName(name string) string {
	i := 0
	for i < len(name) && (name[i] == '-' || foldTable[name[i]] != '-') {
		i++
	}
	if i == len(name) {
		return name
	}
	b := []byte(name)
	for ; i < len(b); i++ {
		if foldTable[b[i]] == '-' {
			b[i] = '-'
		}
	}
	return string(b)
}

// foldTable folds a byte of a header name: ASCII letters to lower case,
// digits to themselves, every other byte to "-". A table: these run for
// every header of every request.
var foldTable = func() (t [256]byte) {
	for i := range t {
		switch c := byte(i); {
		case 'A' <= c && c <= 'Z':
			t[i] = c + 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			t[i] = c
		default:
			t[i] = '-'
		}
	}
	return t
}()

func percentEncode(s, extra string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && strings.IndexByte(extra, c) < 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
