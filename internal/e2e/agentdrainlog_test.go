package e2e

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestAgentDrainSaysWhatItWaitsFor: a stopping agent (SIGTERM) says how
// many exchanges it waits for and for how long, and, when its drain grace
// passes with exchanges still running, that it cut them. Before the fix it
// waited up to 30 s without a word between "stopping" and "session
// drained", and cut long exchanges (a WebSocket, a long poll) silently.
func TestAgentDrainSaysWhatItWaitsFor(t *testing.T) {
	slow := startSlowBackend(t)
	defer close(slow.release) // after the agent cut it: the backend's handler returns
	rig := testrig.New(t, testrig.Options{
		Routes: []gateway.Route{{App: "slow", Hosts: []string{"slow.test"}, Backend: testrig.MustURL(t, slow.URL)}},
	})
	core, logs := observer.New(zap.InfoLevel)
	const grace = 300 * time.Millisecond
	a := rig.StartAgent(func(c *agent.Config) {
		c.DrainGrace = grace
		c.Log = zap.New(core)
	})
	got := startSlowExchange(t, rig.Client(), rig.URL, slow)
	a.Stop() // returns once the grace has passed and the exchange was cut
	<-got    // the client saw the exchange end (cut: a truncated body)

	draining := logs.FilterMessage("draining: waiting for 1 exchanges in flight (at most 300ms; a second signal stops at once)").All()
	if len(draining) != 1 {
		t.Errorf("%d drain lines naming the exchange in flight, want 1; agent logs:\n%v", len(draining), agentLogLines(logs))
	}
	cut := logs.FilterMessage("cut 1 exchanges still running after 300ms").All()
	if len(cut) != 1 || cut[0].Level != zap.WarnLevel {
		t.Errorf("lines about the cut exchange: %v, want one warning; agent logs:\n%v", cut, agentLogLines(logs))
	}
}

func agentLogLines(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, e.Level.String()+" "+e.Message)
	}
	return out
}

// drainedClosedLine is the agent's line for a session the gateway closed
// after it had announced the end (Drain), before the agent replaced it.
const drainedClosedLine = "the gateway closed the session it drained; reconnecting"

// lostSessions counts the sessions the agent saw end while it ran: lost
// without notice, or closed by the gateway after a Drain before the agent
// could replace them.
func lostSessions(logs *observer.ObservedLogs) int {
	return logs.FilterMessage("lost the gateway session; reconnecting").Len() + logs.FilterMessage(drainedClosedLine).Len()
}
