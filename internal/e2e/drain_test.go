package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel"
)

// The gateway's Drain of a session (it shuts down, or the session's
// certificate expires soon) makes the agent replace the session,
// make-before-break, as it does after a renewal.

// newSlowTrustRig is a trust rig with the app "slow" (host slow.test) on
// a slowBackend besides "app"; edit may change the gateway's config more.
func newSlowTrustRig(t *testing.T, edit func(*gateway.Config)) (*trustRig, *slowBackend) {
	t.Helper()
	slow := startSlowBackend(t)
	tr := newTrustRig(t, func(c *gateway.Config) {
		c.Routes = append(c.Routes, gateway.Route{App: "slow", Hosts: []string{"slow.test"},
			Backend: testrig.MustURL(t, slow.URL), Group: testrig.Group})
		if edit != nil {
			edit(c)
		}
	})
	return tr, slow
}

type exchangeResult struct {
	code int
	body string
	err  error
}

// startSlowExchange sends one request to slow.test at base and returns
// once the backend has started answering it; the result comes on the
// channel once the backend is released.
func startSlowExchange(t *testing.T, c *http.Client, base string, slow *slowBackend) <-chan exchangeResult {
	t.Helper()
	got := make(chan exchangeResult, 1)
	go func() {
		code, body, err := get(t, c, base, "slow.test", "/")
		got <- exchangeResult{code, body, err}
	}()
	select {
	case <-slow.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow exchange never reached the backend")
	}
	return got
}

// wantSlowResult checks that the slow exchange ended intact.
func wantSlowResult(t *testing.T, got <-chan exchangeResult) {
	t.Helper()
	select {
	case r := <-got:
		if r.err != nil || r.code != 200 || r.body != "first part;second part" {
			t.Fatalf("the exchange in flight across the drain: %d %q %v", r.code, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the exchange in flight never ended")
	}
}

// keepAsking sends GETs to app.test at base one after another until the
// returned stop is called, which reports how many were sent and the
// failures among them.
func keepAsking(t *testing.T, c *http.Client, base string) (stop func() (n int, failures []string)) {
	var (
		mu       sync.Mutex
		n        int
		failures []string
	)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			code, body, err := get(t, c, base, "app.test", "/")
			mu.Lock()
			n++
			if err != nil || code != 200 {
				failures = append(failures, http.StatusText(code)+" "+body)
				if err != nil {
					failures = append(failures, err.Error())
				}
			}
			mu.Unlock()
		}
	}()
	return func() (int, []string) {
		close(quit)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return n, failures
	}
}

