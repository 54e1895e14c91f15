package gateway

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAccessLogPathAsSent: the access line names the path as the backend
// gets it, escaped. It logged the decoded path: "/docs/a%2Fb" (sent on
// as is) as "/docs/a/b", the refused "/admin%2Fusers" as "/admin/users",
// which cannot explain the 400, and "/a%3Fb" cut to "/a" at the decoded
// "?".
func TestAccessLogPathAsSent(t *testing.T) {
	log, logs, written := accessLog()
	g, err := New(Config{
		TunnelTLS: &tls.Config{},
		Log:       log,
		Routes: []Route{
			{App: "site", Hosts: []string{"h"}, PathPrefix: "/", Backend: mustURL(t, "http://a:1"), Group: "g"},
			{App: "admin", Hosts: []string{"h"}, PathPrefix: "/admin", Backend: mustURL(t, "http://a:1"), Group: "g"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	for path, status := range map[string]int{
		"/docs/a%2Fb":    http.StatusServiceUnavailable, // no agent
		"/a%3Fb":         http.StatusServiceUnavailable,
		"/admin%2Fusers": http.StatusBadRequest,
	} {
		rec := httptest.NewRecorder()
		g.handler.ServeHTTP(rec, httptest.NewRequest("GET", "http://h"+path, nil))
		f := waitAccess(t, logs, written, path)
		if rec.Code != status || f["status"] != int64(status) {
			t.Errorf("%s: answered %d, logged %v; want %v", path, rec.Code, f["status"], status)
		}
	}
}
