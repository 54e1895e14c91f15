package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// deadAgentKeepalive is the keepalive of TestDeadAgentNoticedBeforeIdleTimeout's
// peers: QUIC's idle timeout is twice it, 4 min, and the gateway's yamux
// keepalive notices after 2 min 10 s, so only the gateway's liveness watch
// can notice the dead agent within the test's bounds.
const deadAgentKeepalive = 2 * time.Minute

// deadAgentYamuxKeepalive is the yamux agents' keepalive in the dead
// agent tests: a live agent that hears nothing pings after it, so the
// gateway's liveness watch closes a silent session after it and a second
// (the gateway learns it from the agent's first frame).
const deadAgentYamuxKeepalive = 5 * time.Second

// deadAgentBound bounds how long the gateway may take to notice a dead
// agent that it sends exchanges to: it takes about 6 s (silent after 1 s,
// closed after the agent's 5 s keepalive ping failed to come and another
// second), far below the 4 min idle timeout.
const deadAgentBound = 60 * time.Second

// deadAgentTransports are the transports whose gateway sessions watch that
// the agent answers the exchanges sent to it: all of them (QUIC and yamux
// through muxtunnel.LiveConn, gRPC through a ping sent with the exchange,
// grpctunnel's watch).
var deadAgentTransports = []string{"grpc", "quic", "yamux"}

// TestDeadAgentNoticedBeforeIdleTimeout: over QUIC and yamux, a group's
// agent whose host dies (its path drops everything, both ways, for good:
// no FIN, no RST, no CONNECTION_CLOSE) while another agent of the group is
// fine costs the users a few seconds, not the keepalive's idle timeout.
// The exchanges the gateway sends there draw no acknowledgement (QUIC's,
// or yamux's of a new stream), so within about a second it stops picking
// the dead sessions, and after about 6 s it closes them: a GET that was
// sent there is sent again over the other agent and answers 200, and
// later requests go to the live agent only. Before, the dead sessions
// stayed until the idle timeout (QUIC: 30 s by default, 4 min here; yamux:
// the gateway's keepalive and up to 10 s, 25 s by default, 2 min 10 s
// here), and each exchange sent there waited as long (GETs then went to
// the other agent; a POST got 502 tunnel-failed).
func TestDeadAgentNoticedBeforeIdleTimeout(t *testing.T) {
	testrig.SkipShort(t, "waits about 6 s for a dead agent to be noticed")
	t.Parallel()
	for _, transport := range deadAgentTransports {
		parallelOn(t, transport, transport, func(t *testing.T) { deadAgentNoticed(t, transport) })
	}
}

// deadAgentNoticed is one case of TestDeadAgentNoticedBeforeIdleTimeout.
func deadAgentNoticed(t *testing.T, transport string) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes:    []gateway.Route{{App: "dead", Hosts: []string{"dead.test"}, Backend: testrig.MustURL(t, backend.URL)}},
		Gateway:   func(c *gateway.Config) { c.Keepalive = deadAgentKeepalive },
	})
	// The agents' keepalive: QUIC's agents ping every 5 s whatever it is;
	// yamux's ping after it without anything read.
	agentKeepalive := deadAgentKeepalive
	var pathAddr string
	var blackhole func()
	if transport == "quic" {
		path := testrig.StartImpairedUDP(t, rig.Tunnel, 1)
		pathAddr, blackhole = path.Addr(), func() { path.Set(testrig.Impairment{Blackhole: true}) }
	} else {
		agentKeepalive = deadAgentYamuxKeepalive
		path := testrig.StartImpairedTCP(t, rig.Tunnel)
		pathAddr, blackhole = path.Addr(), func() { path.Set(testrig.Impairment{Blackhole: true}) }
	}
	doomed := rig.StartAgent(func(c *agent.Config) {
		c.Gateway, c.Name, c.Connections, c.Keepalive = pathAddr, "doomed", 2, agentKeepalive
	})
	rig.StartAgent(func(c *agent.Config) { c.Name, c.Connections, c.Keepalive = "healthy", 2, agentKeepalive })
	var dead []string
	waitFor(t, "the doomed agent's sessions", func() bool { dead = doomed.A.Sessions(); return len(dead) == 2 })
	deadLive := func() bool {
		for _, s := range rig.G.Registry().Sessions() {
			if slices.Contains(dead, s.ID) {
				return true
			}
		}
		return false
	}

	// The host dies: nothing passes any more, and it never comes back.
	blackhole()
	start := time.Now()
	client := rig.Client()
	for i := 0; deadLive(); i++ {
		if time.Since(start) > deadAgentBound {
			t.Fatalf("the dead agent's sessions were still registered %v after its path died (%d requests sent)", deadAgentBound, i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadAgentBound)
		req, _ := http.NewRequestWithContext(ctx, "GET", rig.URL+"/", nil)
		req.Host = "dead.test"
		sent := time.Now()
		res, err := client.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("GET %d: %v after %v: it went to the dead agent, whose session the gateway kept until its idle timeout",
				i, err, time.Since(sent).Round(time.Millisecond))
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		if res.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("GET %d: %d %s %q; want 200 through the live agent", i, res.StatusCode, res.Header.Get("X-Sallyport-Error"), body)
		}
	}
	t.Logf("%s: the dead agent's sessions were closed %v after its path died", transport, time.Since(start).Round(100*time.Millisecond))
	// What comes now goes to the live agent, a POST too.
	req, _ := http.NewRequest("POST", rig.URL+"/", strings.NewReader("payload"))
	req.Host = "dead.test"
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("POST after the dead agent was noticed: %d %s", res.StatusCode, res.Header.Get("X-Sallyport-Error"))
	}
}

