package gateway

import (
	"cmp"
	"slices"
	"strconv"
	"time"

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
// drained again at the next sweep at the earliest, and then at growing
// intervals (rebalanceBackoff): behind a load balancer that sends every
// connection of an agent to one replica (source-address hashing) the
// sessions cannot spread, and the gateway stops asking within the hour.

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

// rebalanceTry is, per agent over its share here, what the last drains
// achieved: how many drains in a row left the agent as many sessions here
// as before (their replacements landed back here), how many it held at the
// last drain, and when the next drain may be. Only the sweep goroutine
// touches it.
type rebalanceTry struct {
	misses int
	held   int // the agent's sessions here, not draining, at the last drain
	next   time.Time
}

// rebalanceBackoff is how long after a drain the gateway waits before it
// drains another session of the same agent, when misses drains in a row
// left the agent as many sessions here: one sweep, then 2, 4, 8… sweeps,
// at most an hour. A drain whose replacement landed elsewhere is no miss,
// so an agent with several sessions to move (a replica added to one that
// held them all) moves one a sweep.
func rebalanceBackoff(sweep time.Duration, misses int) time.Duration {
	return min(sweep<<min(misses, 10), time.Hour)
}

// rebalance drains, at a store sweep, one session of each agent that
// holds more than its share of sessions on this replica (see
// rebalancePicks) and whose backoff has passed, and logs one line saying
// how many it asked to move.
func (g *Gateway) rebalance() {
	replicas := g.Replicas()
	sessions := g.registry.Sessions()
	picks := rebalancePicks(sessions, replicas)
	agentOf := map[string]string{}
	held := map[string]int{} // an agent's sessions here that are not draining
	for _, s := range sessions {
		agentOf[s.ID] = s.AgentID
		if !s.Draining {
			held[s.AgentID]++
		}
	}
	over := map[string]bool{}
	for _, id := range picks {
		over[agentOf[id]] = true
	}
	for a := range g.rebalanced {
		if !over[a] {
			delete(g.rebalanced, a) // spread now, or gone: a fresh start next time
		}
	}
	now := g.now()
	ids := map[string]bool{}
	for _, id := range picks {
		a := agentOf[id]
		try, tried := g.rebalanced[a]
		if tried && now.Before(try.next) {
			continue
		}
		switch {
		case !tried:
		case held[a] < try.held:
			try.misses = 0 // the last drain moved a session away
		default:
			try.misses++ // the last one's replacement landed back here
		}
		try.held = held[a]
		// Half a sweep early: the sweep that is due then finds it passed.
		try.next = now.Add(rebalanceBackoff(g.cfg.storeSweep(), try.misses) - g.cfg.storeSweep()/2)
		if g.rebalanced == nil {
			g.rebalanced = map[string]rebalanceTry{}
		}
		g.rebalanced[a] = try
		ids[id] = true
	}
	if len(ids) == 0 {
		return
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
