package muxtunnel_test

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
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
		{"moving to the agent's renewed certificate", "moving to the agent's renewed certificate",
			"drained by the agent (moving to the agent's renewed certificate)"},
		{strings.Repeat("é", 150), strings.Repeat("é", 150), "drained by the agent (" + strings.Repeat("é", 100) + "…)"},
	} {
		core, logs := observer.New(zap.InfoLevel)
		p := newPair(t, func(s *muxtunnel.Server) { s.Log = zap.New(core) })
		cs, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
		if err != nil {
			t.Fatal(err)
		}
		session(t, p)
		if c.set != "" {
			cs.SetDrainReason(c.set)
		}
		drain := make(chan struct{})
		close(drain)
		if err := cs.Serve(context.Background(), &tunnel.Server{}, drain); err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if err := p.served1(t); err != nil {
			t.Fatalf("ServeConn: %v", err)
		}
		e := logs.FilterMessage("agent session ended").All()
		if len(e) != 1 || e[0].ContextMap()["reason"] != c.wantEnd {
			t.Errorf("set %.20q: session-ended lines %v, want one with reason %.40q", c.set, e, c.wantEnd)
		}
		d := logs.FilterMessage("agent is draining").All()
		if len(d) != 1 || d[0].ContextMap()["reason"] != c.wantDrain {
			t.Errorf("set %.20q: draining lines %v, want one with reason %.40q", c.set, d, c.wantDrain)
		}
	}
}
