package gateway

import "testing"

// TestRegistrySetAsideFollowsLatestWhenItsSessionEnds: two live processes
// of one connector (a copy of its data_dir, or a make-before-break
// restart where the old process moved a session), each with sessions
// registered before and after the other's. When the session that made
// one of them the latest ends, the other one registered last among the
// sessions left (see supersedeLocked): what Sessions shows (the agents
// gauge, the redundancy warnings, `connector list`) must say so at once,
// and not change when the ended session is dropped later (the next pick
// that comes across it). Before, Sessions kept the process whose session
// ended as the one serving, and the next pick's purge turned it around
// with nothing registered or ended in between.
func TestRegistrySetAsideFollowsLatestWhenItsSessionEnds(t *testing.T) {
	r := NewRegistry()
	addProcessSession(t, r, "a", "ca", "a-1") // another agent of the group
	addProcessSession(t, r, "p2-old", "cb", "p-2")
	p1 := addProcessSession(t, r, "p1", "cb", "p-1")
	p2new := addProcessSession(t, r, "p2-new", "cb", "p-2")
	setAside := func() map[string]bool {
		out := map[string]bool{}
		for _, st := range r.Sessions() {
			if st.ConnectorID == "cb" {
				out[st.ID] = st.Superseded
			}
		}
		return out
	}
	if got := setAside(); got["p2-old"] || got["p2-new"] || !got["p1"] {
		t.Fatalf("set aside while p-2 registered last: %v; want p1 only", got)
	}
	p2new.Close(nil) // a reconnect, a move: the session ends first
	before := setAside()
	if before["p1"] || !before["p2-old"] {
		t.Errorf("set aside once p-2's latest session ended: %v; want p2-old (p-1's session %s registered after it and is live)",
			before, p1)
	}
	r.Remove(p2new) // what the next pick's purge of ended sessions does
	if after := setAside(); after["p1"] != before["p1"] || after["p2-old"] != before["p2-old"] {
		t.Errorf("set aside changed when the ended session %s was dropped, nothing else registered or ended: %v, then %v",
			p2new, before, after)
	}
}
