package gateway

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestRebalancePicks: the decision of a sweep. An agent with more than
// ceil(connections / replicas) sessions on this replica, counting only
// those not draining, has one of them drained (the least busy, then the
// newest), one per agent; nothing with one replica, an older agent's 0,
// or at most its share here.
func TestRebalancePicks(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sess := func(id, agent string, conns uint32, inflight int, draining bool, age time.Duration) SessionStatus {
		st := SessionStatus{InFlight: inflight, Draining: draining}
		st.ID, st.AgentID, st.Connections, st.Started = id, agent, conns, t0.Add(-age)
		return st
	}
	tests := []struct {
		name     string
		sessions []SessionStatus
		replicas int
		want     []string
	}{
		{"both of two here, two replicas", []SessionStatus{
			sess("a1", "a", 2, 0, false, 2*time.Minute), sess("a2", "a", 2, 0, false, time.Minute),
		}, 2, []string{"a2"}},
		{"the least busy first", []SessionStatus{
			sess("a1", "a", 2, 0, false, 2*time.Minute), sess("a2", "a", 2, 3, false, time.Minute),
		}, 2, []string{"a1"}},
		{"one replica", []SessionStatus{
			sess("a1", "a", 2, 0, false, 0), sess("a2", "a", 2, 0, false, 0),
		}, 1, nil},
		{"replicas unknown", []SessionStatus{
			sess("a1", "a", 2, 0, false, 0), sess("a2", "a", 2, 0, false, 0),
		}, 0, nil},
		{"older agent says nothing", []SessionStatus{
			sess("a1", "a", 0, 0, false, 0), sess("a2", "a", 0, 0, false, 0),
		}, 2, nil},
		{"as spread as it can be", []SessionStatus{sess("a1", "a", 2, 0, false, 0)}, 2, nil},
		{"fewer connections than replicas", []SessionStatus{sess("a1", "a", 1, 0, false, 0)}, 3, nil},
		{"three of three here, two replicas: share 2, one moves", []SessionStatus{
			sess("a1", "a", 3, 0, false, 3*time.Minute), sess("a2", "a", 3, 0, false, 2*time.Minute),
			sess("a3", "a", 3, 0, false, time.Minute),
		}, 2, []string{"a3"}},
		{"two of three here, two replicas: its share", []SessionStatus{
			sess("a1", "a", 3, 0, false, 0), sess("a2", "a", 3, 0, false, 0),
		}, 2, nil},
		{"four of four here, three replicas: one per sweep", []SessionStatus{
			sess("a1", "a", 4, 0, false, 4*time.Minute), sess("a2", "a", 4, 0, false, 3*time.Minute),
			sess("a3", "a", 4, 0, false, 2*time.Minute), sess("a4", "a", 4, 0, false, time.Minute),
		}, 3, []string{"a4"}},
		{"one already draining: the other is the share", []SessionStatus{
			sess("a1", "a", 2, 0, false, 2*time.Minute), sess("a2", "a", 2, 0, true, time.Minute),
		}, 2, nil},
		{"one already draining of three: one more moves, not the draining one", []SessionStatus{
			sess("a1", "a", 4, 5, false, 3*time.Minute), sess("a2", "a", 4, 0, true, 2*time.Minute),
			sess("a3", "a", 4, 1, false, time.Minute), sess("a4", "a", 4, 9, false, 0),
		}, 4, []string{"a3"}},
		{"one per agent", []SessionStatus{
			sess("a1", "a", 2, 0, false, time.Minute), sess("a2", "a", 2, 0, false, 0),
			sess("b1", "b", 2, 0, false, time.Minute), sess("b2", "b", 2, 0, false, 0),
			sess("c1", "c", 2, 0, false, 0),
		}, 2, []string{"a2", "b2"}},
		{"no agent id", []SessionStatus{
			sess("a1", "", 2, 0, false, 0), sess("a2", "", 2, 0, false, 0),
		}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rebalancePicks(tt.sessions, tt.replicas); !slices.Equal(got, tt.want) {
				t.Fatalf("picks %v, want %v", got, tt.want)
			}
		})
	}
}

// drainRecorder is a session that records the Drains the gateway sends it.
type drainRecorder struct {
	*fakeSession
	drains chan string
}

func (s *drainRecorder) SendDrain(reason string) error {
	s.drains <- reason
	return nil
}