// sessionIDs are the ids of ss.
func sessionIDs(ss []gateway.SessionStatus) []string {
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

// wantMakeBeforeBreak checks in the logs that the agent replaced each old
// session ("replacing the session the gateway drains", logged once the
// replacement is up and before the old session is let go) before the
// gateway saw the old session end.
func (tr *trustRig) wantMakeBeforeBreak(old []string) {
	tr.t.Helper()
	entries := tr.logs.All()
	moved := 0
	for _, from := range old {
		replaced, ended := -1, -1
		for i, e := range entries {
			switch {
			case e.Message == "replacing the session the gateway drains" && e.ContextMap()["old_session"] == from:
				replaced = i
				moved++
			case e.Message == "agent session ended" && e.ContextMap()["session"] == from && ended < 0:
				ended = i
			}
		}
		if replaced < 0 || ended >= 0 && ended < replaced {
			tr.t.Fatalf("session %s: replaced at log entry %d, ended at %d; want a replacement before the end", from, replaced, ended)
		}
	}
	if n := tr.logs.FilterMessage("replacing the session the gateway drains").Len(); n != moved || n != len(old) {
		tr.t.Fatalf("%d replacements logged, want one per drained session (%d)", n, len(old))
	}
}

// TestGatewayDrainMovesSessions: on every transport, when the gateway
// sends an agent's sessions a Drain, each slot opens a new session before
// it lets the old one go; an exchange in flight on an old session finishes
// there intact, and requests sent all along succeed (never 503
// no-connector). Without the fix the agent only logs the Drain and no
// session is replaced.
func TestGatewayDrainMovesSessions(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			tr, slow := newSlowTrustRig(t, nil)
			a := tr.StartAgent(func(c *agent.Config) {
				c.Connections, c.Transport, c.RollPause, c.Clock = 2, transport, 100*time.Millisecond, tr.clock
			})
			waitFor(t, "the agent's two sessions", func() bool { return len(a.A.Sessions()) == 2 })
			id := a.A.Certificate().ConnectorID
			old := sessionIDs(tr.connectorSessions(id))
			c := tr.Client()
			got := startSlowExchange(t, c, tr.URL, slow)
			stop := keepAsking(t, tr.Client(), tr.URL)

			// What the gateway's shutdown does to each session, without
			// stopping: the agent hears that the gateway will end it.
			for _, s := range tr.G.Registry().Connector(id) {
				if err := s.(interface{ SendDrain(string) error }).SendDrain("test: this replica goes away"); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "two new sessions, with the exchange still on its old one", func() bool {
				fresh, busy := 0, 0
				for _, s := range tr.connectorSessions(id) {
					switch {
					case !slices.Contains(old, s.ID) && !s.Draining:
						fresh++
					case slices.Contains(old, s.ID) && s.InFlight == 1:
						busy++
					}
				}
				return fresh == 2 && busy == 1
			})
			close(slow.release)
			wantSlowResult(t, got)
			waitFor(t, "the old sessions to end", func() bool {
				for _, s := range tr.connectorSessions(id) {
					if slices.Contains(old, s.ID) {
						return false
					}
				}
				return true
			})
			n, failures := stop()
			if len(failures) > 0 || n == 0 {
				t.Fatalf("%d of %d requests failed during the move: %v", len(failures), n, failures)
			}
			tr.wantMakeBeforeBreak(old)
			if lost := lostSessions(tr.logs); lost != 0 {
				t.Fatalf("the agent lost %d sessions", lost)
			}
		})
	}
}

// TestGatewayShutdownMovesSessionsToReplica: on every transport, two
// gateways share one store behind a load balancer. Gateway A shuts down
// gracefully, with no exchange in flight to hold it up (the balancer
// already sends new connections to B): the agent opens its sessions on B
// before it lets those on A go, A waits for that (AgentMoveWait) instead
// of closing them under the agent, and B serves the group at once. Without
// the fix A closes the agent's sessions and the agent finds B only by
// reconnecting after the loss.
func TestGatewayShutdownMovesSessionsToReplica(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel() // each its own replicas and store; waits on the agent's roll
			tr := newTrustRig(t, func(c *gateway.Config) { c.AgentMoveWait = 5 * time.Second })
			b := tr.startReplica(nil)
			lb := startBalancer(t, transport, tr.Tunnel)
			a := tr.StartAgent(func(c *agent.Config) {
				c.Gateway, c.Connections, c.Transport, c.RollPause, c.Clock = lb.Addr(), 2, transport, 100*time.Millisecond, tr.clock
			})
			waitFor(t, "the agent's two sessions", func() bool { return len(a.A.Sessions()) == 2 })
			old := sessionIDs(tr.connectorSessions(a.A.Certificate().ConnectorID))

			if err := lb.Retarget(b.Tunnel); err != nil { // the balancer saw A's readiness fail
				t.Fatal(err)
			}
			stopped := stopGatewayAsync(t, tr.Rig)
			waitFor(t, "the agent's two sessions on B", func() bool { return b.G.Registry().Count(testrig.Group) == 2 })
			stopped()
			tr.wantMakeBeforeBreak(old)
			for _, msg := range []string{"lost the gateway session; reconnecting", drainedClosedLine, "closing the agent sessions not moved elsewhere"} {
				if n := tr.logs.FilterMessage(msg).Len(); n != 0 {
					t.Fatalf("%q logged %d times: A closed sessions the agent had not replaced", msg, n)
				}
			}
			for i := range 5 {
				if code, body, err := get(t, b.Client(), b.URL, "app.test", "/"); err != nil || code != 200 {
					t.Fatalf("request %d through B: %d %q %v", i, code, body, err)
				}
			}
		})
	}
}

