package gateway

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestUnicodeCaseCannotChangeApp: case is that of every letter, not only
// ASCII ones. IIS (NTFS's upcase table) and ASP.NET (OrdinalIgnoreCase)
// serve "/ÄRZTE/x" as "/ärzte/x"; routed by "/" to the app without
// sign-in, it skipped the sign-in of the app at /ärzte (the check folded
// ASCII letters only). Look-alikes that some backends fold (a dotless i,
// the Kelvin sign, a long s) are refused too; "ß" is not "SS" (no backend
// folds one letter into two), and apps whose prefixes differ only in case
// stay reachable.
func TestUnicodeCaseCannotChangeApp(t *testing.T) {
	g, err := New(Config{
		TunnelTLS: &tls.Config{},
		Routes: []Route{
			{App: "site", Hosts: []string{"h"}, PathPrefix: "/", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "aerzte", Hosts: []string{"h"}, PathPrefix: "/ärzte", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "admin", Hosts: []string{"h"}, PathPrefix: "/admin", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "key", Hosts: []string{"h"}, PathPrefix: "/key", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "static", Hosts: []string{"h"}, PathPrefix: "/static", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "strasse", Hosts: []string{"h"}, PathPrefix: "/straße", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "über", Hosts: []string{"h"}, PathPrefix: "/über", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "Über", Hosts: []string{"h"}, PathPrefix: "/Über", Backend: mustURL(t, "http://a:1"), Group: "g"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	for _, bad := range []string{
		"/ÄRZTE/x", "/Ärzte", "/äRZTE/x", "/admın/x", "/ADMİN", "/\u212Aey/x", "/\u017Ftatic/app.js",
		"/STRAßE/x", "/ÜBER/x", "/%2FÄRZTE/x", "/Ärzte;x/y",
	} {
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.URL.RawPath, req.URL.Path = "", bad
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if g.handler.admit(rec, req, st) || rec.Code != http.StatusBadRequest || rec.Header().Get(ErrorHeader) != CodeBadRequest {
			t.Errorf("%s: admitted to %+v (answer %d)", bad, st.route, rec.Code)
		}
	}
	for path, app := range map[string]string{
		"/ärzte/X": "aerzte", "/Ärzte-info": "site", "/STRASSE/x": "site", "/straße/X": "strasse",
		"/über/x": "über", "/Über/x": "Über", "/Ünter/x": "site", "/key/K": "key", "/müll/Ä": "site",
		"/a\xffb": "site", "/\xc3": "site",
	} {
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.URL.RawPath, req.URL.Path = "", path
		rec := httptest.NewRecorder()
		st := &exchangeState{}
		if !g.handler.admit(rec, req, st) || st.route.App != app {
			t.Errorf("%q: routed to %+v (answer %d), want %s", path, st.route, rec.Code, app)
		}
	}
}

func TestFoldedPrefix(t *testing.T) {
	for _, c := range []struct {
		s, prefix string
		n         int
	}{
		{"/ADMIN/x", "/admin", 6}, {"/admin", "/ADMIN", 6}, {"/ÄRZTE/x", "/ärzte", 7}, {"/\u212Aey", "/key", 6},
		{"/key", "/\u212Aey", 4}, {"/admın", "/admin", 7}, {"/\xff", "/\xff", 2},
		{"/adm", "/admin", -1}, {"/STRASSE", "/straße", -1}, {"/\xff", "/\xfe", -1}, {"/\xff", "/\u00ff", -1},
		{"/a[", "/a{", -1}, {"/a@", "/a`", -1},
	} {
		n, ok := foldedPrefix(c.s, c.prefix)
		if !ok {
			n = -1
		}
		if n != c.n {
			t.Errorf("foldedPrefix(%q, %q) = %d, want %d", c.s, c.prefix, n, c.n)
		}
	}
}