// TestSlowBackendNotTakenForDeadAgent: over QUIC and yamux, an exchange
// whose backend takes longer than the gateway's liveness watch allows a
// silent agent (a long poll) is not cut, and its session is neither closed
// nor set aside: the agent's transport acknowledged the request (yamux: the
// new stream), and its keepalive pings go on arriving. The exchange
// answers 200 on the session it started on. The yamux agent's keepalive is
// 5 s, so that the watch would close a silent session after 6 s.
func TestSlowBackendNotTakenForDeadAgent(t *testing.T) {
	testrig.SkipShort(t, "holds a long poll for 8 s")
	t.Parallel()
	for _, transport := range deadAgentTransports {
		parallelOn(t, transport, transport, func(t *testing.T) { slowBackendNotTakenForDeadAgent(t, transport) })
	}
}

// slowBackendNotTakenForDeadAgent is one case of
// TestSlowBackendNotTakenForDeadAgent.
func slowBackendNotTakenForDeadAgent(t *testing.T, transport string) {
	// Longer than the watch closes a silent session (about 6 s).
	const hold = 8 * time.Second
	entered := make(chan struct{}, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-time.After(hold):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "late")
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes:    []gateway.Route{{App: "poll", Hosts: []string{"poll.test"}, Backend: testrig.MustURL(t, backend.URL)}},
	})
	a := rig.StartAgent(func(c *agent.Config) {
		if transport == "yamux" {
			c.Keepalive = deadAgentYamuxKeepalive
		}
	})
	var before []string
	waitFor(t, "the agent's session", func() bool { before = a.A.Sessions(); return len(before) == 1 })
	done := make(chan error, 1)
	go func() {
		code, body, err := get(t, rig.Client(), rig.URL, "poll.test", "/")
		if err == nil && (code != 200 || body != "late") {
			err = &statusError{code, body}
		}
		done <- err
	}()
	<-entered
	if err := <-done; err != nil {
		t.Fatalf("long poll: %v", err)
	}
	st := rig.G.Registry().Sessions()
	if len(st) != 1 || st[0].ID != before[0] || st[0].Silent {
		t.Fatalf("after the long poll the gateway has %+v; want the agent's session %s, not silent", st, before[0])
	}
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return http.StatusText(e.code) + ": " + e.body }

// parallelOn runs f as the parallel subtest name of t when this run covers
// transport (testrig.Transports: all in the first pass of make test, one
// with SALLYPORT_TEST_TRANSPORT), and does nothing otherwise.
func parallelOn(t *testing.T, transport, name string, f func(t *testing.T)) {
	t.Helper()
	if !slices.Contains(testrig.Transports, transport) {
		return
	}
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		f(t)
	})
}
