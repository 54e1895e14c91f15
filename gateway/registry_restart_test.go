package gateway

import (
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// addProcessSession registers in r a session id of group g from the
// connector's agent process agentID ("" for an older agent).
func addProcessSession(t *testing.T, r *Registry, id, connector, agentID string) *fakeSession {
	t.Helper()
	s := newFakeSession(id, "g")
	s.info.ConnectorID, s.info.AgentID = connector, agentID
	if _, ok := r.Add(s); !ok {
		t.Fatalf("%s refused", id)
	}
	return s
}

// TestRegistryRestartedAgentSupersedesItsSessions: once a session of a
// connector arrives from a new agent process (another agent id), the
// sessions of its previous process are not picked any more, though they
// stay registered for the exchanges already on them. A process that died
// without a word (kill -9 over QUIC, where no RST tells the gateway) left
// them pickable until their idle timeout, 30 s: in a soak, 13 to 22
// exchanges per restart hung there into 504 backend-timeout. Other
// connectors, more sessions of the same process, and older agents that
// send no agent id are left alone.
func TestRegistryRestartedAgentSupersedesItsSessions(t *testing.T) {
	r := NewRegistry()
	session := func(id, connector, agentID string) *fakeSession {
		return addProcessSession(t, r, id, connector, agentID)
	}
	dead1, dead2 := session("dead1", "c1", "process-1"), session("dead2", "c1", "process-1")
	session("other", "c2", "process-9")
	session("legacy", "c3", "")
	if n := r.Count("g"); n != 4 {
		t.Fatalf("Count = %d before the restart, want 4: sessions of one process must not supersede each other", n)
	}
	session("legacy-2", "c3", "") // no agent id: nothing to tell apart
	session("restarted", "c1", "process-2")

	if n := r.Count("g"); n != 4 {
		t.Fatalf("Count = %d after the restart, want 4 (restarted, other, legacy, legacy-2): "+
			"the previous process's sessions are still counted", n)
	}
	for range 200 {
		p := mustPick(t, r, "g", nil)
		if p.Session == dead1 || p.Session == dead2 {
			t.Fatalf("picked %s, a session of the connector's previous process", p.Session)
		}
		p.Done()
	}
	if len(r.entries("g")) != 6 {
		t.Fatalf("%d sessions registered, want all 6: the previous process's stay for their exchanges", len(r.entries("g")))
	}
	draining := map[string]bool{}
	for _, st := range r.Sessions() {
		draining[st.ID] = st.Draining
	}
	want := map[string]bool{"dead1": true, "dead2": true, "other": false, "legacy": false, "legacy-2": false, "restarted": false}
	for id, d := range want {
		if draining[id] != d {
			t.Errorf("session %s: Draining = %v, want %v", id, draining[id], d)
		}
	}
}

// TestRegistrySupersededSessionsLastResort: a superseded session that is
// otherwise fine is still picked when nothing else of the group can be:
// the later process may have ended in turn while the earlier one, still
// connected, runs from a copy of its data_dir; a group must not answer
// no-connector while a live session could serve it. (Once the later
// process's sessions have ended, the earlier one's serve as before, see
// TestRegistryEarlierProcessServesAgainAfterLaterLeft.)
func TestRegistrySupersededSessionsLastResort(t *testing.T) {
	r := NewRegistry()
	earlier := addProcessSession(t, r, "earlier", "c1", "process-1")
	later := addProcessSession(t, r, "later", "c1", "process-2")
	if p := mustPick(t, r, "g", nil); p.Session != later {
		t.Fatalf("picked %s while the later process's session is up", p.Session)
	} else {
		p.Done()
	}
	later.Close(nil)
	p := mustPick(t, r, "g", nil)
	if p.Session != earlier {
		t.Fatalf("picked %s, want the superseded session once the later process's ended", p.Session)
	}
	p.Done()
	earlier.drain()
	if p, err := r.Pick("g", nil); err == nil {
		t.Fatalf("picked %s, a superseded session that drains", p.Session)
	}
}

// TestRegistrySupersededHonoursAvoid: the last-resort pick of superseded
// sessions keeps PickAvoiding's promise (a retry after a broken exchange
// must not go back to the agent that broke it, a reviewer's probe), and
// takes the excluded session when it is the only one, as the usual pick
// does (it answered no-connector).
func TestRegistrySupersededHonoursAvoid(t *testing.T) {
	r := NewRegistry()
	add := func(id, agentID string) *fakeSession { return addProcessSession(t, r, id, "c1", agentID) }
	a1, a2 := add("a1", "process-1"), add("a2", "process-1")
	later := add("later", "process-2") // supersedes a1 and a2
	later.Close(nil)
	if p, err := r.PickAvoiding("g", a1, []string{balanceKey(a1.info)}); err == nil {
		t.Fatalf("PickAvoiding took %s, a session of the avoided agent", p.Session)
	}
	a2.Close(nil)
	p, err := r.Pick("g", a1)
	if err != nil {
		t.Fatalf("Pick excluding the only session left: %v; want that session, as for sessions not superseded", err)
	}
	if p.Session != a1 {
		t.Fatalf("picked %s, want a1", p.Session)
	}
	p.Done()
}

// TestAgentsGaugeSkipsSupersededProcess: sallyport_gateway_agents counted
// a restarted agent twice (its previous process's sessions, superseded,
// stay registered until they time out: 30 s on QUIC), which a "two agents
// per group" alert would take for a second agent (a reviewer's note).
func TestAgentsGaugeSkipsSupersededProcess(t *testing.T) {
	router, err := NewRouter([]Route{{App: "a", Hosts: []string{"app.test"}, Group: "g",
		Backend: &url.URL{Scheme: "http", Host: "backend:80"}}})
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{registry: NewRegistry(), log: zap.NewNop()}
	g.router.Store(router)
	for _, a := range []string{"process-1", "process-2"} { // one agent, restarted
		addProcessSession(t, g.registry, "s-"+a, "c1", a)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&sessionCollector{g: g})
	want := "# HELP sallyport_gateway_agents " + agentsHelp(t, reg) + "\n# TYPE sallyport_gateway_agents gauge\nsallyport_gateway_agents{group=\"g\"} 1\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sallyport_gateway_agents"); err != nil {
		t.Fatal(err)
	}
}

// agentsHelp is the help text of sallyport_gateway_agents in reg.
func agentsHelp(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sallyport_gateway_agents" {
			return mf.GetHelp()
		}
	}
	t.Fatal("no sallyport_gateway_agents")
	return ""
}

// TestRegistrySupersededBeforeExcluded: when the only current session is
// the one a retry excludes (its exchange just broke), a live superseded
// session is taken before going back to it (a reviewer's note).
func TestRegistrySupersededBeforeExcluded(t *testing.T) {
	r := NewRegistry()
	old := addProcessSession(t, r, "old", "c1", "process-1")
	cur := addProcessSession(t, r, "cur", "c1", "process-2")
	p := mustPick(t, r, "g", cur)
	if p.Session != old {
		t.Fatalf("picked %s excluding cur, want the superseded session old before going back to cur", p.Session)
	}
	p.Done()
}
