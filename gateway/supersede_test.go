package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/internal/store"
)

// A connector run a second time next to its running agent (a copy of its
// data_dir, or the same one started twice), then stopped: the second
// process set the first one's sessions aside for good, and they got no new
// exchanges, the agents gauge and the redundancy warnings counted the
// group without them ("single agent", then "no agents" while they served
// as the last resort), until the first process was restarted (a new-user
// walk: 0 of 60 GETs to it, agents 1, `connector list` said ok). Once the
// later process's sessions have all ended or drain, the earlier process's
// live sessions serve again as full members of the group.

// supersedeAgents registers in r agent a (connector ca, one session) and
// agent b (connector cb, process "b-1", two sessions), then a second
// process of b's connector ("b-2", two sessions).
// Their names: vm, agent-two, agent-two-again.
func supersedeAgents(t *testing.T, r *Registry) (a *fakeSession, b, b2 []*fakeSession) {
	t.Helper()
	start := time.Unix(1_700_000_000, 0)
	add := func(id, connector, agentID, name string) *fakeSession {
		s := newFakeSession(id, "g")
		s.info.ConnectorID, s.info.AgentID, s.info.AgentName = connector, agentID, name
		start = start.Add(time.Second) // in the order they connect
		s.info.Started = start
		if _, ok := r.Add(s); !ok {
			t.Fatalf("%s refused", id)
		}
		return s
	}
	a = add("a", "ca", "a-1", "vm")
	b = []*fakeSession{add("b1", "cb", "b-1", "agent-two"), add("b2", "cb", "b-1", "agent-two")}
	b2 = []*fakeSession{add("b'1", "cb", "b-2", "agent-two-again"), add("b'2", "cb", "b-2", "agent-two-again")}
	return a, b, b2
}

// picksBy counts n picks of group "g" by agent id.
func picksBy(t *testing.T, r *Registry, n int) map[string]int {
	t.Helper()
	by := map[string]int{}
	for range n {
		p := mustPick(t, r, "g", nil)
		by[p.Session.Info().AgentID]++
		p.Done()
	}
	return by
}

// TestRegistryEarlierProcessServesAgainAfterLaterLeft: the walk on the
// registry, the later process leaving by ending its sessions (stopped,
// killed with a TCP RST, closed by the keepalive) or by draining them.
func TestRegistryEarlierProcessServesAgainAfterLaterLeft(t *testing.T) {
	for _, leave := range []string{"ended", "draining"} {
		t.Run(leave, func(t *testing.T) {
			r := NewRegistry()
			_, b, b2 := supersedeAgents(t, r)
			if by := picksBy(t, r, 100); by["b-1"] != 0 || by["b-2"] == 0 {
				t.Fatalf("picks while both processes of b's connector are connected: %v; want b-2's, none of b-1's", by)
			}
			for _, s := range b2 {
				if leave == "ended" {
					s.Close(nil)
				} else {
					s.drain()
				}
			}
			// Count and Sessions are how the gateway looks (the redundancy
			// watch, the gauge, `connector list`).
			if n := r.Count("g"); n != 3 {
				t.Fatalf("Count = %d after the later process of b's connector left (%s), want 3 (a, and b-1's two live sessions)", n, leave)
			}
			for _, st := range r.Sessions() {
				if st.AgentID == "b-1" && (st.Superseded || st.Draining) {
					t.Errorf("session %s of the earlier process: Superseded %v, Draining %v after the later one left; want neither",
						st.ID, st.Superseded, st.Draining)
				}
			}
			by := picksBy(t, r, 200)
			if by["b-1"] < 40 || by["a-1"] < 40 {
				t.Fatalf("200 picks after the later process left: %v; want about half each for a-1 and b-1 (its sessions %s, %s are live)",
					by, b[0], b[1])
			}
		})
	}
}

// TestRegistryEarlierProcessBackOnPickAlone: without a look by Count or
// Sessions, the pick that finds the later process's sessions ended brings
// the earlier one's back (it drops ended sessions, see purgeDone).
func TestRegistryEarlierProcessBackOnPickAlone(t *testing.T) {
	r := NewRegistry()
	_, _, b2 := supersedeAgents(t, r)
	for _, s := range b2 {
		s.Close(nil)
	}
	if by := picksBy(t, r, 200); by["b-1"] < 40 {
		t.Fatalf("200 picks after the later process's sessions ended: %v; want about half for b-1", by)
	}
}

// TestRegistryRestartSetsDeadProcessAside: the case supersede is for. b's
// first process died without a word (its sessions stay registered until
// their idle timeout) and was restarted: while the new process is
// connected, only a and the new process are picked and counted, also
// when the new process reconnects sessions; b-1's sessions, once ended,
// never come back.
func TestRegistryRestartSetsDeadProcessAside(t *testing.T) {
	r := NewRegistry()
	_, b, b2 := supersedeAgents(t, r)
	check := func(when string) {
		t.Helper()
		if by := picksBy(t, r, 200); by["b-1"] != 0 || by["b-2"] == 0 || by["a-1"] == 0 {
			t.Fatalf("200 picks %s: %v; want a-1's and b-2's, none of the dead b-1's", when, by)
		}
		if n := r.Count("g"); n != 1+len(b2) {
			t.Fatalf("Count = %d %s, want %d (a, and the new process's sessions)", n, when, 1+len(b2))
		}
		for _, st := range r.Sessions() {
			if st.AgentID == "b-1" && (!st.Superseded || !st.Draining) {
				t.Errorf("%s: dead process's session %s Superseded %v, Draining %v; want both", when, st.ID, st.Superseded, st.Draining)
			}
		}
	}
	check("after the restart")
	// The new process replaces a session (a reconnect, a rebalancing move).
	b2[0].Close(nil)
	b2 = append(b2[1:], addProcessSession(t, r, "b'3", "cb", "b-2"))
	check("after the new process replaced a session")
	// The dead sessions end (the idle timeout), then the new process stops:
	// nothing of b is left to pick.
	for _, s := range b {
		s.Close(nil)
	}
	for _, s := range b2 {
		s.Close(nil)
	}
	if by := picksBy(t, r, 50); by["a-1"] != 50 {
		t.Fatalf("picks once both processes of b are gone: %v; want all to a-1", by)
	}
	if n := r.Count("g"); n != 1 {
		t.Fatalf("Count = %d once both processes of b are gone, want 1", n)
	}
}

