package gateway

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/sallyport/sallyport/internal/forwarded"
)

// maxForwardedHops bounds how many X-Forwarded-For entries are looked at.
const maxForwardedHops = 64

// proxyTrust serves requests that a trusted proxy (a load balancer in front
// of the gateway, public.trusted_proxies) passed on: for those, and only
// those, the client's address comes from X-Forwarded-For and its scheme from
// X-Forwarded-Proto, both read from the right, where the trusted proxies
// append (see clientHop and forwardedHTTPS), and their X-Request-Id (the
// last, when there are several) is kept when it is sane (RequestID). From
// any other peer the X-Forwarded-* headers are ignored (and never relayed)
// and X-Request-Id is dropped (untrustedPeer), so a client cannot claim
// another address or scheme, nor pick the id the gateway logs and the app
// sees.
type proxyTrust struct {
	next     http.Handler
	prefixes []netip.Prefix
}

// trustProxies wraps next: in a proxyTrust when prefixes is not empty,
// otherwise in an untrustedPeer, since then no peer is trusted.
func trustProxies(next http.Handler, prefixes []netip.Prefix) http.Handler {
	if len(prefixes) == 0 {
		return untrustedPeer{next}
	}
	return &proxyTrust{next: next, prefixes: prefixes}
}

// untrustedPeer serves a request from a peer that is not a trusted proxy:
// it drops the client's X-Request-Id, so that the gateway makes its own
// (RequestID("")) for the app, the access log and the identity assertion.
// A client that picked the id could reuse one an operator searches the
// logs for, or one an app logs or dedupes by.
type untrustedPeer struct{ next http.Handler }

func (u untrustedPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	delete(r.Header, RequestIDHeader)
	u.next.ServeHTTP(w, r)
}

func (t *proxyTrust) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !t.trusted(peer.Addr()) {
		untrustedPeer{t.next}.ServeHTTP(w, r)
		return
	}
	c, hop, ok := t.clientHop(r.Header["X-Forwarded-For"])
	if ok {
		r.RemoteAddr = c.String()
	}
	if r.TLS == nil && forwardedHTTPS(r.Header["X-Forwarded-Proto"], hop) {
		r = forwarded.WithHTTPS(r)
	}
	if p, ok := forwardedPrefix(r.Header["X-Forwarded-Prefix"]); ok {
		r = forwarded.WithPrefix(r, p)
	}
	if ids := r.Header[RequestIDHeader]; len(ids) > 1 {
		// The last is the nearest proxy's, as in X-Forwarded-For: one that
		// appends its own (HAProxy's "http-request add-header") leaves the
		// client's in front of it.
		r.Header[RequestIDHeader] = ids[len(ids)-1:]
	}
	t.next.ServeHTTP(w, r)
}

// maxPrefix bounds a trusted proxy's X-Forwarded-Prefix.
const maxPrefix = 1024

// forwardedPrefix returns the path prefix of a trusted proxy's
// X-Forwarded-Prefix (a proxy that serves the app under a path and strips
// it, such as Traefik's StripPrefix): one value, an absolute path of
// visible ASCII without a second leading slash (apps put it in front of
// their links; "//host" would point them at another site).
func forwardedPrefix(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	p := values[0]
	if len(p) == 0 || len(p) > maxPrefix || p[0] != '/' || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") {
		return "", false
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 0x7f {
			return "", false
		}
	}
	return p, true
}

func (t *proxyTrust) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// client walks X-Forwarded-For from the right (the entry the nearest proxy
// added) past trusted proxies to the first address that is not one: the
// client as the outermost trusted proxy saw it. At an entry that is not an
// address it stops and answers the last trusted proxy before it; ok is false
// when not even the rightmost entry is an address (or there is none).
func (t *proxyTrust) client(values []string) (client netip.AddrPort, ok bool) {
	client, _, ok = t.clientHop(values)
	return client, ok
}

// clientHop is client, also answering the position of the client's entry
// counted from the right (0: the rightmost, which the peer added): the
// trusted proxy that added that entry is the one the client connected to,
// so its X-Forwarded-Proto element, at the same position, is the client's
// scheme. hop is 0 when ok is false.
func (t *proxyTrust) clientHop(values []string) (client netip.AddrPort, hop int, ok bool) {
	hops := 0
	for i := len(values) - 1; i >= 0; i-- {
		rest := values[i]
		for more := true; more; {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				entry, more = rest, false
			}
			a, valid := parseForwardedAddr(strings.TrimSpace(entry))
			if !valid || hops == maxForwardedHops {
				return client, hop, ok
			}
			client, hop, ok = a, hops, true
			hops++
			if !t.trusted(a.Addr()) {
				return client, hop, true
			}
		}
	}
	return client, hop, ok
}

// parseForwardedAddr parses one X-Forwarded-For entry: an IP address, or an
// address with a port as some load balancers send ("192.0.2.1:4711",
// "[2001:db8::1]:4711"). Addresses with a zone are refused.
func parseForwardedAddr(s string) (netip.AddrPort, bool) {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 0), a.Zone() == ""
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// forwardedHTTPS reports whether a trusted proxy's X-Forwarded-Proto says
// the client spoke HTTPS to it. A proxy that appends (HAProxy's
// "http-request add-header", which adds a line) leaves what the client sent
// on the left: "X-Forwarded-Proto: https, http" from a client that spoke
// plain HTTP. So the elements are read from the right, as the
// X-Forwarded-For walk read its entries: the element at hop (clientHop),
// put there by the proxy the client connected to. A list shorter than that
// comes from proxies that replace the header (nginx's proxy_set_header):
// its leftmost element is the one the outermost of them set. Only "https"
// (any case) counts; "http", an empty element or any other value means
// plain HTTP, the side that never makes a cookie Secure by mistake.
func forwardedHTTPS(values []string, hop int) bool {
	var elem string
	seen := 0
	for i := len(values) - 1; i >= 0 && seen <= hop; i-- {
		rest := values[i]
		for more := true; more && seen <= hop; {
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				elem, rest = rest[j+1:], rest[:j]
			} else {
				elem, more = rest, false
			}
			seen++
		}
	}
	return seen > 0 && strings.EqualFold(strings.TrimSpace(elem), "https")
}
