package promserve

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAdminHostCheckOnlyOverLoopback: requests that reach the admin
// listener over another address are scrapes from other machines, by
// whatever DNS name they were given; only loopback connections are checked.
func TestAdminHostCheckOnlyOverLoopback(t *testing.T) {
	for _, tc := range []struct {
		local net.Addr
		want  bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9090}, true},
		{&net.TCPAddr{IP: net.ParseIP("127.0.1.1"), Port: 9090}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 9090}, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 9090}, true},
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 9090}, false},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::5"), Port: 9090}, false},
		{nil, true}, // unknown: checked
	} {
		if got := overLoopback(tc.local); got != tc.want {
			t.Errorf("overLoopback(%v) = %v, want %v", tc.local, got, tc.want)
		}
	}
}

// TestRebindingGuardNames: which Host values count as this machine, with
// hostname "gw1.corp.example"; a refusal is reported once, whatever
// follows.
func TestRebindingGuardNames(t *testing.T) {
	var refused []string
	h := RebindingGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }),
		"gw1.corp.example", func(r *http.Request, port string) { refused = append(refused, r.Host+" "+port) })
	local := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9100}
	for host, want := range map[string]int{
		"127.0.0.1:9100": 204, "[::1]:9100": 204, "localhost": 204, "a.localhost:9100": 204, "": 204,
		"gw1.corp.example:9100": 204, "GW1.": 204, "192.0.2.9": 204,
		"evil.example:9100": 403, "gw1.corp.example.evil.example": 403, "gw1x": 403, "localhost.evil.example": 403,
	} {
		req := httptest.NewRequest("GET", "http://x/metrics", nil)
		req.Host = host
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(local)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q over loopback: %d, want %d", host, rec.Code, want)
		}
		if want == 403 && !strings.Contains(rec.Body.String(), "request 127.0.0.1:9100 or localhost:9100") {
			t.Errorf("Host %q: refusal %q does not say what to request", host, rec.Body.String())
		}
	}
	if len(refused) != 1 {
		t.Errorf("refused called %d times (%q), want once", len(refused), refused)
	}
}
