package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// failWait bounds every wait for something that must happen in the failure
// tests; it is a deadline for a hung test, never an expectation of speed.
const failWait = 30 * time.Second

// waitSignal waits for ch or fails the test after failWait.
func waitSignal[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(failWait)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("gave up waiting: %s", what)
		panic("unreachable")
	}
}

// TestFailureClientDisconnect checks that a client going away cancels the
// backend's request, whatever stage the exchange is at.
func TestFailureClientDisconnect(t *testing.T) {
	const uploadPart = 64 << 10
	type signals struct {
		started   chan struct{} // the backend got as far as the stage
		cancelled chan error    // what the backend saw when the client left
	}
	var byID sync.Map // X-Test-Case → *signals
	quit := make(chan struct{})
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := byID.Load(r.Header.Get("X-Test-Case"))
		s := v.(*signals)
		switch r.URL.Path {
		case "/before-head":
			close(s.started)
		case "/response-body":
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "first part")
			http.NewResponseController(w).Flush()
			close(s.started)
		case "/request-body":
			if _, err := io.ReadFull(r.Body, make([]byte, uploadPart)); err != nil {
				s.cancelled <- fmt.Errorf("reading the first part: %w", err)
				return
			}
			close(s.started)
			// Keep reading: the rest never comes. A relay that ended the
			// body cleanly would pass a truncated upload off as complete.
			_, err := io.Copy(io.Discard, r.Body)
			if err == nil {
				err = errors.New("the truncated body ended cleanly")
			} else {
				err = nil
			}
			s.cancelled <- err
			return
		}
		select {
		case <-r.Context().Done():
			s.cancelled <- nil
		case <-quit:
			s.cancelled <- errors.New("never cancelled")
		}
	}))
	t.Cleanup(func() { close(quit) })
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "cancel", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()

	for _, stage := range []string{"before-head", "response-body", "request-body"} {
		t.Run(stage, func(t *testing.T) {
			s := &signals{started: make(chan struct{}), cancelled: make(chan error, 1)}
			byID.Store(stage, s)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var body io.Reader
			pr, pw := io.Pipe()
			defer pw.Close()
			if stage == "request-body" {
				// The first part, then nothing until the client gives up.
				body = pr
				go func() { _, _ = pw.Write(make([]byte, uploadPart)) }()
			}
			req := appRequest(t, ctx, "POST", rig.URL+"/"+stage, body)
			req.Header.Set("X-Test-Case", stage)
			gotPart := make(chan error, 1) // the client read the first part
			returned := make(chan struct{})
			go func() {
				defer close(returned)
				res, err := c.Do(req)
				if err != nil {
					gotPart <- err
					return
				}
				defer res.Body.Close()
				buf := make([]byte, len("first part"))
				if _, err = io.ReadFull(res.Body, buf); err != nil || string(buf) != "first part" {
					err = fmt.Errorf("read %q: %v", buf, err)
				}
				gotPart <- err
				<-ctx.Done()
			}()
			waitSignal(t, s.started, "the backend to reach "+stage)
			if stage == "response-body" {
				if err := waitSignal(t, gotPart, "the client to read the first part"); err != nil {
					t.Fatal(err)
				}
			}
			// The client leaves.
			cancel()
			pw.CloseWithError(errors.New("the client went away"))
			if err := waitSignal(t, s.cancelled, "the backend to see the client leave"); err != nil {
				t.Error(err)
			}
			waitSignal(t, returned, "the client to return")
		})
	}
}

