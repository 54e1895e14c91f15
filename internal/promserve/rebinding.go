package promserve

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// RebindingGuard guards what a listener serves without a token against DNS
// rebinding: a web page on evil.example whose DNS name then points at
// 127.0.0.1 is, to a browser on this machine, the same origin as the
// listener, so its script may read the answers. Such a request comes in
// over loopback with the page's name in Host. A request that came in over
// a loopback address must therefore name this machine: an IP address (a
// page served from an IP address is no rebinding), localhost or a name
// under .localhost (browsers resolve those themselves), or hostname (this
// machine's host name, os.Hostname) or its first label; it may carry a
// port. Others get 403 saying what to request instead, and refused is
// called for the first of them (to log it once). Requests over other
// addresses are not checked: scrapers on other machines reach the listener
// by whatever DNS name they were given.
func RebindingGuard(next http.Handler, hostname string, refused func(r *http.Request, port string)) http.Handler {
	var once atomic.Bool
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if !overLoopback(local) || hostNamesThisMachine(r.Host, hostname) {
			next.ServeHTTP(w, r)
			return
		}
		port := "PORT"
		if ta, ok := local.(*net.TCPAddr); ok {
			port = strconv.Itoa(ta.Port)
		}
		if refused != nil && !once.Swap(true) {
			refused(r, port)
		}
		http.Error(w, fmt.Sprintf("Host %q does not name this machine: over loopback, this listener serves %s "+
			"only to requests for an IP address, localhost or this machine's host name (a guard against DNS "+
			"rebinding); request 127.0.0.1:%s or localhost:%s (a proxy in front: set the Host it sends to one of these)",
			r.Host, r.URL.Path, port, port), http.StatusForbidden)
	})
}

// overLoopback reports whether a request came in over a loopback address
// (local is the listener side of its connection). Unknown counts as
// loopback, so the check is made.
func overLoopback(local net.Addr) bool {
	ta, ok := local.(*net.TCPAddr)
	return !ok || ta.IP.IsLoopback()
}

// hostNamesThisMachine reports whether a Host header (with or without a
// port, any case, a trailing dot allowed) is an IP address, empty (an
// HTTP/1.0 request), localhost or under .localhost, or hostname or its
// first label.
func hostNamesThisMachine(host, hostname string) bool {
	h := host
	if hp, _, err := net.SplitHostPort(host); err == nil {
		h = hp
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "" || h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		return true
	}
	hostname = strings.TrimSuffix(strings.ToLower(hostname), ".")
	short, _, _ := strings.Cut(hostname, ".")
	return hostname != "" && (h == hostname || h == short)
}
