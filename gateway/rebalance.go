package gateway

import (
	"cmp"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// An agent spreads its sessions over the replicas alive when they come up
// (agent/spread.go), but a replica that joins later holds none of them
// until one moves for another reason: in a rolling restart the replica
// restarted last would answer every group's users 503 no-connector. So at
// each store sweep, once the replica count is fresh, a replica that holds
// more than its share of an agent's sessions, ceil(connections / replicas)
// with connections from the agent's Hello, drains one of them. The agent
// replaces it make-before-break, and its spread logic places the
// replacement on a replica that holds none of its sessions.
//
// Churn is bounded: an agent whose sessions are as spread as they can be
// is never drained (at most its share here); a replica drains at most one
// session per agent and sweep, never one already draining; a replacement
// that lands back here (the agent found no other replica in its tries) is
// drained again at the next sweep at the earliest, and the agent's backoff
// for sessions drained soon after they opened slows that further.

// rebalanceReason is the Drain's reason for a session moved to spread its
// agent's sessions over replicas replicas.
func rebalanceReason(replicas int) string {
	return "rebalancing over " + strconv.Itoa(replicas) + " replicas"
}

// rebalancePicks returns the ids of the sessions to drain so that no agent
// holds more than its share of sessions on this replica, one per agent at
// most: sessions are those of this replica, replicas how many are alive.
// Sessions are grouped by agent (SessionInfo.AgentID: the connections
// count is the agent's); a session already draining is neither counted
// nor picked. Of an agent's sessions the one with the fewest exchanges in
// flight is picked, then the newest, so that a move disturbs the least.
func rebalancePicks(sessions []SessionStatus, replicas int) []string {
	if replicas <= 1 {
		return nil
	}
	byAgent := map[string][]SessionStatus{}
	for _, s := range sessions {
		if s.AgentID == "" || s.Connections == 0 || s.Draining {
			continue
		}
		byAgent[s.AgentID] = append(byAgent[s.AgentID], s)
	}
	var picks []string
	for _, list := range byAgent {
		share := (int(list[0].Connections) + replicas - 1) / replicas
		if len(list) <= share {
			continue
		}
		pick := slices.MinFunc(list, func(a, b SessionStatus) int {
			return cmp.Or(cmp.Compare(a.InFlight, b.InFlight), b.Started.Compare(a.Started), cmp.Compare(a.ID, b.ID))
		})
		picks = append(picks, pick.ID)
	}
	slices.Sort(picks)
	return picks
}

// rebalance drains, at a store sweep, one session of each agent that
// holds more than its share of sessions on this replica (see
// rebalancePicks), and logs one line saying how many it asked to move.
func (g *Gateway) rebalance() {
	replicas := g.Replicas()
	picks := rebalancePicks(g.registry.Sessions(), replicas)
	if len(picks) == 0 {
		return
	}
	ids := map[string]bool{}
	for _, id := range picks {
		ids[id] = true
	}
	reason := rebalanceReason(replicas)
	moved := 0
	for _, s := range g.registry.live(func(info tunnel.SessionInfo) bool { return ids[info.ID] }) {
		if g.registry.Retire(s) {
			g.log.Debug("draining agent session: its agent holds more than its share of sessions on this replica",
				sessionFields(s, zap.String("reason", reason))...)
			g.sendDrain(s, reason)
			moved++
		}
	}
	if moved > 0 {
		g.log.Info("asked agents to move sessions to the other gateway replicas: they held more than their share here",
			zap.Int("sessions_asked_to_move", moved), zap.Int("replicas", replicas))
	}
}