// TestFailureBackendTimeout checks a backend that sends no response head
// within the route's timeout: the client gets the gateway's 504, naming the
// request id the backend saw, and the backend's request is cancelled.
func TestFailureBackendTimeout(t *testing.T) {
	seen := make(chan string, 1)
	cancelled := make(chan struct{})
	quit := make(chan struct{})
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("X-Request-Id")
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-quit:
		}
	}))
	t.Cleanup(func() { close(quit) })
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "slow", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL), Timeout: 200 * time.Millisecond},
	}})
	rig.StartAgent(nil)

	ctx, cancel := context.WithTimeout(context.Background(), failWait)
	defer cancel()
	req := appRequest(t, ctx, "GET", rig.URL+"/slow", nil)
	req.Header.Set("Accept", "application/json")
	res, b := doAndRead(t, rig.Client(), req)
	page := decodeGatewayError(t, res, b, http.StatusGatewayTimeout, gateway.CodeBackendTimeout)
	id := waitSignal(t, seen, "the backend to get the request")
	if page.RequestID != id || res.Header.Get("X-Request-Id") != id {
		t.Errorf("error page names request id %q (header %q); the backend saw %q",
			page.RequestID, res.Header.Get("X-Request-Id"), id)
	}
	waitSignal(t, cancelled, "the backend's request to be cancelled after the timeout")
}

// TestFailureBackendErrors checks the answers the gateway gives itself when
// an exchange cannot reach its backend, as JSON and as HTML.
func TestFailureBackendErrors(t *testing.T) {
	// A port that refuses connections: bound, then closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	var deniedHits atomic.Int64
	denied := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deniedHits.Add(1)
	}))

	const strictToken, strictGroup = "strict-token", "strict"
	rig := testrig.New(t, testrig.Options{
		Routes: []gateway.Route{
			{App: "refused", Hosts: []string{"refused.test"}, Backend: testrig.MustURL(t, refused)},
			// RFC 6761: names under .invalid never resolve.
			{App: "dns", Hosts: []string{"dns.test"}, Backend: testrig.MustURL(t, "http://sallyport-e2e.invalid:8080")},
			{App: "denied", Hosts: []string{"denied.test"}, Backend: testrig.MustURL(t, denied.URL), Group: strictGroup},
			{App: "nobody", Hosts: []string{"nobody.test"}, Backend: testrig.MustURL(t, denied.URL), Group: "empty"},
		},
		Gateway: func(cfg *gateway.Config) {
			cfg.Tokens = append(cfg.Tokens, gateway.Token{Token: strictToken, Group: strictGroup})
		},
	})
	rig.StartAgent(func(cfg *agent.Config) { cfg.Allow = append(cfg.Allow, "*.invalid:*") })
	rig.StartAgent(func(cfg *agent.Config) {
		cfg.Name, cfg.Token = "strict-agent", strictToken
		cfg.Allow = []string{"127.0.0.1:1"} // not the denied backend's port
	})
	rig.WaitSessions(strictGroup, 1)
	c := rig.Client()

	for _, tc := range []struct {
		host   string
		status int
		code   string
		msgHas string // something the JSON message must name
		secret string // internal detail the page must not show
	}{
		{"refused.test", http.StatusBadGateway, gateway.CodeBackendUnreachable, "", strings.TrimPrefix(refused, "http://")},
		{"dns.test", http.StatusBadGateway, gateway.CodeBackendUnreachable, "", "sallyport-e2e.invalid"},
		{"denied.test", http.StatusBadGateway, gateway.CodeBackendNotAllowed, "", strings.TrimPrefix(denied.URL, "http://")},
		{"nobody.test", http.StatusServiceUnavailable, gateway.CodeNoConnector, `"empty"`, "127.0.0.1"},
		{"unknown.test", http.StatusNotFound, gateway.CodeNoRoute, "", "127.0.0.1"},
	} {
		for _, accept := range []string{"application/json", "text/html", "", "application/json;q=0.5, text/html"} {
			t.Run(tc.host+"/"+accept, func(t *testing.T) {
				req := appRequest(t, context.Background(), "GET", rig.URL+"/some/path", nil)
				req.Host = tc.host
				if accept != "" {
					req.Header.Set("Accept", accept)
				}
				res, b := doAndRead(t, c, req)
				// What the agent reports goes to the gateway's log only:
				// users must not learn internal hosts and addresses.
				if strings.Contains(string(b), tc.secret) {
					t.Errorf("the page shows the internal detail %q:\n%s", tc.secret, b)
				}
				id := res.Header.Get("X-Request-Id")
				if !isGeneratedRequestID(id) {
					t.Errorf("X-Request-Id %q, want a generated id", id)
				}
				if accept == "application/json" {
					page := decodeGatewayError(t, res, b, tc.status, tc.code)
					if page.RequestID != id {
						t.Errorf("page names request id %q, header says %q", page.RequestID, id)
					}
					if !strings.Contains(page.Message, tc.msgHas) {
						t.Errorf("message %q does not mention %q", page.Message, tc.msgHas)
					}
					return
				}
				if res.StatusCode != tc.status || res.Header.Get(gateway.ErrorHeader) != tc.code {
					t.Fatalf("got %d %q, want %d %q", res.StatusCode, res.Header.Get(gateway.ErrorHeader), tc.status, tc.code)
				}
				if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("Content-Type %q, want HTML", ct)
				}
				page := string(b)
				for _, want := range []string{"<html", fmt.Sprint(tc.status), tc.code, id} {
					if !strings.Contains(page, want) {
						t.Errorf("HTML page does not contain %q:\n%s", want, page)
					}
				}
			})
		}
	}
	if n := deniedHits.Load(); n != 0 {
		t.Errorf("the backend outside the allow list was called %d times", n)
	}
}

