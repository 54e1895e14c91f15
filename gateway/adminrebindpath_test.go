package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// TestAdminRebindingWarningPathAsSent: the warning about a /metrics
// request over loopback for another host names the path as the client
// sent it, as the access log does (TestAccessLogPathAsSent); it logged the
// decoded path, so "/metric%73" read "/metrics".
func TestAdminRebindingWarningPathAsSent(t *testing.T) {
	_, base, logs := newObservedAdmin(t, storeWithConnector(t, "c1"))
	req, err := http.NewRequest("GET", base+"/metric%73", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "evil.example"
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("GET /metric%%73 for evil.example over loopback: %d, want 403", res.StatusCode)
	}
	warned := logs.FilterMessageSnippet("named another host").All()
	if len(warned) != 1 {
		t.Fatalf("%d warnings, want 1: %v", len(warned), logs.All())
	}
	e := warned[0]
	if path := e.ContextMap()["path"]; path != "/metric%73" || !strings.Contains(e.Message, "a request for /metric%73 over loopback") {
		t.Errorf("warning %q, path %q; want the path as sent, /metric%%73", e.Message, path)
	}
}
