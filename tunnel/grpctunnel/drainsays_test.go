package grpctunnel_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestAgentDrainSaysWhy: an agent that drains a session it moves (to
// another gateway replica, to its renewed certificate) tells the gateway
// so, and the gateway's log says it, in "agent is draining" and in the
// session's end. Every drain said "agent shutting down" and every such
// end "drained by the agent (it is stopping)" (docwalk3 B10). A drain
// without a reason set, and an older agent's, still read as the agent
// stopping.
func TestAgentDrainSaysWhy(t *testing.T) {
	for _, c := range []struct {
		set, wantDrain, wantEnd string
	}{
		{"", "agent shutting down", "drained by the agent (it is stopping)"},
		{"moving to another gateway replica", "moving to another gateway replica",
			"drained by the agent (moving to another gateway replica)"},
		{strings.Repeat("x", 300), strings.Repeat("x", 300), "drained by the agent (" + strings.Repeat("x", 200) + "…)"},
	} {
		ts := startServer(t, nil)
		cs, err := ts.dial(goodToken, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if c.set != "" {
			cs.SetDrainReason(c.set)
		}
		a := ts.serveAgent(cs, http.DefaultTransport)
		ts.session()
		close(a.drain)
		if err := a.wait(t); err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if r := endReason(t, ts); r != c.wantEnd {
			t.Errorf("set %.20q: session ended %q, want %q", c.set, r, c.wantEnd)
		}
		d := ts.logs.FilterMessage("agent is draining").All()
		if len(d) != 1 || d[0].ContextMap()["reason"] != c.wantDrain {
			t.Errorf("set %.20q: draining lines %v, want one with reason %.40q", c.set, d, c.wantDrain)
		}
	}
}