// TestFailureAgentLost cuts an agent's tunnel connection while an exchange
// waits for its backend: that exchange fails with the gateway's 502
// tunnel-failed (or, once the response had begun, a body that breaks off
// instead of ending cleanly), and an exchange carried by another agent
// meanwhile is unaffected.
func TestFailureAgentLost(t *testing.T) {
	for _, headSent := range []bool{false, true} {
		name := "before the response head"
		if headSent {
			name = "during the response body"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each its own rig; over QUIC each waits for the lost peer's idle timeout
			testAgentLost(t, headSent)
		})
	}
}

func testAgentLost(t *testing.T, headSent bool) {
	victimIn, victimCancelled := make(chan struct{}), make(chan struct{})
	bystanderIn, release := make(chan struct{}), make(chan struct{})
	quit := make(chan struct{})
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Host {
		case "victim.test":
			if headSent {
				w.WriteHeader(http.StatusOK)
				io.WriteString(w, "partial")
				http.NewResponseController(w).Flush()
			}
			close(victimIn)
			select {
			case <-r.Context().Done():
				close(victimCancelled)
			case <-quit:
			}
		case "bystander.test":
			close(bystanderIn)
			select {
			case <-release:
				io.WriteString(w, "bystander ok")
			case <-quit:
			}
		}
	}))
	t.Cleanup(func() { close(quit) })
	backendURL := testrig.MustURL(t, backend.URL)

	const otherToken, otherGroup = "other-token", "other"
	rig := testrig.New(t, testrig.Options{
		Routes: []gateway.Route{
			{App: "victim", Hosts: []string{"victim.test"}, Backend: backendURL, PreserveHost: true},
			{App: "bystander", Hosts: []string{"bystander.test"}, Backend: backendURL, PreserveHost: true, Group: otherGroup},
		},
		Gateway: func(cfg *gateway.Config) {
			cfg.Tokens = append(cfg.Tokens, gateway.Token{Token: otherToken, Group: otherGroup})
			// A lost QUIC peer is noticed by the idle timeout alone (UDP
			// has no reset): keep it short here.
			cfg.QUICIdleTimeout = 2 * time.Second
		},
	})
	relay := startPathRelay(t, rig, true)
	rig.StartAgent(func(cfg *agent.Config) {
		cfg.Name = "victim-agent"
		cfg.Gateway = relay.Addr() // TLS still checks "localhost"
	})
	rig.StartAgent(func(cfg *agent.Config) { cfg.Name, cfg.Token = "bystander-agent", otherToken })
	rig.WaitSessions(otherGroup, 1)
	c := rig.Client()
	ctx, cancel := context.WithTimeout(context.Background(), failWait)
	defer cancel()

	type result struct {
		res  *http.Response
		body []byte
		err  error // of the request, or of reading the body
	}
	// do sends a request for host; when head is not nil it is closed once
	// the response head and its first bytes reached the client.
	do := func(host string, head chan<- struct{}, out chan<- result) {
		req := appRequest(t, ctx, "GET", rig.URL+"/", nil)
		req.Host = host
		req.Header.Set("Accept", "application/json")
		res, err := c.Do(req)
		if err != nil {
			out <- result{err: err}
			return
		}
		defer res.Body.Close()
		var first []byte
		if head != nil {
			first = make([]byte, len("partial"))
			if _, err := io.ReadFull(res.Body, first); err != nil {
				out <- result{res: res, body: first, err: err}
				return
			}
			close(head)
		}
		b, err := io.ReadAll(res.Body)
		out <- result{res: res, body: append(first, b...), err: err}
	}
	bystander, victim := make(chan result, 1), make(chan result, 1)
	go do("bystander.test", nil, bystander)
	waitSignal(t, bystanderIn, "the bystander exchange to reach its backend")
	if headSent {
		victimHead := make(chan struct{})
		go do("victim.test", victimHead, victim)
		waitSignal(t, victimHead, "the victim's response head to reach the client")
	} else {
		go do("victim.test", nil, victim)
	}
	waitSignal(t, victimIn, "the victim exchange to reach its backend")

	relay.cut()

	v := waitSignal(t, victim, "the victim exchange to end")
	if headSent {
		if v.err == nil {
			t.Errorf("the victim's response ended cleanly with %q after its agent was lost; want a broken body", v.body)
		} else if v.res == nil || v.res.StatusCode != http.StatusOK || string(v.body) != "partial" {
			t.Errorf("victim: %v; want the 200 head and the part sent before the loss", v.err)
		}
	} else {
		if v.err != nil {
			t.Fatalf("victim: %v", v.err)
		}
		page := decodeGatewayError(t, v.res, v.body, http.StatusBadGateway, gateway.CodeTunnelFailed)
		if page.RequestID != v.res.Header.Get("X-Request-Id") {
			t.Errorf("page names request id %q, header says %q", page.RequestID, v.res.Header.Get("X-Request-Id"))
		}
	}
	waitSignal(t, victimCancelled, "the victim's backend request to be cancelled")

	if n := rig.G.Registry().Count(otherGroup); n != 1 {
		t.Errorf("group %q has %d sessions after another agent was lost, want 1", otherGroup, n)
	}
	close(release)
	b := waitSignal(t, bystander, "the bystander exchange to end")
	if b.err != nil || b.res.StatusCode != http.StatusOK || string(b.body) != "bystander ok" {
		t.Errorf("bystander: %v %v %q; want 200 %q", b.err, b.res, b.body, "bystander ok")
	}
}

