package gateway

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestNormalisePath(t *testing.T) {
	for _, tc := range []struct{ in, match, path, raw string }{
		{"", "/", "/", "/"},
		{"/", "/", "/", "/"},
		{"/a/b", "/a/b", "/a/b", "/a/b"},
		{"/a/b/", "/a/b/", "/a/b/", "/a/b/"},
		{"/a/../b", "/b", "/b", "/b"},
		{"/../../b", "/b", "/b", "/b"},
		{"/a/./b/.", "/a/b/", "/a/b/", "/a/b/"},
		{"/a/..", "/", "/", "/"},
		{"//a///b", "/a/b", "/a/b", "/a/b"},
		{`/a\b`, "/a/b", "/a/b", "/a/b"},
		{`\a`, "", "", ""}, // does not start with "/"
		{"/a/%2e%2e/b", "/b", "/b", "/b"},
		{"/a/%2E/b", "/a/b", "/a/b", "/a/b"},
		{"/a%2Fb", "/a%2Fb", "/a/b", "/a%2Fb"},
		{"/a%2fb/c", "/a%2Fb/c", "/a/b/c", "/a%2Fb/c"},
		{"/%7Euser/%41", "/~user/A", "/~user/A", "/~user/A"},
		{"/a%20b", "/a b", "/a b", "/a%20b"},
		{"/a%3Fb%23c%25", "/a?b#c%", "/a?b#c%", "/a%3Fb%23c%25"},
		{"/a;b=c/d", "/a;b=c/d", "/a;b=c/d", "/a;b=c/d"},
		{"/caf%C3%A9", "/caf\xc3\xa9", "/caf\xc3\xa9", "/caf%C3%A9"},
		{"/.well-known/x", "/.well-known/x", "/.well-known/x", "/.well-known/x"},
	} {
		got, err := normalisePath(tc.in)
		if tc.match == "" {
			if err == nil {
				t.Errorf("%q: accepted as %+v", tc.in, got)
			}
			continue
		}
		if err != nil || got.Match != tc.match || got.Path != tc.path || got.Raw != tc.raw {
			t.Errorf("%q: got %+v %v, want {%q %q %q}", tc.in, got, err, tc.match, tc.path, tc.raw)
		}
	}
	for _, bad := range []string{"a", "/a%", "/a%2", "/a%zz", "/a%00", "/a%0a", "/a\x01", "/a%5Cb", "/a%5c",
		"/..%2F", "/a/..%2fb", "/a/.%2F", "/..;/a", "/.;x/a", "/a/..;", "/x%2F..%2Fy"} {
		if got, err := normalisePath(bad); err == nil {
			t.Errorf("%q: accepted as %+v", bad, got)
		}
	}
}

// TestNormalisePathFastPathAllocs: an ordinary path costs nothing.
func TestNormalisePathFastPathAllocs(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		if _, err := normalisePath("/api/v1/items/123"); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// TestRoutingUsesNormalisedPath: "/a/../b" is routed (and forwarded) as
// "/b", never by its "/a" prefix.
func TestRoutingUsesNormalisedPath(t *testing.T) {
	g, err := New(Config{
		TunnelTLS: &tls.Config{},
		Routes: []Route{
			{App: "a", Hosts: []string{"h"}, PathPrefix: "/a", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "b", Hosts: []string{"h"}, PathPrefix: "/b", Backend: mustURL(t, "http://b:1"), Group: "g"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	for path, app := range map[string]string{"/a/../b/x": "b", "/b/%2e%2e/a": "a", "//a": "a", `/b\..\a`: "a"} {
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.URL.RawPath, req.URL.Path = path, path
		st := &exchangeState{}
		rec := httptest.NewRecorder()
		if !g.handler.admit(rec, req, st) || st.route.App != app {
			t.Errorf("%s: routed to %+v (answer %d)", path, st.route, rec.Code)
		}
	}
	req := httptest.NewRequest("GET", "http://h/", nil)
	req.URL.RawPath, req.URL.Path = "/a/..%2Fb", "/a/../b"
	rec := httptest.NewRecorder()
	if g.handler.admit(rec, req, &exchangeState{}) || rec.Code != http.StatusBadRequest || rec.Header().Get(ErrorHeader) != CodeBadRequest {
		t.Errorf("hidden dot segment: %d %v", rec.Code, rec.Header())
	}
}