// TestRebalanceSweep: a sweep on a replica holding both sessions of an
// agent of two, with two replicas alive, sends one of them a Drain saying
// why, stops picking it and logs one line; the next sweep, with the
// replacement not up yet, drains nothing more.
func TestRebalanceSweep(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	g := &Gateway{log: zap.New(core), registry: NewRegistry()}
	g.replicas.Store(2)
	var sessions []*drainRecorder
	for _, id := range []string{"s1", "s2"} {
		s := &drainRecorder{fakeSession: newFakeSession(id, "g"), drains: make(chan string, 2)}
		s.info.AgentID, s.info.Connections, s.info.Started = "agent", 2, time.Now()
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not registered")
		}
		sessions = append(sessions, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.rebalance()
	var drained *drainRecorder
	select {
	case reason := <-sessions[0].drains:
		drained = sessions[0]
		if reason != "rebalancing over 2 replicas" {
			t.Fatalf("drain reason %q", reason)
		}
	case reason := <-sessions[1].drains:
		drained = sessions[1]
		if reason != "rebalancing over 2 replicas" {
			t.Fatalf("drain reason %q", reason)
		}
	case <-ctx.Done():
		t.Fatal("no session was drained")
	}
	for range 4 {
		p := mustPick(t, g.registry, "g", nil)
		if p.Session == drained {
			t.Fatal("the drained session is still picked")
		}
		p.Done()
	}
	lines := logs.FilterMessage("asked agents to move sessions to the other gateway replicas: they held more than their share here")
	if lines.Len() != 1 || lines.All()[0].ContextMap()["sessions_asked_to_move"] != int64(1) {
		t.Fatalf("want one summary line with 1 session: %v", logs.All())
	}
	g.rebalance()
	g.rebalance()
	if logs.Len() != 1 {
		t.Fatalf("later sweeps logged: %v", logs.All())
	}
	for _, s := range sessions {
		select {
		case reason := <-s.drains:
			t.Fatalf("session %s drained again (%q)", s.info.ID, reason)
		default:
		}
	}
}

// TestRebalanceBacksOff: behind a load balancer that sends every
// connection of an agent to this replica, each replacement lands back
// here. The gateway drains again at the next sweep, then waits 2, 4…
// sweeps (at most an hour) instead of draining every sweep for ever; an
// agent that is spread again starts afresh.
func TestRebalanceBacksOff(t *testing.T) {
	const sweep = time.Minute
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	g := &Gateway{log: zap.NewNop(), registry: NewRegistry(), cfg: Config{StoreSweep: sweep, Now: func() time.Time { return now }}}
	g.replicas.Store(2)
	n := 0
	var all []*drainRecorder
	add := func() {
		n++
		s := &drainRecorder{fakeSession: newFakeSession("s"+string(rune('a'+n)), "g"), drains: make(chan string, 1)}
		s.info.AgentID, s.info.Connections, s.info.Started = "agent", 2, now
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not registered")
		}
		all = append(all, s)
	}
	// drained counts the sessions retired so far (rebalance marks them
	// before it sends the Drain, which goes out on its own goroutine).
	drained := func() int {
		c := 0
		for _, st := range g.registry.Sessions() {
			if st.Draining {
				c++
			}
		}
		return c
	}
	add()
	add()
	var at []int // the sweeps that drained
	for i := range 16 {
		before := drained()
		g.rebalance()
		if drained() > before {
			at = append(at, i)
			add() // the replacement lands back here
		}
		now = now.Add(sweep)
	}
	if want := []int{0, 1, 3, 7, 15}; !slices.Equal(at, want) {
		t.Errorf("drained at sweeps %v, want %v", at, want)
	}
	if got := rebalanceBackoff(sweep, 30); got != time.Hour {
		t.Errorf("backoff after 30 misses %v, want an hour", got)
	}
	// Spread again (its sessions here down to its share): forgotten.
	for _, s := range all {
		g.registry.Remove(s)
	}
	g.rebalance()
	if len(g.rebalanced) != 0 {
		t.Errorf("a spread agent's backoff kept: %v", g.rebalanced)
	}
}

// TestRebalanceMovesOnePerSweep: an agent with several sessions more than
// its share here (a replica set grown from one that held them all) moves
// one a sweep while their replacements land on other replicas; the
// backoff is only for drains whose replacement came back here.
func TestRebalanceMovesOnePerSweep(t *testing.T) {
	const sweep = time.Minute
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	g := &Gateway{log: zap.NewNop(), registry: NewRegistry(), cfg: Config{StoreSweep: sweep, Now: func() time.Time { return now }}}
	g.replicas.Store(3)
	byID := map[string]*drainRecorder{}
	for i := range 6 {
		s := &drainRecorder{fakeSession: newFakeSession(fmt.Sprint("s", i), "g"), drains: make(chan string, 1)}
		s.info.AgentID, s.info.Connections, s.info.Started = "agent", 6, now
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not registered")
		}
		byID[s.info.ID] = s
	}
	var at []int // the sweeps that drained
	for i := range 10 {
		g.rebalance()
		for _, st := range g.registry.Sessions() {
			if st.Draining {
				// The replacement came up on another replica: the
				// drained session ends here.
				at = append(at, i)
				s := byID[st.ID]
				s.Close(nil)
				g.registry.Remove(s)
			}
		}
		now = now.Add(sweep)
	}
	// Share: ceil(6/3) = 2, so four sessions move, one a sweep.
	if want := []int{0, 1, 2, 3}; !slices.Equal(at, want) {
		t.Errorf("drained at sweeps %v, want %v", at, want)
	}
}
