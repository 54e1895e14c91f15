package gateway

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPathParamsCannotChangeApp: a path that a backend reads as another
// app's is refused, whatever makes it so. Tomcat, Jetty and Spring drop
// ";parameters" from a segment, so "/admin;x/users", routed by "/" to the
// app without sign-in, was served as "/admin/users" there; a backend that
// decodes the path twice turns "%252f" and "%255c" into slashes (the
// lower-case "%252f" passed where "%252F" was refused); "/%2Fadmin;x"
// reaches /admin only with both readings.
func TestPathParamsCannotChangeApp(t *testing.T) {
	g, err := New(Config{
		TunnelTLS: &tls.Config{},
		Routes: []Route{
			{App: "site", Hosts: []string{"h"}, PathPrefix: "/", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "admin", Hosts: []string{"h"}, PathPrefix: "/admin", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "api", Hosts: []string{"h"}, PathPrefix: "/api", Backend: mustURL(t, "http://a:1"), Group: "g"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	for _, bad := range []string{
		"/admin;x/users", "/admin;/users", "/admin;jsessionid=1", "/;x/admin", "/admin%3Bx/users",
		"/admin%253bx/users", "/admin%252fusers", "/admin%255cusers", "/admin%255Cusers", "/%2Fadmin;x/users",
	} {
		req := httptest.NewRequest("GET", "http://h:8443/", nil)
		req.URL.RawPath, req.URL.Path = bad, bad
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if g.handler.admit(rec, req, st) || rec.Code != http.StatusBadRequest || rec.Header().Get(ErrorHeader) != CodeBadRequest {
			t.Errorf("%s: admitted to %+v (answer %d)", bad, st.route, rec.Code)
		}
	}
	// Parameters and encoded slashes that lead to the same app either way
	// stay data: GitLab's project ids, a session id under /admin.
	for path, app := range map[string]string{
		"/admin/a;b": "admin", "/admin;x/../api": "api", "/a;b/admin": "site", "/docs;v=1/x": "site",
		"/api/v4/projects/group%2Fproject": "api", "/group%2Fsub/project": "site", "/admin/x;jsessionid=1": "admin",
	} {
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.URL.RawPath, req.URL.Path = path, path
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if !g.handler.admit(rec, req, st) || st.route.App != app {
			t.Errorf("%s: routed to %+v (answer %d), want %s", path, st.route, rec.Code, app)
		}
	}
}

func TestBackendReadings(t *testing.T) {
	for in, want := range map[string][2]string{
		"/a%2Fb":       {"/a/b", "/a%2Fb"},
		"/a%2fb%5cc":   {"/a/b/c", "/a%2fb%5cc"},
		"/%2F%2Fa%2F":  {"/a/", "/%2F%2Fa%2F"},
		"/a;x/b;y":     {"/a;x/b;y", "/a/b"},
		"/;x/a":        {"/;x/a", "/a"},
		"/a%3bx%2Fy/z": {"/a%3bx/y/z", "/a/z"},
		"/a%2":         {"/a%2", "/a%2"},
		"/a%3":         {"/a%3", "/a%3"},
	} {
		if got := wholeReading(appendSlashesDecoded, in); got != want[0] {
			t.Errorf("appendSlashesDecoded reads %q as %q, want %q", in, got, want[0])
		}
		if got := wholeReading(appendParamsStripped, in); got != want[1] {
			t.Errorf("appendParamsStripped reads %q as %q, want %q", in, got, want[1])
		}
	}
}

// TestCaseCannotChangeApp: a backend that ignores case (IIS, ASP.NET, a
// Windows or macOS file system) serves "/ADMIN/users" as "/admin/users";
// routed by "/" to the app without sign-in, it skipped the sign-in of the
// app at /admin. Such a path is refused; one that only differs in case
// below its own app's prefix is not, and apps whose prefixes differ only
// in case both stay reachable.
func TestCaseCannotChangeApp(t *testing.T) {
	g, err := New(Config{
		TunnelTLS: &tls.Config{},
		Routes: []Route{
			{App: "site", Hosts: []string{"h"}, PathPrefix: "/", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "admin", Hosts: []string{"h"}, PathPrefix: "/admin", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "Docs", Hosts: []string{"h"}, PathPrefix: "/Docs/v1", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "case", Hosts: []string{"h"}, PathPrefix: "/case", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "Case", Hosts: []string{"h"}, PathPrefix: "/Case", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "wild", Hosts: []string{"*.w"}, PathPrefix: "/", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "api", Hosts: []string{"a.w"}, PathPrefix: "/api", Backend: mustURL(t, "http://a:1"), Group: "g"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	for _, bad := range []string{"h/ADMIN/users", "h/Admin", "h/aDmIn/x", "h/docs/v1/x", "h/Docs/V1", "h/CASE/x",
		"h/%2FADMIN/x", "h/ADMIN;x", "a.w/API/x", "a.w:8443/Api"} {
		host, path, _ := strings.Cut(bad, "/")
		path = "/" + path
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.Host, req.URL.RawPath, req.URL.Path = host, path, path
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if g.handler.admit(rec, req, st) || rec.Code != http.StatusBadRequest || rec.Header().Get(ErrorHeader) != CodeBadRequest {
			t.Errorf("%s: admitted to %+v (answer %d)", bad, st.route, rec.Code)
		}
	}
	for in, app := range map[string]string{
		"h/admin/X": "admin", "h/administrator": "site", "h/ADMINX": "site", "h/Docs/v1/X": "Docs", "h/docs/v2": "site",
		"h/case/x": "case", "h/Case/x": "Case", "h/About/Team": "site", "a.w/api/X": "api", "b.w/API/x": "wild",
	} {
		host, path, _ := strings.Cut(in, "/")
		path = "/" + path
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.Host, req.URL.RawPath, req.URL.Path = host, path, path
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if !g.handler.admit(rec, req, st) || st.route.App != app {
			t.Errorf("%s: routed to %+v (answer %d), want %s", in, st.route, rec.Code, app)
		}
	}
}
