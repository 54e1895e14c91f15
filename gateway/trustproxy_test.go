package gateway

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/sallyport/sallyport/internal/forwarded"
)

func TestProxyTrustClient(t *testing.T) {
	trust := &proxyTrust{prefixes: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"),
	}}
	tests := []struct {
		name   string
		xff    []string
		want   string
		wantOK bool
	}{
		{"none", nil, "", false},
		{"one client", []string{"192.0.2.1"}, "192.0.2.1:0", true},
		{"spoofed left of the client", []string{"198.51.100.9, 192.0.2.1"}, "192.0.2.1:0", true},
		{"past trusted hops", []string{"198.51.100.9, 192.0.2.1, 10.1.1.1", "10.2.2.2"}, "192.0.2.1:0", true},
		{"with ports", []string{"192.0.2.1:4711, 10.1.1.1:80"}, "192.0.2.1:4711", true},
		{"ipv6 and brackets", []string{"[2001:db9::5]:443, [2001:db8::1]"}, "[2001:db9::5]:443", true},
		{"v4-mapped", []string{"::ffff:192.0.2.3"}, "192.0.2.3:0", true},
		{"all trusted: the leftmost", []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9:0", true},
		{"garbage stops at the last trusted hop", []string{"192.0.2.1, unknown, 10.1.1.1"}, "10.1.1.1:0", true},
		{"garbage rightmost", []string{"192.0.2.1, _hidden"}, "", false},
		{"empty element", []string{"192.0.2.1,,10.1.1.1"}, "10.1.1.1:0", true},
		{"zone refused", []string{"fe80::1%eth0"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := trust.client(tt.xff)
			if ok != tt.wantOK || (ok && got.String() != tt.want) {
				t.Errorf("client(%q) = %v, %v; want %s, %v", tt.xff, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestProxyTrustHopLimit(t *testing.T) {
	trust := &proxyTrust{prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	xff := "192.0.2.1"
	for range maxForwardedHops + 10 {
		xff += ", 10.0.0.1"
	}
	got, ok := trust.client([]string{xff})
	if !ok || got.String() != "10.0.0.1:0" {
		t.Errorf("got %v %v; want the last trusted hop looked at", got, ok)
	}
}

func TestProxyTrustServeHTTP(t *testing.T) {
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	type seen struct {
		remote string
		https  bool
	}
	var got seen
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = seen{r.RemoteAddr, forwarded.HTTPS(r)}
	})
	h := trustProxies(next, prefixes)
	tests := []struct {
		name   string
		peer   string
		tls    bool
		header map[string]string
		want   seen
	}{
		{"trusted peer", "10.0.0.5:1234", false,
			map[string]string{"X-Forwarded-For": "192.0.2.1", "X-Forwarded-Proto": "http, HTTPS"},
			seen{"192.0.2.1:0", true}},
		{"trusted peer, plain http", "10.0.0.5:1234", false,
			map[string]string{"X-Forwarded-For": "192.0.2.1", "X-Forwarded-Proto": "http"},
			seen{"192.0.2.1:0", false}},
		{"trusted peer without headers", "10.0.0.5:1234", false, nil, seen{"10.0.0.5:1234", false}},
		{"untrusted peer", "192.0.2.99:1234", false,
			map[string]string{"X-Forwarded-For": "10.0.0.1", "X-Forwarded-Proto": "https"},
			seen{"192.0.2.99:1234", false}},
		{"v4-mapped trusted peer", "[::ffff:10.0.0.5]:1234", false,
			map[string]string{"X-Forwarded-For": "192.0.2.1"}, seen{"192.0.2.1:0", false}},
		{"direct TLS stays https", "192.0.2.99:1234", true, map[string]string{"X-Forwarded-Proto": "http"},
			seen{"192.0.2.99:1234", true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://app.example/", nil)
			r.RemoteAddr = tt.peer
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			got = seen{}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != tt.want {
				t.Errorf("next saw %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestProxyTrustProtoFromTheRight: X-Forwarded-Proto is read where the
// trusted proxies wrote it, at the X-Forwarded-For walk's hop, so a client
// that sends its own "https" to a balancer that appends cannot make its
// plain-HTTP request count as HTTPS (Secure cookies, https:// callbacks).
func TestProxyTrustProtoFromTheRight(t *testing.T) {
	h := trustProxies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if forwarded.HTTPS(r) {
			w.Header().Set("X-Seen-Https", "yes")
		}
	}), []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	tests := []struct {
		name  string
		xff   []string
		proto []string
		https bool
	}{
		{"client's https, balancer appended http", []string{"192.0.2.1"}, []string{"https, http"}, false},
		{"client's https on a line of its own", []string{"192.0.2.1"}, []string{"https", "http"}, false},
		{"balancer appended https", []string{"192.0.2.1"}, []string{"http, https"}, true},
		{"balancer replaced it", []string{"192.0.2.1"}, []string{"https"}, true},
		{"any case, spaces", []string{"192.0.2.1"}, []string{" HTTPS "}, true},
		{"no X-Forwarded-For: the peer's element", nil, []string{"https, http"}, false},
		{"no X-Forwarded-For, https", nil, []string{"http,https"}, true},
		// client → CDN 10.1.1.1 (plain HTTP) → balancer (HTTPS from the
		// CDN) → gateway, both appending: the CDN's element counts.
		{"two appending hops, client on plain http", []string{"192.0.2.1, 10.1.1.1"}, []string{"https, http, https"}, false},
		{"two appending hops, client on https", []string{"192.0.2.1, 10.1.1.1"}, []string{"http, https, http"}, true},
		// Proxies that replace the header: fewer elements than hops.
		{"two replacing hops", []string{"192.0.2.1, 10.1.1.1"}, []string{"https"}, true},
		{"client's trusted-looking entries stop at its own address", []string{"10.9.9.9, 192.0.2.1"}, []string{"https, https, http"}, false},
		{"neither http nor https", []string{"192.0.2.1"}, []string{"wss"}, false},
		{"empty rightmost element", []string{"192.0.2.1"}, []string{"https,"}, false},
		{"empty header", []string{"192.0.2.1"}, []string{""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://app.example/", nil)
			r.RemoteAddr = "10.0.0.5:1234"
			r.Header["X-Forwarded-For"] = tt.xff
			r.Header["X-Forwarded-Proto"] = tt.proto
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if got := w.Header().Get("X-Seen-Https") == "yes"; got != tt.https {
				t.Errorf("X-Forwarded-For %q, X-Forwarded-Proto %q from a trusted balancer: HTTPS = %v, want %v",
					tt.xff, tt.proto, got, tt.https)
			}
		})
	}
}
