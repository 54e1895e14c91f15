package gateway

import (
	"fmt"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// agentSessions adds n sessions of one agent (they share its agent id) to
// group and returns them.
func agentSessions(r *Registry, agentID, group string, n int) []*fakeSession {
	var out []*fakeSession
	for i := range n {
		s := newFakeSession(fmt.Sprintf("%s-s%d", agentID, i), group)
		s.info.AgentID, s.info.AgentName = agentID, agentID
		r.Add(s)
		out = append(out, s)
	}
	return out
}

// TestRegistryBalancesOverAgents: exchanges that stall on one agent (its
// path died without a word, or its side of the backend hangs) steer new
// exchanges to the other agent of the group, however its sessions are
// drawn. Picks drawn over sessions compared two sessions of the stalled
// agent a sixth of the time with two agents of two sessions, and sent it
// those exchanges to hang too.
func TestRegistryBalancesOverAgents(t *testing.T) {
	for _, conns := range []int{1, 2, 4, 8} {
		t.Run(fmt.Sprintf("%d sessions each", conns), func(t *testing.T) {
			r := NewRegistry()
			stalled := map[tunnel.Session]bool{}
			for _, s := range agentSessions(r, "stalled", "g", conns) {
				stalled[s] = true
			}
			agentSessions(r, "healthy", "g", conns)

			// Load both agents evenly, then end the healthy agent's
			// exchanges: the stalled agent's hang on.
			var held []*Picked
			for range 40 * conns {
				p := mustPick(t, r, "g", nil)
				if stalled[p.Session] {
					held = append(held, p)
				} else {
					p.Done()
				}
			}
			if len(held) == 0 {
				t.Fatalf("no exchange went to the stalled agent of two")
			}
			const picks = 3000
			got := 0
			for range picks {
				p := mustPick(t, r, "g", nil)
				if stalled[p.Session] {
					got++
				}
				p.Done()
			}
			if got > 0 {
				t.Errorf("%d of %d new exchanges went to the agent with %d stalled ones; want none while the other agent is idle",
					got, picks, len(held))
			}
			for _, p := range held {
				p.Done()
			}
		})
	}
}

// TestRegistrySpreadsOverAgentsAndSessions: with exchanges that end at once,
// every agent and every session of each carries a fair part of them, also
// when the agents keep different numbers of sessions.
func TestRegistrySpreadsOverAgentsAndSessions(t *testing.T) {
	r := NewRegistry()
	few := agentSessions(r, "few", "g", 1)
	many := agentSessions(r, "many", "g", 4)
	count := map[tunnel.Session]int{}
	const picks = 8000
	for range picks {
		p := mustPick(t, r, "g", nil)
		count[p.Session]++
		p.Done()
	}
	// Each agent gets about half; the agent with four sessions spreads its
	// half over them.
	if c := count[few[0]]; c < picks*4/10 || c > picks*6/10 {
		t.Errorf("the agent with one session carried %d of %d exchanges, want about half", c, picks)
	}
	for _, s := range many {
		if c := count[s]; c < picks/16 {
			t.Errorf("session %v carried %d of %d exchanges, want about %d", s, c, picks, picks/8)
		}
	}
}

// TestRegistryLeastBusySessionOfAgent: of the chosen agent's sessions, the
// one with the fewest exchanges in flight carries the next (one of its
// connections may stall while the others work).
func TestRegistryLeastBusySessionOfAgent(t *testing.T) {
	r := NewRegistry()
	ss := agentSessions(r, "solo", "g", 3)
	var held []*Picked
	defer func() {
		for _, p := range held {
			p.Done()
		}
	}()
	// Hold 9 picks: the three sessions carry 3 each.
	for range 9 {
		held = append(held, mustPick(t, r, "g", nil))
	}
	for _, s := range ss {
		if n := inflight(r, s); n != 3 {
			t.Fatalf("%v: %d in flight after 9 picks over 3 sessions, want 3 each", s, n)
		}
	}
	// End the exchanges of one session: the next picks go there.
	for _, p := range held {
		if p.Session == ss[1] {
			p.Done()
		}
	}
	for range 3 {
		p := mustPick(t, r, "g", nil)
		held = append(held, p)
		if p.Session != ss[1] {
			t.Errorf("picked %v (%d in flight), want the idle %v", p.Session, inflight(r, p.Session), ss[1])
		}
	}
}

// TestRegistryChurnLeavesNothing: thousands of sessions of agents that
// come and go, with exchanges on them, leave an empty registry, and an
// agent that comes back starts with nothing in flight.
func TestRegistryChurnLeavesNothing(t *testing.T) {
	r := NewRegistry()
	stay := agentSessions(r, "stay", "g", 2)
	for i := range 2000 {
		ss := agentSessions(r, fmt.Sprint("flap", i%3), "g", 2)
		p := mustPick(t, r, "g", nil)
		for _, s := range ss {
			s.Close(nil)
			if i%2 == 0 {
				r.Remove(s) // else Pick's purge drops it
			}
		}
		mustPick(t, r, "g", nil).Done() // goes to stay, and purges
		p.Done()
	}
	if got := len(r.entries("g")); got != 2 {
		t.Fatalf("%d sessions registered, want the 2 that stayed", got)
	}
	if n := len(r.load()["g"].agents); n != 1 {
		t.Fatalf("%d agents in the group's view, want 1", n)
	}
	for _, s := range stay {
		s.Close(nil)
		r.Remove(s)
	}
	if m := r.load(); len(m) != 0 {
		t.Fatalf("registry not empty: %v", m)
	}
	back := agentSessions(r, "stay", "g", 1)
	if p := mustPick(t, r, "g", nil); p.e.load.Load() != 1 || p.Session != back[0] {
		t.Fatalf("an agent back after all its sessions ended starts with %d in flight", p.e.load.Load())
	}
}
