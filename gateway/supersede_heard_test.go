package gateway

import (
	"sync/atomic"
	"testing"
)

// heardFake is a session whose transport counts what comes from its agent
// (heardSession): the test says when the agent is heard from.
type heardFake struct {
	*fakeSession
	n     atomic.Uint64 // what came from the agent
	asked atomic.Int32  // Ask calls
}

func (s *heardFake) Heard() (uint64, bool) { return s.n.Load(), true }
func (s *heardFake) Ask()                  { s.asked.Add(1) }

// heardAgents registers in r agent a (connector ca, one plain session),
// then process p-1 of connector cb (two sessions that count what they
// hear), then a second process p-2 of cb (two such sessions): p-1 is set
// aside.
func heardAgents(t *testing.T, r *Registry) (p1, p2 []*heardFake) {
	t.Helper()
	addProcessSession(t, r, "a", "ca", "a-1")
	add := func(id, agentID string) *heardFake {
		s := &heardFake{fakeSession: newFakeSession(id, "g")}
		s.info.ConnectorID, s.info.AgentID = "cb", agentID
		if _, ok := r.Add(s); !ok {
			t.Fatalf("%s refused", id)
		}
		return s
	}
	p1 = []*heardFake{add("p1a", "p-1"), add("p1b", "p-1")}
	p2 = []*heardFake{add("p2a", "p-2"), add("p2b", "p-2")}
	for _, s := range p1 {
		if n := s.asked.Load(); n != 1 {
			t.Errorf("p-1's session %s asked %d times when p-2 set it aside; want once (a live agent answers, "+
				"a dead one's session is closed by its liveness watch)", s.info.ID, n)
		}
	}
	for _, s := range p2 {
		if n := s.asked.Load(); n != 0 {
			t.Errorf("p-2's session %s asked %d times; want none (nobody set it aside)", s.info.ID, n)
		}
	}
	return p1, p2
}

// leave makes process p leave: its sessions drain, or end.
func leave(how string, p []*heardFake) {
	for _, s := range p {
		if how == "draining" {
			s.drain()
		} else {
			s.Close(nil)
		}
	}
}

// TestRegistryUnheardEarlierProcessStaysAside: the reviewer's case. p-1
// died without a word (kill -9 over QUIC, a host that died), p-2 is its
// restart, and p-2 stops before p-1's half-open sessions time out. Nothing
// came from p-1 since p-2 set it aside: it stays the last resort (not
// picked while agent a can be, not counted), and its agent is asked for a
// sign of life. Before, p-1's sessions were full members of the group
// again: exchanges picked there in the first second hung some 6 s until
// the liveness watch set them aside (10 of ~1,850 requests in a probe over
// QUIC, POSTs among them 502). Once something comes from p-1 (a live
// process, two copies of one data_dir), it serves again.
func TestRegistryUnheardEarlierProcessStaysAside(t *testing.T) {
	for _, how := range []string{"ended", "draining"} {
		t.Run(how, func(t *testing.T) {
			r := NewRegistry()
			p1, p2 := heardAgents(t, r)
			leave(how, p2)
			if n := r.Count("g"); n != 1 {
				t.Fatalf("Count = %d after p-2 left (%s) with nothing heard from p-1 since it was set aside; "+
					"want 1 (a only: p-1 may be dead)", n, how)
			}
			for _, st := range r.Sessions() {
				if st.AgentID == "p-1" && !st.Superseded {
					t.Errorf("session %s of the unheard p-1 is not set aside after p-2 left", st.ID)
				}
			}
			if by := picksBy(t, r, 200); by["p-1"] != 0 || by["a-1"] != 200 {
				t.Fatalf("200 picks after p-2 left, p-1 unheard: %v; want all to a-1", by)
			}
			for _, s := range p1 {
				if n := s.asked.Load(); n != 2 {
					t.Errorf("p-1's session %s asked %d times; want twice (set aside, then held back)", s.info.ID, n)
				}
			}
			// The group has nothing else: p-1 is still the last resort.
			for _, st := range r.Sessions() {
				if st.AgentID == "a-1" {
					r.Remove(mustSession(t, r, st.ID))
				}
			}
			if by := picksBy(t, r, 20); by["p-1"] != 20 {
				t.Fatalf("20 picks with only the unheard p-1 left: %v; want all to p-1 (last resort)", by)
			}
			addProcessSession(t, r, "a", "ca", "a-1")
			p1[1].n.Add(1) // p-1 answers: it is alive
			if n := r.Count("g"); n != 3 {
				t.Fatalf("Count = %d once p-1 was heard from, want 3 (a, and p-1's two sessions)", n)
			}
			if by := picksBy(t, r, 200); by["p-1"] < 40 || by["a-1"] < 40 {
				t.Fatalf("200 picks once p-1 was heard from: %v; want about half each for a-1 and p-1", by)
			}
		})
	}
}

// TestRegistryUnheardEarlierProcessBackOnPick: without a look by Count or
// Sessions, the first pick after the held-back process was heard from
// brings it back (see lookHeard).
func TestRegistryUnheardEarlierProcessBackOnPick(t *testing.T) {
	r := NewRegistry()
	p1, p2 := heardAgents(t, r)
	leave("draining", p2)
	r.Sessions() // the gateway looks as the drain is announced (groupChanged)
	p1[0].n.Add(1)
	if by := picksBy(t, r, 200); by["p-1"] < 40 {
		t.Fatalf("200 picks after the held-back p-1 was heard from: %v; want about half for p-1", by)
	}
}

// TestRegistryHeardEarlierProcessServesAgainAtOnce: the walk with
// sessions that count what they hear: p-1 is alive (two copies of one
// data_dir) and was heard from while p-2 was connected (its answer to
// the ask when it was set aside, its pings, its answers to the
// gateway's): when p-2 leaves, p-1 serves again at once, not asked again.
func TestRegistryHeardEarlierProcessServesAgainAtOnce(t *testing.T) {
	for _, how := range []string{"ended", "draining"} {
		t.Run(how, func(t *testing.T) {
			r := NewRegistry()
			p1, p2 := heardAgents(t, r)
			if by := picksBy(t, r, 100); by["p-1"] != 0 {
				t.Fatalf("100 picks while p-2 is connected: %v; want none of p-1's", by)
			}
			for _, s := range p1 {
				s.n.Add(3) // keepalive pings and answers while set aside
			}
			leave(how, p2)
			if n := r.Count("g"); n != 3 {
				t.Fatalf("Count = %d after p-2 left (%s), p-1 heard from meanwhile; want 3", n, how)
			}
			if by := picksBy(t, r, 200); by["p-1"] < 40 || by["a-1"] < 40 {
				t.Fatalf("200 picks after p-2 left, p-1 heard from meanwhile: %v; want about half each", by)
			}
			for _, s := range p1 {
				if n := s.asked.Load(); n != 1 {
					t.Errorf("p-1's session %s asked %d times; want once (when set aside): a process heard from needs no more asking",
						s.info.ID, n)
				}
			}
		})
	}
}

// mustSession returns r's session id.
func mustSession(t *testing.T, r *Registry, id string) *fakeSession {
	t.Helper()
	for e := range r.load().entries("g") {
		if e.info.ID == id {
			if f, ok := e.s.(*fakeSession); ok {
				return f
			}
		}
	}
	t.Fatalf("no plain session %s in group g", id)
	return nil
}