// startReplica starts a second gateway on tr's store, with tr's tunnel
// certificate and clock, serving app.test from a backend of its own: a
// replica of tr's gateway. edit, when not nil, edits its config.
func (tr *trustRig) startReplica(edit func(*gateway.Config)) *testrig.Rig {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "private")
	}))
	tr.t.Cleanup(backend.Close)
	return testrig.New(tr.t, testrig.Options{
		Log:    tr.Log.Named("replica-b"),
		Routes: []gateway.Route{{App: "app", Hosts: []string{"app.test"}, Backend: testrig.MustURL(tr.t, backend.URL)}},
		Gateway: func(c *gateway.Config) {
			c.Store, c.Now, c.TunnelTLS = tr.store, tr.clock.Now, tr.TunnelTLS()
			if edit != nil {
				edit(c)
			}
		},
	})
}

// stopGatewayAsync starts stopping r's gateway and returns a function
// that waits for the stop to end, failing the test on an error.
func stopGatewayAsync(t *testing.T, r *testrig.Rig) (wait func()) {
	done := make(chan error, 1)
	go func() { done <- r.StopGateway() }()
	return func() {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("gateway: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the gateway did not stop within 10s")
		}
	}
}

// TestLoneGatewayRestartKeepsDrainedSession: on every transport, a lone
// gateway shuts down while an exchange runs: it refuses the agent's
// replacement session ("shutting down"), so the agent keeps the drained
// session, which finishes the exchange, and retries with its backoff, one
// log line a try with the delay; once the gateway closes the session the
// agent reconnects as after any loss, and finds the restarted gateway.
// Without the fix no replacement is tried; with one that let the drained
// session go when the replacement failed, the exchange would break.
func TestLoneGatewayRestartKeepsDrainedSession(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			tr, slow := newSlowTrustRig(t, func(c *gateway.Config) { c.AgentMoveWait = time.Second })
			backoff := agent.Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}
			a := tr.StartAgent(func(c *agent.Config) {
				c.Connections, c.Transport, c.RollPause, c.Clock, c.Backoff = 1, transport, 10*time.Millisecond, tr.clock, backoff
			})
			waitFor(t, "the agent's session", func() bool { return len(a.A.Sessions()) == 1 })
			old := a.A.Sessions()
			got := startSlowExchange(t, tr.Client(), tr.URL, slow)

			stopped := stopGatewayAsync(t, tr.Rig)
			const failed = "cannot open a replacement for the session the gateway drains; it keeps serving until the gateway closes it"
			waitFor(t, "two refused replacements", func() bool { return tr.logs.FilterMessage(failed).Len() >= 2 })
			if now := a.A.Sessions(); !slices.Equal(now, old) {
				t.Fatalf("the agent's sessions went from %v to %v while no replacement could be opened", old, now)
			}
			close(slow.release)
			wantSlowResult(t, got)
			stopped()
			waitFor(t, "the agent to see its session closed", func() bool {
				return tr.logs.FilterMessage(drainedClosedLine).Len() == 1
			})
			// An announced close is no loss: the agent says so at info,
			// without the transport's words for it (it used to warn "lost
			// the gateway session" with `Application error 0x0 (remote)`).
			if lost := tr.logs.FilterMessage("lost the gateway session; reconnecting").All(); len(lost) != 0 {
				t.Fatalf("the close of the drained session was logged as a lost session: %v", lost[0].ContextMap())
			}
			if e := tr.logs.FilterMessage(drainedClosedLine).All()[0]; e.Level != zapcore.InfoLevel {
				t.Fatalf("%q logged at %s, want info", drainedClosedLine, e.Level)
			}
			tries := tr.logs.FilterMessage(failed).All()
			for i, e := range tries {
				if d, ok := e.ContextMap()["retry_in"].(time.Duration); !ok || d < backoff.Min/2 {
					t.Fatalf("try %d logged retry_in %v, want the backoff", i, e.ContextMap()["retry_in"])
				}
				// The first tries meet the refusal; later ones may meet
				// the listener closing.
				if i < 2 && !contains(e.ContextMap()["error"].(string), tunnel.ErrShuttingDown.Error()) {
					t.Fatalf("try %d failed with %q, want the gateway's refusal", i, e.ContextMap()["error"])
				}
				if i > 0 {
					if gap := e.Time.Sub(tries[i-1].Time); gap < backoff.Min/2 {
						t.Fatalf("tries %d and %d %v apart, want the backoff (at least %v)", i-1, i, gap, backoff.Min/2)
					}
				}
			}
			tr.StartGateway(nil)
			tr.WaitSessions(testrig.Group, 1)
			if code := tr.get(); code != 200 {
				t.Fatalf("GET after the restart = %d", code)
			}
		})
	}
}

