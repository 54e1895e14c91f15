package e2e

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestClientProxyHeadersDropped: headers that apps take from a proxy in
// front of them reached the app as the client sent them (a security
// helper's probes). chi's RealIP prefers True-Client-IP and X-Real-IP to
// X-Forwarded-For, so an app took the client's claimed address; Rack and
// Spring read X-Forwarded-Ssl, -Port and -Prefix; X-Original-URL and
// X-Rewrite-URL (IIS, older Symfony and Zend) route an app to another path
// than the one the gateway routed and authorised. And on the upgrade path
// (WebSockets) the '_' spellings of the gateway's own headers passed
// (X_Forwarded_For, X_Request_Id), which CGI, PHP and WSGI servers fold onto
// the gateway's. None of them reaches the app now, on either path.
func TestClientProxyHeadersDropped(t *testing.T) {
	backend := startLoopbackBackend(t, demoapp.New())
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "plain", Hosts: []string{"plain.test"}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	const spoof = "6.6.6.6"
	sent := []string{
		"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip",
		"X-Cluster-Client-Ip", "X-Original-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Ssl",
		"X-Forwarded-Prefix", "X-Forwarded-Scheme", "X-Forwarded-Server", "Front-End-Https", "X-Url-Scheme",
		"X-Original-Url", "X-Rewrite-Url",
		// Non-canonical spellings, set below as sent.
		"X_Real_IP", "True_Client_IP", "X_Forwarded_For", "x-forwarded_proto", "X_FORWARDED_HOST", "X_Request_Id",
	}
	for _, upgrade := range []bool{false, true} {
		req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
		req.Host = "plain.test"
		if upgrade {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
		}
		for _, n := range sent {
			req.Header[n] = []string{spoof}
		}
		res, b := doAndRead(t, c, req)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("upgrade=%v: status %d: %s", upgrade, res.StatusCode, b)
		}
		e := decodeEcho(t, b)
		if len(e.Headers) == 0 {
			t.Fatalf("upgrade=%v: the backend reported no headers at all", upgrade)
		}
		for n, vv := range e.Headers {
			for _, v := range vv {
				if v == spoof {
					t.Errorf("upgrade=%v: the app got the client's %s: %s", upgrade, n, v)
				}
			}
		}
	}
}

// TestH2CUpgradeNotRelayed: a request asking to upgrade to cleartext
// HTTP/2 (Upgrade: h2c) was relayed as an upgrade: a backend that takes it
// speaks HTTP/2 with the client over the upgraded connection, and the
// client can then send it requests for any path that the gateway never
// sees (h2c smuggling: past public_paths and sign-in, without identity
// headers). The gateway drops the upgrade and relays a plain request.
func TestH2CUpgradeNotRelayed(t *testing.T) {
	backend := startLoopbackBackend(t, demoapp.New())
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "plain", Hosts: []string{"plain.test"}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
	req.Host = "plain.test"
	req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
	req.Header.Set("Upgrade", "h2c")
	req.Header.Set("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
	res, b := doAndRead(t, rig.Client(), req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("an h2c upgrade request got %d, want the app's 200 for a plain request: %s", res.StatusCode, b)
	}
	e := decodeEcho(t, b)
	for _, n := range []string{"Upgrade", "Http2-Settings", "Connection"} {
		if v, ok := e.Headers[n]; ok {
			t.Errorf("the app got %s: %q; an h2c upgrade must not reach it", n, v)
		}
	}
}

// TestTrustedProxyPrefixPassed: a load balancer in trusted_proxies that
// serves the apps under a path prefix it strips (Traefik's StripPrefix)
// says so in X-Forwarded-Prefix, and apps build their links with it
// (Spring's ForwardedHeaderFilter, Rack); dropping every client-sent
// X-Forwarded-* dropped it too (a reviewer's probe). One well-formed value
// from a trusted peer passes, on both paths; a value that would point links
// at another site does not.
func TestTrustedProxyPrefixPassed(t *testing.T) {
	backend := startLoopbackBackend(t, demoapp.New())
	rig := testrig.New(t, testrig.Options{
		Routes:  []gateway.Route{{App: "plain", Hosts: []string{"plain.test"}, Backend: testrig.MustURL(t, backend.URL)}},
		Gateway: func(c *gateway.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} },
	})
	rig.StartAgent(nil)
	for _, c := range []struct {
		sent string
		want []string
	}{
		{"/app1", []string{"/app1"}},
		{"//evil.example", nil},
		{"app1", nil},
		{"/app 1", nil},
	} {
		for _, upgrade := range []bool{false, true} {
			req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
			req.Host = "plain.test"
			if upgrade {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
			}
			req.Header.Set("X-Forwarded-Prefix", c.sent)
			res, b := doAndRead(t, rig.Client(), req)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			if got := decodeEcho(t, b).Headers["X-Forwarded-Prefix"]; !slices.Equal(got, c.want) {
				t.Errorf("upgrade=%v: a trusted proxy sent X-Forwarded-Prefix %q; the app got %q, want %q",
					upgrade, c.sent, got, c.want)
			}
		}
	}
}
