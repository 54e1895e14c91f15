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

// TestTrustedProxy checks public.trusted_proxies end to end: from a trusted
// peer (the test client on 127.0.0.1) the app gets the client named in
// X-Forwarded-For and the scheme of X-Forwarded-Proto, on the relay path and
// on the upgrade path; a gateway that trusts another subnet ignores both.
func TestTrustedProxy(t *testing.T) {
	echo := startLoopbackBackend(t, demoapp.New())
	// The upgrade backend answers 101 with what it was told in headers.
	upgrade := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "test")
		w.Header().Set("Seen-For", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		w.WriteHeader(http.StatusSwitchingProtocols)
	}))
	for _, tc := range []struct {
		name      string
		trust     string
		wantFor   string
		wantProto string
	}{
		{"trusted", "127.0.0.0/8", "192.0.2.1", "https"},
		{"other subnet trusted", "10.0.0.0/8", "127.0.0.1", "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := testrig.New(t, testrig.Options{
				Routes: []gateway.Route{
					{App: "echo", Hosts: []string{"echo.test"}, Backend: testrig.MustURL(t, echo.URL)},
					{App: "up", Hosts: []string{"up.test"}, Backend: testrig.MustURL(t, upgrade.URL)},
				},
				Gateway: func(c *gateway.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tc.trust)} },
			})
			rig.StartAgent(nil)
			c := rig.Client()
			forwardedBy := func(req *http.Request) {
				req.Header.Add("X-Forwarded-For", "6.6.6.6, 192.0.2.1")
				req.Header.Add("X-Forwarded-For", "127.0.0.9")
				req.Header.Set("X-Forwarded-Proto", "https")
			}

			req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
			req.Host = "echo.test"
			forwardedBy(req)
			res, b := doAndRead(t, c, req)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			e := decodeEcho(t, b)
			for name, want := range map[string]string{"X-Forwarded-For": tc.wantFor, "X-Forwarded-Proto": tc.wantProto} {
				if got := e.Headers.Values(name); !slices.Equal(got, []string{want}) {
					t.Errorf("relay: backend saw %s %q, want %q", name, got, want)
				}
			}

			req = appRequest(t, context.Background(), "GET", rig.URL+"/", nil)
			req.Host = "up.test"
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "test")
			forwardedBy(req)
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: status %d", res.StatusCode)
			}
			if got := res.Header.Get("Seen-For") + " " + res.Header.Get("Seen-Proto"); got != tc.wantFor+" "+tc.wantProto {
				t.Errorf("upgrade: backend saw %q, want %q", got, tc.wantFor+" "+tc.wantProto)
			}
		})
	}
}
