package gateway

import (
	"fmt"
	"testing"
)

// TestRegistryEvictionSparesLiveProcesses: two live processes of one connector (copies of one data_dir, or replicas
// sharing an enrollment) at MaxPerConnector: every reconnect evicts a live
// session of the other (or its own), whose process reconnects and evicts
// again: perpetual churn (9 closes in 10 rounds with 3ac8c89's eviction).
// Only sessions of processes that look dead (all their sessions
// superseded) may make room; otherwise the reconnect at the bound is
// refused, as before 3ac8c89, and nothing live is closed.
func TestRegistryEvictionSparesLiveProcesses(t *testing.T) {
	r := &Registry{MaxPerConnector: 4}
	owner := map[*fakeSession]string{}
	add := func(proc string, n int) *fakeSession {
		s := newFakeSession(fmt.Sprintf("%s-%d", proc, n), "g")
		s.info.ConnectorID, s.info.AgentID, s.info.Connections = "c1", proc, 2
		if _, ok := r.Add(s); !ok {
			return nil
		}
		owner[s] = proc
		return s
	}
	// both processes up, 2 sessions each: at the bound.
	var live []*fakeSession
	live = append(live, add("A", 0), add("A", 1), add("B", 0), add("B", 1))
	// A's session 0 drops (network blip) and A reconnects it: under the bound.
	live[0].Close(nil)
	live[0] = add("A", 2)
	evictions, next := 0, 3
	for round := 0; round < 10; round++ {
		// Every live process reconnects any of its sessions that was closed.
		for i, s := range live {
			if s != nil && isClosed(s.Done()) { // closed by eviction
				evictions++
				ns := add(owner[s], next)
				next++
				if ns == nil {
					continue // refused: stable
				}
				live[i] = ns
				break
			}
		}
		// B reconnects once too, to start the cycle
		if round == 0 {
			ns := add("B", next)
			next++
			if ns != nil {
				live = append(live, ns)
			}
		}
	}
	if evictions > 1 {
		t.Errorf("two live processes at the bound keep evicting each other's live sessions: %d closes", evictions)
	}
}
