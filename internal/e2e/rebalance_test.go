package e2e

import (
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// rebalanceLine is the line a replica logs at a sweep that asked agents to
// move sessions away.
const rebalanceLine = "asked agents to move sessions to the other gateway replicas: they held more than their share here"

// TestReplicaJoiningLaterGetsSessions: on every transport, the second half
// of a rolling restart. Gateway A runs alone and holds both sessions of an
// agent with two connections; then gateway B starts on the same store and
// the load balancer alternates, B first. At its next store sweep A, which
// holds more than ceil(2 / 2) of the agent's sessions, drains one; the
// agent replaces it make-before-break: the first replacement lands back on
// A and is let go while the drained session keeps serving, the next one
// lands on B. Within a bounded wait the
// agent holds one session on each replica, users get answers through B
// (never 503 no-connector), the exchanges in flight on A's sessions (one
// on each, so one on the moved session) finish intact, and later sweeps
// move nothing more. Without the rebalancing both sessions stay on A and
// B answers 503; without placing the replacement before the break, the
// slot gives the drained session up when its replacement lands on A.
func TestReplicaJoiningLaterGetsSessions(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel() // each its own replicas and store; waits on store sweeps
			tr, slow := newSlowTrustRig(t, func(c *gateway.Config) { c.StoreSweep = spreadSweep })
			lb := startBalancer(t, transport, tr.Tunnel) // every connection to A
			tr.startBalancedAgent(lb, transport, func(c *agent.Config) { c.RollPause = 100 * time.Millisecond })
			waitFor(t, "both sessions of the agent on A", func() bool { return tr.G.Registry().Count(testrig.Group) == 2 })
			// One exchange in flight on each of A's sessions: the registry
			// picks the less loaded of the two.
			first := startSlowExchange(t, tr.Client(), tr.URL, slow)
			second := startSlowExchange(t, tr.Client(), tr.URL, slow)
			for _, s := range tr.G.Registry().Sessions() {
				if s.InFlight != 1 {
					t.Fatalf("session %s carries %d exchanges, want 1 each", s.ID, s.InFlight)
				}
			}

			b := tr.startReplica(func(c *gateway.Config) { c.StoreSweep = spreadSweep })
			// A, B, A, …: the first replacement lands back on A, the agent
			// lets it go and dials again while the drained session serves.
			lb.SetPick(firstThenAlternate(1, tr.Tunnel, b.Tunnel))
			t.Cleanup(func() {
				if t.Failed() {
					for _, e := range tr.logs.All() {
						t.Logf("log: %s %s %v", e.LoggerName, e.Message, e.ContextMap())
					}
				}
			})
			waitFor(t, "one session of the agent on each replica", func() bool {
				return tr.G.Registry().Count(testrig.Group) == 1 && b.G.Registry().Count(testrig.Group) == 1
			})
			tr.waitLog(rebalanceLine)
			// Make-before-break through the placement: the session on B
			// replaced the drained one directly, after the try that landed
			// on A, not after the slot gave the drained session up.
			onB := b.G.Registry().Sessions()
			if len(onB) != 1 {
				t.Fatalf("%d sessions on B", len(onB))
			}
			waitFor(t, "B's session to replace the drained session", func() bool {
				for _, e := range tr.logs.FilterMessage("replacing the session the gateway drains").All() {
					if e.ContextMap()["session"] == onB[0].ID {
						return true
					}
				}
				return false
			})
			for i := range 3 {
				if code, body, err := get(t, b.Client(), b.URL, "app.test", "/"); err != nil || code != 200 {
					t.Fatalf("request %d through B: %d %q %v", i, code, body, err)
				}
			}
			close(slow.release)
			wantSlowResult(t, first)
			wantSlowResult(t, second)
			if n := lostSessions(tr.logs); n != 0 {
				t.Fatalf("the agent lost %d sessions", n)
			}
			// No churn: the sessions are as spread as they can be.
			time.Sleep(3 * spreadSweep)
			if n := tr.logs.FilterMessage(rebalanceLine).Len(); n != 1 {
				t.Fatalf("%d sweeps asked the agent to move sessions, want 1", n)
			}
			if tr.G.Registry().Count(testrig.Group) != 1 || b.G.Registry().Count(testrig.Group) != 1 {
				t.Fatalf("after more sweeps: %d sessions on A, %d on B, want 1 and 1",
					tr.G.Registry().Count(testrig.Group), b.G.Registry().Count(testrig.Group))
			}
		})
	}
}