// TestLoneReplicaSkipsAgentMoveWait: a gateway on a store that counts
// replicas (here SQLite; PostgreSQL in production) shuts down while no
// other replica is alive: its agents have nowhere to move, so it closes
// their sessions once the exchanges are over instead of waiting
// AgentMoveWait (here a minute, cut to the rig's 5 s shutdown grace) with
// its public listener closed. Without the count at shutdown the stop waits
// those 5 s and says nothing of a lone replica.
func TestLoneReplicaSkipsAgentMoveWait(t *testing.T) {
	tr := newTrustRig(t, func(c *gateway.Config) { c.AgentMoveWait = time.Minute })
	a := tr.StartAgent(func(c *agent.Config) { c.Connections, c.Clock = 2, tr.clock })
	waitFor(t, "the agent's two sessions", func() bool { return len(a.A.Sessions()) == 2 })
	if tr.G.Replicas() != 1 {
		t.Fatalf("the store counts %d replicas, want 1", tr.G.Replicas())
	}
	stopGatewayAsync(t, tr.Rig)()
	for msg, want := range map[string]int{
		"no other gateway replica is alive on the store, so the agents have nowhere to move their sessions: closing them without the agent move wait": 1,
		"closing the agent sessions not moved elsewhere": 1,
	} {
		if n := tr.logs.FilterMessage(msg).Len(); n != want {
			t.Fatalf("%q logged %d times, want %d", msg, n, want)
		}
	}
}

// TestDrainedAgainAtOnceBacksOff: on every transport, a replacement that
// the gateway drains again as soon as it opens (here: every session of a
// certificate that expires within the gateway's drain lead; likewise a
// gateway that shuts down and still takes sessions) makes the slot move
// again only after its reconnect backoff, growing with each such drain,
// never in a tight loop. Without the bound the slot moves again within
// RollPause, over and over.
func TestDrainedAgainAtOnceBacksOff(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel() // each its own rig, store and clocks; waits on the agent's backoff
			tr := newTimedTrustRig(t, nil)
			backoff := agent.Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}
			// The agent's clock stays at the enrollment: it sees no reason
			// to renew, while the gateway's moves to the last minute of
			// the certificate.
			a := tr.StartAgent(func(c *agent.Config) {
				c.DataDir, c.Clock = t.TempDir(), clock.NewFake(tr.clock.Now())
				c.Connections, c.Transport, c.RollPause, c.Backoff = 1, transport, 10*time.Millisecond, backoff
			})
			tr.WaitSessions(testrig.Group, 1)
			tr.clock.Advance(a.A.Certificate().Expires().Sub(tr.clock.Now()) - 30*time.Second)

			const moved = "replacing the session the gateway drains"
			waitFor(t, "four moves", func() bool { return tr.logs.FilterMessage(moved).Len() >= 4 })
			moves := tr.logs.FilterMessage(moved).All()
			// The first drain of a slot waits a part of RollPause; each
			// replacement drained at once waits the next backoff step.
			for i, least := range []time.Duration{backoff.Min / 2, backoff.Min, 2 * backoff.Min} {
				if gap := moves[i+1].Time.Sub(moves[i].Time); gap < least {
					t.Fatalf("moves %d and %d %v apart, want at least %v", i, i+1, gap, least)
				}
			}
		})
	}
}
