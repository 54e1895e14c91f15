package e2e

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestAppendedProtoFromTheRight: a load balancer that appends to
// X-Forwarded-Proto (HAProxy's add-header, Envoy) passes on what the client
// sent first: "https, http" from a client that spoke plain HTTP and sent
// its own "X-Forwarded-Proto: https". The gateway took the first element,
// so such a client got Secure cookies, an https:// sign-in callback and
// "X-Forwarded-Proto: https" for the app. It reads the element the
// balancer wrote, the right-most one for a single balancer.
func TestAppendedProtoFromTheRight(t *testing.T) {
	trusted := func(c *gateway.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }
	cases := []struct {
		name, proto string
		https       bool
	}{
		{"client's https, balancer's http", "https, http", false},
		{"balancer's https", "http, https", true},
	}

	echo := startLoopbackBackend(t, demoapp.New())
	rig := testrig.New(t, testrig.Options{
		Routes:  []gateway.Route{{App: "echo", Hosts: []string{"echo.test"}, Backend: testrig.MustURL(t, echo.URL)}},
		Gateway: trusted,
	})
	rig.StartAgent(nil)
	for _, tc := range cases {
		req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
		req.Host = "echo.test"
		req.Header.Set("X-Forwarded-For", "192.0.2.1")
		req.Header.Set("X-Forwarded-Proto", tc.proto)
		res, b := doAndRead(t, rig.Client(), req)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.name, res.StatusCode, b)
		}
		want := map[bool]string{false: "http", true: "https"}[tc.https]
		if got := decodeEcho(t, b).Headers.Values("X-Forwarded-Proto"); !slices.Equal(got, []string{want}) {
			t.Errorf("%s (X-Forwarded-Proto: %s from a trusted balancer): the app saw X-Forwarded-Proto %q, want %q",
				tc.name, tc.proto, got, want)
		}
	}

	a := newAuthRig(t, preauth.Policy{}, nil, trusted)
	c := noRedirect(a.browser())
	for _, tc := range cases {
		res, _ := getH(t, c, a.URL+"/x", map[string]string{"X-Forwarded-Proto": tc.proto})
		if res.StatusCode != http.StatusFound {
			t.Fatalf("%s: got %d", tc.name, res.StatusCode)
		}
		loc, err := url.Parse(res.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		scheme := map[bool]string{false: "http://", true: "https://"}[tc.https]
		if got := loc.Query().Get("redirect_uri"); !strings.HasPrefix(got, scheme) {
			t.Errorf("%s (X-Forwarded-Proto: %s from a trusted balancer): sign-in callback %q, want %s…", tc.name, tc.proto, got, scheme)
		}
		for _, ck := range res.Cookies() {
			if strings.Contains(ck.Name, "sallyport_login_") && ck.Secure != tc.https {
				t.Errorf("%s (X-Forwarded-Proto: %s from a trusted balancer): cookie %s Secure %v, want %v",
					tc.name, tc.proto, ck.Name, ck.Secure, tc.https)
			}
		}
	}
}