// accessLogRig starts a rig whose info logs are kept for the test to read,
// next to the usual test log.
//
// The gateway trusts loopback as a proxy (public.trusted_proxies), so that
// the X-Request-Id the test sends, as a load balancer would, is kept and
// names the exchange's access line; from other clients it is replaced.
func accessLogRig(t *testing.T, o testrig.Options) (*testrig.Rig, *observer.ObservedLogs) {
	edit := o.Gateway
	o.Gateway = func(c *gateway.Config) {
		c.TrustedProxies = append(c.TrustedProxies, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
		if edit != nil {
			edit(c)
		}
	}
	core, logs := observer.New(zap.InfoLevel)
	o.Log = zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core))
	return testrig.New(t, o), logs
}

// agentsByRequestID maps the request id of each gateway access log line so
// far to the agent that carried the exchange.
func agentsByRequestID(logs *observer.ObservedLogs) map[string]string {
	out := map[string]string{}
	for _, e := range logs.FilterLoggerName("gateway.access").All() {
		m := e.ContextMap()
		id, _ := m["request_id"].(string)
		name, _ := m["agent"].(string)
		out[id] = name
	}
	return out
}

// TestBalancingSpreadsLoad checks that both agents of a group carry
// exchanges.
func TestBalancingSpreadsLoad(t *testing.T) {
	const n = 200
	backend := startLoopbackBackend(t, demoapp.New())
	rig, logs := accessLogRig(t, testrig.Options{Routes: []gateway.Route{
		{App: "lb", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(func(cfg *agent.Config) { cfg.Name = "agent-a" })
	rig.StartAgent(func(cfg *agent.Config) { cfg.Name = "agent-b" })
	c := rig.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range n {
		req := appRequest(t, ctx, "GET", rig.URL+"/healthz", nil)
		req.Header.Set("X-Request-Id", fmt.Sprintf("lb-%d", i))
		if res, b := doAndRead(t, c, req); res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, res.StatusCode, b)
		}
	}
	count := map[string]int{}
	agents := agentsByRequestID(logs)
	for i := range n {
		count[agents[fmt.Sprintf("lb-%d", i)]]++
	}
	t.Logf("exchanges per agent: %v", count)
	if count["agent-a"] == 0 || count["agent-b"] == 0 || count["agent-a"]+count["agent-b"] != n {
		t.Errorf("exchanges per agent: %v; want both agents to carry some of the %d", count, n)
	}
}

// TestBalancingAgentStopMidRun stops one of two agents gracefully while
// clients keep sending: no exchange may fail, and those sent after the stop
// go to the other agent.
func TestBalancingAgentStopMidRun(t *testing.T) {
	const (
		workers = 4
		before  = 100 // successes before the stop
		after   = 100 // successes after it
	)
	backend := startLoopbackBackend(t, demoapp.New())
	rig, logs := accessLogRig(t, testrig.Options{Routes: []gateway.Route{
		{App: "lb", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	a := rig.StartAgent(func(cfg *agent.Config) { cfg.Name = "agent-a" })
	rig.StartAgent(func(cfg *agent.Config) { cfg.Name = "agent-b" })
	c := rig.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		ok       atomic.Int64
		stopped  atomic.Bool // agent-a has finished stopping
		mu       sync.Mutex
		failures []string
		postStop []string // request ids sent after agent-a stopped
	)
	reachedBefore, reachedAfter := make(chan struct{}), make(chan struct{})
	var beforeOnce, afterOnce sync.Once
	var stopAfter atomic.Int64
	stopAfter.Store(1 << 62)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				case <-ctx.Done():
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				post := stopped.Load()
				req := appRequest(t, ctx, "GET", rig.URL+"/echo", nil)
				req.Header.Set("X-Request-Id", id)
				res, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if err == nil && res.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d (%s)", res.StatusCode, res.Header.Get(gateway.ErrorHeader))
					}
				}
				mu.Lock()
				if err != nil {
					failures = append(failures, id+": "+err.Error())
				} else if post {
					postStop = append(postStop, id)
				}
				mu.Unlock()
				if err != nil {
					continue
				}
				n := ok.Add(1)
				if n >= before {
					beforeOnce.Do(func() { close(reachedBefore) })
				}
				if n >= stopAfter.Load() {
					afterOnce.Do(func() { close(reachedAfter) })
				}
			}
		}()
	}
	finish := func() {
		close(done)
		wg.Wait()
	}
	select {
	case <-reachedBefore:
	case <-ctx.Done():
		finish()
		t.Fatalf("only %d exchanges succeeded before the stop; failures: %q", ok.Load(), failures)
	}
	a.Stop()
	stopped.Store(true)
	stopAfter.Store(ok.Load() + after)
	select {
	case <-reachedAfter:
	case <-ctx.Done():
	}
	finish()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d exchanges succeeded, %d of them sent after agent-a stopped; %d failed", ok.Load(), len(postStop), len(failures))
	if len(failures) > 0 {
		t.Errorf("%d exchanges failed while an agent stopped gracefully: %q", len(failures), failures)
	}
	if len(postStop) < after {
		t.Errorf("only %d exchanges were sent after the stop, want %d", len(postStop), after)
	}
	agents := agentsByRequestID(logs)
	for _, id := range postStop {
		if got := agents[id]; got != "agent-b" {
			t.Errorf("exchange %s, sent after agent-a stopped, was carried by %q", id, got)
		}
	}
}

