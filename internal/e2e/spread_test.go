package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// spreadSweep is the store sweep of the replicas in the spread test: each
// counts the other within a few of them, and keeps counting it on a busy
// machine (a heartbeat counts for three sweeps, 1.5 s).
const spreadSweep = 500 * time.Millisecond

// firstThenAlternate is the worst load balancer for an agent's sessions:
// its first k connections go to a, then b, a, b, ….
func firstThenAlternate(k int, a, b string) func() string {
	n := 0
	return func() string { // called under the relay's lock
		n++
		if n <= k || (n-k)%2 == 0 {
			return a
		}
		return b
	}
}

// TestAgentSpreadsSessionsOverReplicas: on every transport, two gateways
// share one store behind a load balancer that sends the first three
// connections to A. An agent with two connections ends with one session on
// each replica, and users get answers through both (never 503
// no-connector), because each Welcome says which replica it is and that
// there are two: the slot whose session shares A dials again. Without the
// fix both sessions stay on A and B answers 503.
func TestAgentSpreadsSessionsOverReplicas(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel() // each its own replicas and store; waits on store sweeps
			tr := newTrustRig(t, func(c *gateway.Config) { c.StoreSweep = spreadSweep })
			b := tr.startReplica(func(c *gateway.Config) { c.StoreSweep = spreadSweep })
			waitFor(t, "both replicas to count two", func() bool { return tr.G.Replicas() == 2 && b.G.Replicas() == 2 })
			if tr.G.Replica() == b.G.Replica() || tr.G.Replica() == "" {
				t.Fatalf("replica ids %q and %q, want two different ones", tr.G.Replica(), b.G.Replica())
			}
			lb := startBalancer(t, transport, tr.Tunnel)
			lb.SetPick(firstThenAlternate(3, tr.Tunnel, b.Tunnel))
			tr.startBalancedAgent(lb, transport, nil)
			waitFor(t, "one session of the agent on each replica", func() bool {
				return tr.G.Registry().Count(testrig.Group) == 1 && b.G.Registry().Count(testrig.Group) == 1
			})
			tr.waitLog("the agent's sessions cover every gateway replica")
			for _, r := range []*testrig.Rig{tr.Rig, b} {
				for i := range 3 {
					if code, body, err := get(t, r.Client(), r.URL, "app.test", "/"); err != nil || code != 200 {
						t.Fatalf("request %d through %s: %d %q %v", i, r.URL, code, body, err)
					}
				}
			}
			if n := lostSessions(tr.logs); n != 0 {
				t.Fatalf("the agent lost %d sessions", n)
			}
		})
	}
}

// startBalancedAgent enrolls an agent directly with A and starts it with
// two connections through the load balancer lb on transport; edit may
// change its config more.
func (tr *trustRig) startBalancedAgent(lb balancer, transport string, edit func(*agent.Config)) {
	tr.t.Helper()
	creds, err := agent.Enroll(context.Background(), agent.EnrollConfig{
		Gateway: tr.Tunnel, TLS: tr.tunnelTLS(), Token: testrig.Token,
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.StartAgent(func(c *agent.Config) {
		c.Gateway, c.Connections, c.Transport, c.Clock = lb.Addr(), 2, transport, tr.clock
		c.Token, c.Credentials = "", creds
		if edit != nil {
			edit(c)
		}
	})
}
