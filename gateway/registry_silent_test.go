package gateway

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// silentFake is a session whose transport tells when its agent stopped
// answering (silentSession), as muxtunnel's QUIC sessions do.
type silentFake struct {
	*fakeSession
	silent atomic.Bool
}

func (s *silentFake) Silent() bool { return s.silent.Load() }

func newSilentFake(id string) *silentFake { return &silentFake{fakeSession: newFakeSession(id, "g")} }

func addSilentFake(t *testing.T, r *Registry, id string) *silentFake {
	t.Helper()
	s := newSilentFake(id)
	if _, ok := r.Add(s); !ok {
		t.Fatalf("%s refused", id)
	}
	return s
}

// TestRegistrySkipsSilentSession: a session whose agent stopped answering
// (its host died, its path was cut without a word) is not picked while
// another agent's session can be, and is picked again once the agent
// answers. Before, the dead agent got its share of new exchanges (with two
// agents, each one while its stuck exchanges were fewer than the healthy
// agent's in flight), and each waited for the keepalive's idle timeout,
// 30 s by default over QUIC.
func TestRegistrySkipsSilentSession(t *testing.T) {
	r := NewRegistry()
	alive, dead := addSilentFake(t, r, "alive"), addSilentFake(t, r, "dead")
	dead.silent.Store(true)
	var held []*Picked
	for i := range 200 {
		p := mustPick(t, r, "g", nil)
		if p.Session != alive {
			t.Fatalf("pick %d (with %d exchanges held on the live agent) took the silent session %s", i, len(held), p.Session)
		}
		held = append(held, p) // the live agent gets busier and busier
	}
	for _, p := range held {
		p.Done()
	}
	if n := r.Count("g"); n != 1 {
		t.Fatalf("Count = %d, want 1: a silent session is not one Pick may choose", n)
	}
	if st := r.Sessions(); len(st) != 2 || st[0].Silent || !st[1].Silent { // sorted by id: alive, dead
		t.Fatalf("Sessions() = %+v, want dead silent and alive not", st)
	}
	dead.silent.Store(false)
	seen := map[string]bool{}
	for range 100 {
		p := mustPick(t, r, "g", nil)
		seen[p.Session.Info().ID] = true
		p.Done()
	}
	if !seen["dead"] {
		t.Fatal("the agent answered again but its session was never picked in 100 picks")
	}
}

// TestRegistrySilentSessionLastResort: a silent session is still picked
// when nothing else can be (its agent may only have been slow to answer,
// and a group with one agent has nothing better), after a superseded one,
// honouring exclude and avoid as the usual pick does.
func TestRegistrySilentSessionLastResort(t *testing.T) {
	r := NewRegistry()
	silent := addSilentFake(t, r, "silent")
	silent.silent.Store(true)
	p, err := r.Pick("g", nil)
	if err != nil || p.Session != silent {
		t.Fatalf("Pick with only a silent session: %v, %v; want the silent session", p, err)
	}
	p.Done()
	if p, err := r.PickAvoiding("g", nil, []string{balanceKey(silent.info)}); err == nil {
		t.Fatalf("PickAvoiding took %s, a session of the avoided agent", p.Session)
	}
	// A superseded session of a live process comes before a silent one.
	earlier := addProcessSession(t, r, "earlier", "c1", "process-1")
	later := addProcessSession(t, r, "later", "c1", "process-2")
	later.Close(nil)
	for i := range 20 {
		p := mustPick(t, r, "g", nil)
		if p.Session != earlier {
			t.Fatalf("pick %d took %s; want the superseded session before the silent one", i, p.Session)
		}
		p.Done()
	}
	// Excluded: the silent session rather than the excluded one.
	p = mustPick(t, r, "g", earlier)
	if p.Session != silent {
		t.Fatalf("Pick excluding the superseded session took %s, want the silent one", p.Session)
	}
	p.Done()
}

// TestRegistryFlappingAgentNotRefused: an agent killed and restarted
// again and again (a crash loop) while its previous processes' sessions
// wait for their idle timeout (QUIC: no RST tells the gateway) is not
// refused for holding too many sessions: the superseded ones are closed to
// make room, the least busy first, and the connector never holds more than
// MaxPerConnector. Before, they counted until they timed out: with 64
// connections and the bound of 256 the fifth process was refused for up to
// 30 s.
func TestRegistryFlappingAgentNotRefused(t *testing.T) {
	r := &Registry{MaxPerConnector: 4}
	var all []*fakeSession
	for proc := range 6 {
		for conn := range 2 {
			s := newFakeSession(fmt.Sprintf("p%d-%d", proc, conn), "g")
			s.info.ConnectorID, s.info.AgentID = "c1", fmt.Sprintf("process-%d", proc)
			s.info.Connections = 2
			if held, ok := r.Add(s); !ok {
				t.Fatalf("process %d's session %d refused with %d held: the superseded sessions of the earlier processes count", proc, conn, held)
			}
			all = append(all, s)
			if proc == 2 && conn == 0 {
				// An exchange still on the first process's second session:
				// the idle one goes first.
				for _, e := range r.entries("g") {
					if e.s == all[1] {
						setInFlight(e, 1)
					}
				}
			}
			live := 0
			for _, s := range all {
				if !isClosed(s.Done()) {
					live++
				}
			}
			if live > 4 {
				t.Fatalf("after process %d's session %d the connector holds %d live sessions, more than 4", proc, conn, live)
			}
		}
	}
	if !isClosed(all[0].Done()) || isClosed(all[1].Done()) && !isClosed(all[2].Done()) {
		t.Fatalf("evicted in the wrong order: p0-0 closed %v, p0-1 (busy) closed %v, p1-0 closed %v",
			isClosed(all[0].Done()), isClosed(all[1].Done()), isClosed(all[2].Done()))
	}
	for _, s := range all[len(all)-2:] {
		if isClosed(s.Done()) {
			t.Fatalf("the current process's session %s was closed", s)
		}
	}
	// More sessions than the process announced are refused at the bound:
	// its third of two.
	extra := newFakeSession("p5-2", "g")
	extra.info.ConnectorID, extra.info.AgentID, extra.info.Connections = "c1", "process-5", 2
	if held, ok := r.Add(extra); ok || held != 4 {
		t.Fatalf("a third session of a process that announced two, at the bound of 4: held %d, ok %v; want refused with 4 held", held, ok)
	}
}
