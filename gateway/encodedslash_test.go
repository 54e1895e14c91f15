package gateway

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestEncodedSlashCannotChangeApp: a path whose encoded slashes, decoded,
// would be routed to another app is refused. With an app at "/" and one
// at "/admin" on the same host, "/admin%2Fusers" went to the "/" app, and
// a backend that decodes %2F (WSGI, nginx's $uri) served it as
// "/admin/users": the /admin app's sign-in and policy were skipped.
func TestEncodedSlashCannotChangeApp(t *testing.T) {
	g, err := New(Config{
		TunnelTLS: &tls.Config{},
		Routes: []Route{
			{App: "site", Hosts: []string{"h"}, PathPrefix: "/", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "admin", Hosts: []string{"h"}, PathPrefix: "/admin", Backend: mustURL(t, "http://a:1"), Group: "g"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	for _, bad := range []string{"/admin%2Fusers", "/admin%2fusers", "/admin%2F", "/%2Fadmin/x", "/%2fadmin%2f%2fx", "/admin%252Fx"} {
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.URL.RawPath, req.URL.Path = bad, bad
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if g.handler.admit(rec, req, st) || rec.Code != http.StatusBadRequest || rec.Header().Get(ErrorHeader) != CodeBadRequest {
			t.Errorf("%s: admitted to %+v (answer %d)", bad, st.route, rec.Code)
		}
	}
	// An encoded slash that leads to the same app either way stays data.
	for path, app := range map[string]string{"/docs/a%2Fb": "site", "/admin/a%2Fb": "admin", "/x%2Fadmin": "site"} {
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.URL.RawPath, req.URL.Path = path, path
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if !g.handler.admit(rec, req, st) || st.route.App != app {
			t.Errorf("%s: routed to %+v (answer %d), want %s", path, st.route, rec.Code, app)
		}
	}
}