// TestAccessLogClientClosed: a client that leaves is logged as such. One
// that leaves before the response head gets status 499 (nothing was
// written; it was logged as 200), one that hangs up mid-download keeps its
// 200 with error client-closed (it was logged and counted as
// tunnel-failed, the code alerts watch for the agent's connection).
func TestAccessLogClientClosed(t *testing.T) {
	started := make(chan struct{}, 1)
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			started <- struct{}{}
			<-r.Context().Done()
			return
		}
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	core, logs := observer.New(zap.InfoLevel)
	rig := testrig.New(t, testrig.Options{Log: zap.New(core), Routes: []gateway.Route{
		{App: "gone", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := rig.Client().Do(appRequest(t, ctx, "GET", rig.URL+"/hang", nil))
		done <- err
	}()
	waitSignal(t, started, "the backend got the request")
	cancel()
	<-done

	res, err := rig.Client().Do(appRequest(t, context.Background(), "GET", rig.URL+"/download", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(res.Body, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	rig.Client().Transport.(*http.Transport).CloseIdleConnections()
	res.Body.Close() // mid-body: the connection closes

	want := map[string]string{"/hang": "499 client-closed", "/download": "200 client-closed"}
	waitFor(t, "both access lines", func() bool {
		got := map[string]string{}
		for _, e := range logs.FilterMessage("access").All() {
			f := e.ContextMap()
			got[fmt.Sprint(f["path"])] = fmt.Sprintf("%v %v", f["status"], f["error"])
		}
		return got["/hang"] == want["/hang"] && got["/download"] == want["/download"]
	})
}

// TestNoConnectorAnswersUnreadBodies: POSTs to an app without agents get
// 503 no-connector, their bodies unread, on kept-alive connections. With
// full duplex (an earlier version of the early-answer fix), net/http
// started its background read when it read such a body to its end after
// the handler, and panicked reading the next request ("invalid concurrent
// Body.Read call"; 28 of 30 requests in a probe, some clients reset).
func TestNoConnectorAnswersUnreadBodies(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	backend := startLoopbackBackend(t, demoapp.New())
	rig := testrig.New(t, testrig.Options{Log: zap.New(core), Routes: []gateway.Route{
		{App: "echo", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	c := rig.Client()
	for i := range 30 {
		res, b := doAndRead(t, c, appRequest(t, context.Background(), "POST", rig.URL+"/echo", strings.NewReader("exchange body")))
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get(gateway.ErrorHeader) != gateway.CodeNoConnector {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, b)
		}
	}
	if p := logs.FilterMessageSnippet("panic").All(); len(p) > 0 {
		t.Fatalf("%d panics logged; the first: %s", len(p), p[0].Message)
	}
}

// TestShortSessionsBackOff: a path that cuts every connection soon after
// its session came up (a gateway that drops the session once it is up, a
// middlebox that kills connections) makes the agent wait longer after each
// lost session, as after failed dials. It used to start over at the first
// step after every session that had come up, so it reconnected about twice
// a second for ever. With Rand 0 the delays are exactly Min·2^attempt, up
// to Max: after the first lost session none may be Min again.
func TestShortSessionsBackOff(t *testing.T) {
	rig := testrig.New(t, testrig.Options{Transport: "grpc"})
	relay := testrig.StartImpairedTCP(t, rig.Tunnel)
	core, logs := observer.New(zap.WarnLevel)
	ag := rig.StartAgent(func(cfg *agent.Config) {
		cfg.Gateway = relay.Addr()
		cfg.Connections = 1
		cfg.Log = zap.New(core)
		// Max is also how long a session must last to count as working.
		cfg.Backoff = agent.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond, Rand: func() float64 { return 0 }}
	})
	const losses = 4
	lost := func() []observer.LoggedEntry {
		return logs.FilterMessage("lost the gateway session; reconnecting").All()
	}
	cut := map[string]bool{}    // sessions whose connection was cut
	newSession := func() bool { // one the agent has (welcomed), not cut yet
		for _, id := range ag.A.Sessions() {
			if !cut[id] {
				cut[id] = true
				return true
			}
		}
		return false
	}
	for i := range losses {
		// Cut the connection once a new session is up on it (for the
		// agent too), then wait for the agent to see the loss.
		waitFor(t, fmt.Sprintf("session %d up", i+1), newSession)
		relay.Cut()
		waitFor(t, fmt.Sprintf("session %d lost", i+1), func() bool { return len(lost()) > i })
	}
	for i, e := range lost()[:losses] {
		d, ok := e.ContextMap()["retry_in"].(time.Duration)
		if !ok {
			t.Fatalf("lost session %d: no retry_in in %v", i+1, e.ContextMap())
		}
		if i > 0 && d <= 20*time.Millisecond {
			t.Errorf("lost session %d: retry in %v, the first step again; want the delay to grow", i+1, d)
		}
	}
}

// TestRetryAfterAgentLost: when an agent's connection is lost after a
// request reached it and before the response head came back, a request
// that is safe to repeat (GET, HEAD, OPTIONS without a body) is sent again
// over another agent of the group and the client gets its answer; one
// that is not (a POST) gets 502 tunnel-failed, and its backend sees it
// once. The lost agent's backend request is cancelled either way.
func TestRetryAfterAgentLost(t *testing.T) {
	for _, transport := range testrig.Transports {
		for _, method := range []string{"GET", "POST"} {
			t.Run(transport+"/"+method, func(t *testing.T) {
				t.Parallel() // each its own rig; the QUIC cases wait ~7 s for the lost peer's idle timeout
				testRetryAfterAgentLost(t, transport, method)
			})
		}
	}
}

func testRetryAfterAgentLost(t *testing.T, transport, method string) {
	var hits atomic.Int32
	first, firstCancelled := make(chan struct{}), make(chan struct{})
	quit := make(chan struct{})
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read to the end, so that net/http's server watches the
		// connection and cancels the context when the agent closes it.
		io.Copy(io.Discard, r.Body)
		if hits.Add(1) == 1 {
			close(first)
			select {
			case <-r.Context().Done():
				close(firstCancelled)
			case <-quit:
			}
			return
		}
		io.WriteString(w, "answered")
	}))
	t.Cleanup(func() { close(quit) })
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes:    []gateway.Route{{App: "app", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)}},
		Gateway: func(cfg *gateway.Config) {
			cfg.QUICIdleTimeout = 2 * time.Second // a lost QUIC peer is noticed by the idle timeout alone
		},
	})
	relay := startPathRelay(t, rig, true)
	rig.StartAgent(func(cfg *agent.Config) {
		cfg.Name = "lost-agent"
		cfg.Gateway = relay.Addr()
	})
	rig.WaitSessions(testrig.Group, 1)

	ctx, cancel := context.WithTimeout(context.Background(), failWait)
	defer cancel()
	type result struct {
		status int
		code   string
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("form=1")
		}
		res, b := doAndRead(t, rig.Client(), appRequest(t, ctx, method, rig.URL+"/", body))
		done <- result{status: res.StatusCode, code: res.Header.Get(gateway.ErrorHeader), body: string(b)}
	}()
	waitSignal(t, first, "the request to reach the backend through the first agent")
	rig.StartAgent(func(cfg *agent.Config) { cfg.Name = "healthy-agent" })
	rig.WaitSessions(testrig.Group, 2)
	relay.cut()

	r := waitSignal(t, done, "the request to end")
	waitSignal(t, firstCancelled, "the lost agent's backend request to be cancelled")
	switch method {
	case "GET":
		if r.status != http.StatusOK || r.body != "answered" || hits.Load() != 2 {
			t.Fatalf("GET after its agent was lost: %d %s %q, backend hit %d times; want 200 from the other agent (hit twice)",
				r.status, r.code, r.body, hits.Load())
		}
	default:
		if r.status != http.StatusBadGateway || r.code != gateway.CodeTunnelFailed || hits.Load() != 1 {
			t.Fatalf("POST after its agent was lost: %d %s, backend hit %d times; want 502 %s, hit once",
				r.status, r.code, hits.Load(), gateway.CodeTunnelFailed)
		}
	}
}
