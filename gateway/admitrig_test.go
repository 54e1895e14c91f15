package gateway

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// admitGateway is a gateway, never served, with routes on host "h" (Hosts,
// Backend and Group filled in where a route leaves them empty), for tests
// of what admit lets through.
func admitGateway(t *testing.T, routes ...Route) *Gateway {
	t.Helper()
	for i := range routes {
		r := &routes[i]
		if r.Hosts == nil {
			r.Hosts = []string{"h"}
		}
		if r.Backend == nil {
			r.Backend = mustURL(t, "http://a:1")
		}
		if r.Group == "" {
			r.Group = "g"
		}
	}
	g, err := New(Config{TunnelTLS: &tls.Config{}, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.closeOwnStore)
	return g
}

// admitRaw runs admit on GET http://h followed by raw (the path as sent,
// escaped): whether admit let it through, the app it was routed to ("" for
// none), and the status of the answer admit wrote (200 if none).
func admitRaw(g *Gateway, raw string) (bool, string, int) {
	req := httptest.NewRequest("GET", "http://h"+raw, nil)
	rec := httptest.NewRecorder()
	st := &exchangeState{}
	ok := g.handler.admit(rec, req, st)
	app := ""
	if st.route != nil {
		app = st.route.App
	}
	return ok, app, rec.Code
}

// wantRefused checks that admit answers each of paths with 400: a backend
// reading it as reading says may serve another app.
func wantRefused(t *testing.T, g *Gateway, reading string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if ok, app, code := admitRaw(g, p); ok || code != http.StatusBadRequest {
			t.Errorf("%s: admitted to %s (answer %d); a backend reading it %s may serve another app", p, app, code, reading)
		}
	}
}

// wantAdmitted checks that admit lets each path through to its app, with
// no answer of its own.
func wantAdmitted(t *testing.T, g *Gateway, apps map[string]string) {
	t.Helper()
	for p, want := range apps {
		if ok, app, code := admitRaw(g, p); !ok || app != want || code != http.StatusOK {
			t.Errorf("%s: admitted %v to %s (answer %d), want %s", p, ok, app, code, want)
		}
	}
}
