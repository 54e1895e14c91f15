package e2e

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// blockingBackend answers every request once release is closed, and tells
// entered about each request it got.
func blockingBackend(t *testing.T) (url string, entered chan string, release chan struct{}) {
	entered = make(chan string, 16)
	release = make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- r.URL.Path
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return srv.URL, entered, release
}

func get(t *testing.T, c *http.Client, base, host, path string) (int, string, error) {
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Host = host
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// TestGatewayShutdownLetsExchangesFinish: on shutdown the gateway stops
// accepting connections but the exchange in flight completes.
func TestGatewayShutdownLetsExchangesFinish(t *testing.T) {
	backend, entered, release := blockingBackend(t)
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "app", Hosts: []string{"app.test"}, Backend: testrig.MustURL(t, backend)},
	}})
	rig.StartAgent(nil)
	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		code, body, err := get(t, rig.Client(), rig.URL, "app.test", "/slow")
		inflight <- result{code, body, err}
	}()
	<-entered // the exchange reached the backend
	stopped := make(chan error, 1)
	go func() { stopped <- rig.StopGateway() }()

	waitListenerClosed(t, rig.G.PublicAddr().String())
	select {
	case err := <-stopped:
		t.Fatalf("gateway stopped (%v) before its exchange in flight finished", err)
	default:
	}
	close(release)
	r := <-inflight
	if r.err != nil || r.code != 200 || r.body != "done /slow" {
		t.Fatalf("exchange in flight during shutdown: %d %q %v", r.code, r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("gateway shutdown: %v", err)
	}
}

// waitListenerClosed polls until addr refuses connections: the gateway's
// shutdown has begun.
func waitListenerClosed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the gateway still accepts connections 10s after shutdown began")
		}
		time.Sleep(5 * time.Millisecond) // polling a listener; nothing to wait on
	}
}

// TestGatewayShutdownKeepsWebSockets: a WebSocket open when a lone gateway
// stops keeps working within the shutdown grace, like any exchange in
// flight, and the gateway stops once it closed. net/http's Shutdown does
// not track upgraded connections, and a gateway with no other replica
// closed its agent sessions at once, cutting the WebSocket (found by a
// probe: the client got EOF within 1 ms of the stop).
func TestGatewayShutdownKeepsWebSockets(t *testing.T) {
	backend := httptest.NewServer(demoapp.New())
	t.Cleanup(backend.Close)
	rig := wsRig(t, backend)
	ctx := boundedCtx(t)
	c := mustDialWS(ctx, t, rig, "/ws")
	wsRoundTrips(ctx, t, c, 3)
	stopped := make(chan error, 1)
	go func() { stopped <- rig.StopGateway() }()
	waitListenerClosed(t, rig.G.PublicAddr().String())
	wsRoundTrips(ctx, t, c, 20)
	select {
	case err := <-stopped:
		t.Fatalf("gateway stopped (%v) while its WebSocket was open", err)
	default:
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close after the shutdown began: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("gateway shutdown: %v", err)
	}
}

// TestAgentDrain: a stopping agent tells the gateway, which sends new
// exchanges to the other agent while the draining one finishes its own.
func TestAgentDrain(t *testing.T) {
	backend, entered, release := blockingBackend(t)
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "app", Hosts: []string{"app.test"}, Backend: testrig.MustURL(t, backend)},
	}})
	a := rig.StartAgent(func(c *agent.Config) { c.Name = "agent-a" })
	c := rig.Client()
	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		code, body, err := get(t, c, rig.URL, "app.test", "/slow")
		inflight <- result{code, body, err}
	}()
	<-entered
	rig.StartAgent(func(c *agent.Config) { c.Name = "agent-b" })

	stopped := make(chan struct{})
	go func() {
		a.Stop()
		close(stopped)
	}()
	// Wait until the gateway has seen agent-a's drain.
	deadline := time.Now().Add(10 * time.Second)
	for !sessionDraining(rig, "agent-a") {
		if time.Now().After(deadline) {
			t.Fatal("the gateway never saw agent-a draining")
		}
		time.Sleep(2 * time.Millisecond) // polling the registry; nothing to wait on
	}
	for i := 0; i < 20; i++ {
		code, body, err := get(t, c, rig.URL, "app.test", "/fast")
		if err != nil || code != 200 || body != "done /fast" {
			t.Fatalf("request %d while agent-a drains: %d %q %v", i, code, body, err)
		}
		<-entered
	}
	for _, s := range rig.G.Registry().Sessions() {
		if s.AgentName == "agent-a" && s.InFlight != 1 {
			t.Fatalf("the draining agent got new exchanges: %d in flight", s.InFlight)
		}
	}
	select {
	case <-stopped:
		t.Fatal("agent-a exited before its exchange in flight finished")
	default:
	}
	close(release)
	if r := <-inflight; r.err != nil || r.code != 200 || r.body != "done /slow" {
		t.Fatalf("exchange in flight on the draining agent: %d %q %v", r.code, r.body, r.err)
	}
	<-stopped
}

func sessionDraining(rig *testrig.Rig, agentName string) bool {
	for _, s := range rig.G.Registry().Sessions() {
		if s.AgentName == agentName && s.Draining {
			return true
		}
	}
	return false
}

// TestAccessLog: one line per exchange with the fields operators need, and
// no query string (queries may hold secrets).
func TestAccessLog(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(append([]byte("got "), b...))
	}))
	defer backend.Close()
	core, logs := observer.New(zap.InfoLevel)
	rig := testrig.New(t, testrig.Options{
		Log: zap.New(core),
		Routes: []gateway.Route{
			{App: "logged", Hosts: []string{"log.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
		// The test client stands for a load balancer: its X-Request-Id is kept.
		Gateway: func(c *gateway.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} },
	})
	rig.StartAgent(func(c *agent.Config) { c.Name = "agent-log" })
	req, _ := http.NewRequest("POST", rig.URL+"/p/q?secret=hunter2", stringsReader("12345"))
	req.Host = "log.test"
	req.Header.Set("X-Request-Id", "req-42")
	res, err := rig.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	lines := logs.FilterMessage("access").All()
	if len(lines) != 1 {
		t.Fatalf("%d access lines, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	want := map[string]any{
		"app": "logged", "method": "POST", "path": "/p/q", "status": int64(200),
		"bytes_in": int64(5), "bytes_out": int64(9), "agent": "agent-log", "request_id": "req-42",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("access line %s = %v (%T), want %v", k, f[k], f[k], v)
		}
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok && (contains(s, "hunter2") || contains(s, testrig.Token)) {
				t.Errorf("log %q field %s leaks a secret: %q", e.Message, k, s)
			}
		}
	}
}