// TestRegistryEarlierProcessReconnectsTakesOver: of two live processes of
// one connector, the one that registered a session last is the one that
// serves, with all its sessions: before, the earlier process's new session
// served while its other sessions stayed set aside for good.
func TestRegistryEarlierProcessReconnectsTakesOver(t *testing.T) {
	r := NewRegistry()
	_, b, _ := supersedeAgents(t, r)
	b = append(b, addProcessSession(t, r, "b3", "cb", "b-1")) // b-1 reconnects one more session
	if n := r.Count("g"); n != 1+len(b) {
		t.Fatalf("Count = %d after b-1 registered again, want %d (a, and all of b-1's sessions)", n, 1+len(b))
	}
	if by := picksBy(t, r, 200); by["b-2"] != 0 || by["b-1"] == 0 {
		t.Fatalf("200 picks after b-1 registered again: %v; want b-1's, none of b-2's", by)
	}
}

// TestSecondProcessLeftGroupCountsBothAgents: the walk on the gateway's
// views: while a second process of b's connector is connected the group
// has two agents (a and that process); once it drained (its sessions may
// take the drain grace to end), the group has a and b again by name, the
// agents gauge says 2, and stopping a leaves b, with no "no agents" error.
func TestSecondProcessLeftGroupCountsBothAgents(t *testing.T) {
	g, logs, _ := redundancyGateway(t)
	defer close(g.stopped)
	a, _, b2 := supersedeAgents(t, g.registry)
	g.groupChanged("g")
	if agents, _ := g.groupAgents("g"); !slices.Equal(agents, []string{"agent-two-again", "vm"}) {
		t.Fatalf("agents while the second process is connected: %v, want [agent-two-again vm]", agents)
	}
	for _, s := range b2 {
		s.drain()
	}
	g.groupChanged("g") // as awaitEnd does when a session drains
	if agents, _ := g.groupAgents("g"); !slices.Equal(agents, []string{"agent-two", "vm"}) {
		t.Fatalf("agents once the second process drains: %v, want [agent-two vm]: the first process's sessions are live", agents)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&sessionCollector{g: g})
	want := "# HELP sallyport_gateway_agents " + agentsHelp(t, reg) + "\n# TYPE sallyport_gateway_agents gauge\nsallyport_gateway_agents{group=\"g\"} 2\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sallyport_gateway_agents"); err != nil {
		t.Fatalf("agents gauge once the second process drains: %v", err)
	}
	for _, s := range b2 {
		s.Close(nil)
	}
	g.groupChanged("g")
	a.Close(nil)
	g.registry.Remove(a)
	g.groupChanged("g")
	if agents, _ := g.groupAgents("g"); !slices.Equal(agents, []string{"agent-two"}) {
		t.Fatalf("agents once vm stopped: %v, want [agent-two]", agents)
	}
	if e := logs.FilterLevelExact(zapcore.ErrorLevel).All(); len(e) > 0 {
		t.Fatalf("logged %q while agent-two's sessions serve the group", e[0].Message)
	}
}

// TestConnectorListSaysSetAside: `connector list` (GET
// /api/v1/connectors) counts the sessions of a connector that a later
// process of it set aside; none once that process has left. Before, the
// walk's agent-two showed "ok, 2 sessions" and nothing told that it got no
// exchanges.
func TestConnectorListSaysSetAside(t *testing.T) {
	g := &Gateway{registry: NewRegistry()}
	_, _, b2 := supersedeAgents(t, g.registry)
	c := store.Connector{ID: "cb", Name: "agent-two", Group: "g"}
	if v := g.connectorView(c, g.registry.Sessions()); v.Sessions != 4 || v.SetAside != 2 {
		t.Fatalf("connector cb with two processes: %d sessions, %d set aside; want 4, 2 (the earlier process's)", v.Sessions, v.SetAside)
	}
	// The later process drains (it stops): its sessions are not set
	// aside for a later one, and the earlier one's serve again.
	for _, s := range b2 {
		s.drain()
	}
	if v := g.connectorView(c, g.registry.Sessions()); v.Sessions != 4 || v.SetAside != 0 {
		t.Fatalf("connector cb while its later process drains: %d sessions, %d set aside; want 4, 0", v.Sessions, v.SetAside)
	}
	for _, s := range b2 {
		s.Close(nil)
	}
	if v := g.connectorView(c, g.registry.Sessions()); v.Sessions != 2 || v.SetAside != 0 {
		t.Fatalf("connector cb once its later process left: %d sessions, %d set aside; want 2, 0", v.Sessions, v.SetAside)
	}
}
