package gateway

import (
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// Every connector group should run two or more agents: with one, its apps
// stop whenever that agent does (an upgrade, a reboot, a lost link). The
// gateway says so in its log when a group that an app uses:
//
//   - has a single agent for redundancyGrace (a warning, once per such
//     spell; the grace keeps a start, where agents connect one after
//     another, quiet);
//   - loses its last agent (an error: its apps answer 503 no-connector);
//   - has two or more again after either (info).
//
// An agent counts while it has a session that is not draining; its
// sessions share its agent id.

// redundancyGrace is how long a group may have a single agent before the
// gateway warns.
const redundancyGrace = 30 * time.Second

// groupWatch is what the gateway last saw of each group's agents.
type groupWatch struct {
	mu     sync.Mutex
	groups map[string]*groupState // guarded by mu
}

type groupState struct {
	agents int // agents at the last look
	// alone is when the group last came down to a single agent (from none
	// or from several): the start of the spell that warnSingle times.
	alone    time.Time
	pending  bool // a look after redundancyGrace is scheduled
	warned   bool // the single-agent warning was logged for this spell
	degraded bool // a warning or error was logged and no recovery since
}

func (w *groupWatch) state(group string) *groupState {
	if w.groups == nil {
		w.groups = make(map[string]*groupState)
	}
	st := w.groups[group]
	if st == nil {
		st = &groupState{}
		w.groups[group] = st
	}
	return st
}

// agentKey tells one agent from another: its sessions share the agent id
// of its hello (an agent that sends none: its connector).
func agentKey(info tunnel.SessionInfo) string {
	if info.AgentID != "" {
		return info.AgentID
	}
	return info.ConnectorID
}

// groupAgents returns the agents (by name) of group with a session that is
// not draining, and the apps that use the group.
func (g *Gateway) groupAgents(group string) (agents, apps []string) {
	for _, r := range g.router.Load().routes {
		if r.Group == group && !slices.Contains(apps, r.App) {
			apps = append(apps, r.App)
		}
	}
	seen := map[string]bool{}
	for _, s := range g.registry.Sessions() {
		if s.Group != group || s.Draining {
			continue
		}
		if id := agentKey(s.SessionInfo); !seen[id] {
			seen[id] = true
			agents = append(agents, s.AgentName)
		}
	}
	slices.Sort(agents)
	return agents, apps
}

// groupChanged looks at group after one of its sessions started or ended.
func (g *Gateway) groupChanged(group string) {
	if isClosed(g.stopped) {
		return // the gateway is stopping: its sessions end with it
	}
	// Counted under the lock, so that of two looks at once (a session
	// that ends while its agent's drain is looked at, a reload) the later
	// count is the one recorded.
	g.groups.mu.Lock()
	agents, apps := g.groupAgents(group)
	if len(apps) == 0 {
		g.groups.mu.Unlock()
		return // no app uses it: nothing stops with it
	}
	n := len(agents)
	st := g.groups.state(group)
	prev := st.agents
	st.agents = n
	if n == 1 && prev != 1 {
		st.alone = g.now()
	}
	schedule := n == 1 && !st.pending && !st.warned
	if schedule {
		st.pending = true
	}
	if n != 1 {
		st.warned = false
	}
	lost := n == 0 && prev > 0
	recovered := n >= 2 && st.degraded
	if lost {
		st.degraded = true
	}
	if recovered {
		st.degraded = false
	}
	g.groups.mu.Unlock()

	fields := []zap.Field{zap.String("group", group), zap.Strings("apps", apps)}
	switch {
	case lost:
		g.log.Error("connector group has no agents: its apps answer 503 no-connector until one connects; "+
			"run two or more agents per group", fields...)
	case recovered:
		g.log.Info("connector group has two or more agents again", append(fields, zap.Strings("agents", agents))...)
	}
	if schedule {
		go g.warnSingle(group)
	}
}

// warnSingle warns once group has had a single agent for redundancyGrace
// in one spell. A spell that began after this look was scheduled (the
// group had two agents again meanwhile, then one: agents restarted one
// after the other) gets its own full grace. It ends early when the gateway
// stops.
func (g *Gateway) warnSingle(group string) {
	wait := redundancyGrace
	var (
		agents, apps []string
		warn         bool
	)
	for {
		select {
		case <-g.after(wait):
		case <-g.stopped:
			return
		}
		g.groups.mu.Lock()
		agents, apps = g.groupAgents(group)
		st := g.groups.state(group)
		if len(agents) == 1 && st.agents == 1 && !st.warned {
			if left := redundancyGrace - g.now().Sub(st.alone); left > 0 {
				g.groups.mu.Unlock()
				wait = left // still pending
				continue
			}
		}
		st.pending = false
		warn = len(agents) == 1 && !st.warned && len(apps) > 0
		if warn {
			st.warned, st.degraded = true, true
		}
		g.groups.mu.Unlock()
		break
	}
	if warn {
		g.log.Warn("connector group has a single agent: its apps stop whenever that agent does; "+
			"run two or more agents per group (enroll another with a token of the group)",
			zap.String("group", group), zap.String("agent", agents[0]), zap.Strings("apps", apps),
			zap.Duration("for", redundancyGrace))
	}
}
