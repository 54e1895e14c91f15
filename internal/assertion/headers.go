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
