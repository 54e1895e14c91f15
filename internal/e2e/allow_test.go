package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestBackendNotAllowedLoggedOnAgent: a backend outside the agent's allow
// list is never called, the user gets 502 backend-not-allowed, and the
// agent's own log names what it refused, so its operator can see what the
// gateway asked for.
func TestBackendNotAllowedLoggedOnAgent(t *testing.T) {
	var hits atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer backend.Close()
	core, logs := observer.New(zap.WarnLevel)
	rig := testrig.New(t, testrig.Options{
		Log: zap.New(core),
		Routes: []gateway.Route{
			{App: "private", Hosts: []string{"private.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
	})
	rig.StartAgent(func(c *agent.Config) { c.Allow = []string{"127.0.0.1:1"} })
	req, _ := http.NewRequest("GET", rig.URL+"/", nil)
	req.Host = "private.test"
	res, err := rig.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || res.Header.Get(gateway.ErrorHeader) != gateway.CodeBackendNotAllowed {
		t.Fatalf("got %d %q, want 502 backend-not-allowed", res.StatusCode, res.Header.Get(gateway.ErrorHeader))
	}
	if hits.Load() != 0 {
		t.Fatal("the agent called a backend outside its allow list")
	}
	hostport := strings.TrimPrefix(backend.URL, "http://")
	var found bool
	for _, e := range logs.FilterLoggerName("agent").FilterMessage("exchange failed").All() {
		f := e.ContextMap()
		if f["code"] == gateway.CodeBackendNotAllowed && strings.Contains(f["backend"].(string), hostport) {
			found = true
		}
	}
	if !found {
		t.Fatalf("the agent did not log the refused backend %s; agent logs: %v", hostport, logs.FilterLoggerName("agent").All())
	}
}
