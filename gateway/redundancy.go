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
//
// The error comes at most once per degradedLogInterval per group: an
// agent that drops and comes back every few seconds (a flapping link, a
// crash loop) would otherwise write a line per drop. The first comes at
// once; those held back after it, and single-agent warnings meanwhile, are
// summed up at the end of the interval in one line that says what the
// group has then, with their number in similar_lines_suppressed and the
// drops in agent_losses. The metrics (sallyport_gateway_agents,
// sessions_closed_total) count every drop all the same.

// redundancyGrace is how long a group may have a single agent before the
// gateway warns.
const redundancyGrace = 30 * time.Second

// degradedLogInterval is the least time between two lines about one
// group's lost or single agent.
const degradedLogInterval = time.Minute

// groupWatch is what the gateway last saw of each group's agents.
type groupWatch struct {
	mu     sync.Mutex
	groups map[string]*groupState // guarded by mu
	// looked is set at the first look at any group; looking while a
	// warnAgentless look is scheduled. Guarded by mu.
	looked, looking bool
	// agentlessAfter runs warnAgentless's look after a delay; nil means
	// time.AfterFunc (the real clock, as the store sweep: tests that drive
	// the gateway's fake clock count its waiters, and no goroutine waits
	// meanwhile). Set by tests only.
	agentlessAfter func(time.Duration, func())
	// startLook and look are the timers of watchAgentless's and
	// scheduleAgentless's looks (nil under agentlessAfter), stopped when
	// the gateway stops: each holds the gateway for agentlessGrace.
	// Guarded by mu.
	startLook, look *time.Timer
}

// agentlessGrace is how long after the first session (or a reload) a group
// an app uses may have had no agent before warnAgentless warns, and how
// long after the start no agent at all may have come before
// warnNoAgentYet does: longer than
// the agents' reconnect spread after a gateway restart (their backoff grows
// to 30 s, plus auto mode's 3 s QUIC attempt and the dial), so that a group
// whose agent is merely slower to come back is not taken for a typo.
const agentlessGrace = 2 * time.Minute

// scheduleAgentless schedules a warnAgentless look agentlessGrace from
// now, unless one is. Called with mu held.
func (g *Gateway) scheduleAgentless() {
	w := &g.groups
	if w.looking {
		return
	}
	w.looking = true
	w.look = w.afterGrace(g.warnAgentless)
}

// afterGrace runs f agentlessGrace from now (through agentlessAfter, when
// a test set it: then it returns nil).
func (w *groupWatch) afterGrace(f func()) *time.Timer {
	if w.agentlessAfter != nil {
		w.agentlessAfter(agentlessGrace, f)
		return nil
	}
	return time.AfterFunc(agentlessGrace, f)
}

// stopLooks stops the scheduled looks, at the gateway's stop: they would
// find it stopped and do nothing, but until then their timers kept the
// stopped gateway, its sessions, metrics and pre-authentication in
// memory (tests that start many gateways held those of the last two
// minutes: 0.5 MiB each with pre-authentication).
func (w *groupWatch) stopLooks() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range []*time.Timer{w.startLook, w.look} {
		if t != nil {
			t.Stop()
		}
	}
	w.startLook, w.look = nil, nil
}

// watchAgentless schedules, at the gateway's start (Serve), the look of
// warnNoAgentYet: agentlessGrace from now, when no agent of any group has
// connected by then (all of them dial a wrong address, are blocked by a
// firewall, or were never enrolled), the gateway says so. Without it
// nothing did: warnAgentless's look is scheduled by the first session, and
// there was none.
func (g *Gateway) watchAgentless() {
	g.groups.mu.Lock()
	defer g.groups.mu.Unlock()
	g.groups.startLook = g.groups.afterGrace(g.warnNoAgentYet)
}

// msgNoAgentYet is warnNoAgentYet's line.
const msgNoAgentYet = "no agent has connected since the gateway started: the apps of these groups answer 503 no-connector; " +
	"check the agents' logs (cannot connect to the gateway, refused this agent's certificate, revoked), " +
	"that their gateway: is this gateway's tunnel address (tunnel.addr, not the public port), " +
	"and that they are enrolled (sallyport connector list; enroll with a token of the group, sallyport token create --group G)"

// warnNoAgentYet warns, in one line naming every group that an app uses
// and its apps, when no session at all has come by agentlessGrace after
// the start. When one came (or a reload), warnAgentless's own look,
// agentlessGrace after it, tells the groups without agents apart from
// those with: this look leaves it to that one. Not once the gateway stops.
func (g *Gateway) warnNoAgentYet() {
	if isClosed(g.stopped) {
		return
	}
	var groups, apps []string
	w := &g.groups
	w.mu.Lock()
	if w.looked || len(g.registry.Sessions()) > 0 {
		w.mu.Unlock()
		return
	}
	w.looked = true
	for _, r := range g.router.Load().routes {
		st := w.state(r.Group)
		if !slices.Contains(groups, r.Group) {
			st.agentless = true
			groups = append(groups, r.Group)
		}
		if !slices.Contains(apps, r.App) {
			apps = append(apps, r.App)
		}
	}
	w.mu.Unlock()
	if len(groups) == 0 {
		return // no app: nothing answers 503
	}
	slices.Sort(groups)
	slices.Sort(apps)
	fields := []zap.Field{zap.Strings("groups", groups), zap.Strings("apps", apps), zap.Duration("for", agentlessGrace)}
	g.mu.Lock()
	if g.tunnelLn != nil {
		fields = append(fields, zap.Stringer("tunnel", g.tunnelLn.Addr()))
	}
	g.mu.Unlock()
	g.log.Warn(msgNoAgentYet, fields...)
}

type groupState struct {
	agents int // agents at the last look
	// alone is when the group last came down to a single agent (from none
	// or from several): the start of the spell that warnSingle times.
	alone    time.Time
	pending  bool // a look after redundancyGrace is scheduled
	warned   bool // the single-agent warning was logged for this spell
	degraded bool // a warning or error was logged and no recovery since
	// lastLine is when the last no-agents error about the group was
	// logged (or a summary); another waits until degradedLogInterval after.
	lastLine time.Time
	held     int  // errors and warnings held back since lastLine
	losses   int  // of which losses of the last agent
	summary  bool // a summary look is scheduled
	// seen is set once the group had an agent since the gateway started;
	// agentless once warnAgentless warned that it never had one.
	seen, agentless bool
}

// holdLoss reports whether the error about the loss of the group's last
// agent must wait (one came less than degradedLogInterval ago), and if so
// counts it and reports whether the summary look must be scheduled.
// Otherwise the line is logged now. Called with the watch's mu held.
func (st *groupState) holdLoss(now time.Time) (held, schedule bool) {
	if st.lastLine.IsZero() || now.Sub(st.lastLine) >= degradedLogInterval || now.Before(st.lastLine) {
		st.lastLine = now
		return false, false
	}
	st.held++
	st.losses++
	schedule = !st.summary
	st.summary = true
	return true, schedule
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
	g.groupGained(group)
	// Counted under the lock, so that of two looks at once (a session
	// that ends while its agent's drain is looked at, a reload) the later
	// count is the one recorded.
	g.groups.mu.Lock()
	if !g.groups.looked {
		// The first session: a group that an app uses and that no agent
		// joins by the end of the grace is a typo, or was forgotten.
		g.groups.looked = true
		g.scheduleAgentless()
	}
	agents, apps := g.groupAgents(group)
	if len(apps) == 0 {
		g.groups.mu.Unlock()
		return // no app uses it: nothing stops with it
	}
	n := len(agents)
	st := g.groups.state(group)
	prev := st.agents
	st.agents = n
	if n > 0 {
		st.seen = true
	} else if !st.seen && !st.agentless {
		// An app a reload added uses a group without agents.
		g.scheduleAgentless()
	}
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
	var held, summarize bool
	if lost {
		st.degraded = true
		held, summarize = st.holdLoss(g.now())
	}
	if recovered {
		st.degraded = false
	}
	summaryAt := st.lastLine.Add(degradedLogInterval)
	g.groups.mu.Unlock()

	fields := []zap.Field{zap.String("group", group), zap.Strings("apps", apps)}
	switch {
	case lost && !held:
		g.log.Error(msgNoAgents, fields...)
	case recovered:
		g.log.Info("connector group has two or more agents again", append(fields, zap.Strings("agents", agents))...)
	}
	if schedule {
		go g.warnSingle(group)
	}
	if summarize {
		go g.summarizeGroup(group, summaryAt)
	}
}

const (
	msgNoAgents = "connector group has no agents: its apps answer 503 no-connector until one connects; " +
		"run two or more agents per group"
	msgSingle = "connector group has a single agent: its apps stop whenever that agent does; " +
		"run two or more agents per group (enroll another with a token of the group)"
)

// summarizeGroup logs, at at, what group has then, for the errors and
// warnings about it held back since its last line (see holdLoss).
// It ends early when the gateway stops.
func (g *Gateway) summarizeGroup(group string, at time.Time) {
	select {
	case <-g.until(at):
	case <-g.stopped:
		return
	}
	g.groups.mu.Lock()
	agents, apps := g.groupAgents(group)
	st := g.groups.state(group)
	held, losses := st.held, st.losses
	st.held, st.losses, st.summary = 0, 0, false
	st.lastLine = g.now()
	g.groups.mu.Unlock()
	if len(apps) == 0 || held == 0 {
		return
	}
	fields := []zap.Field{zap.String("group", group), zap.Strings("apps", apps), zap.Strings("agents", agents),
		zap.Int("similar_lines_suppressed", held), zap.Int("agent_losses", losses),
		zap.Duration("within", degradedLogInterval)}
	// Outages held back are errors whatever the group has now: alerts on
	// the error level must not miss them because the flapping agent
	// happened to be up at the end of the interval.
	switch {
	case len(agents) == 0:
		g.log.Error(msgNoAgents, fields...)
	case losses > 0:
		g.log.Error(msgLostMeanwhile, fields...)
	case len(agents) == 1:
		g.log.Warn(msgSingle, fields...)
	}
}

// msgLostMeanwhile sums up losses of a group's last agent whose lines were
// held back, when the group has agents again.
const msgLostMeanwhile = "connector group lost its last agent again and again (agent_losses within the last interval; " +
	"it has agents now): its apps answered 503 no-connector meanwhile; run two or more agents per group"

// warnSingle warns once group has had a single agent for redundancyGrace
// in one spell. A spell that began after this look was scheduled (the
// group had two agents again meanwhile, then one: agents restarted one
// after the other) gets its own full grace. It ends early when the gateway
// stops.
func (g *Gateway) warnSingle(group string) {
	at := g.now().Add(redundancyGrace) // a time, not a wait: see clock.Until
	var (
		agents, apps []string
		warn         bool
	)
	for {
		select {
		case <-g.until(at):
		case <-g.stopped:
			return
		}
		g.groups.mu.Lock()
		agents, apps = g.groupAgents(group)
		st := g.groups.state(group)
		if len(agents) == 1 && st.agents == 1 && !st.warned {
			if end := st.alone.Add(redundancyGrace); end.After(g.now()) {
				g.groups.mu.Unlock()
				at = end // still pending
				continue
			}
		}
		st.pending = false
		// st.agents too: a session registered whose groupChanged has not
		// run yet shows in the registry but not in st (its spell has not
		// begun); that groupChanged schedules its own look, as pending
		// is cleared. Without it, a look that came in between warned at
		// once, without the grace (a flapping agent's next session).
		warn = len(agents) == 1 && st.agents == 1 && !st.warned && len(apps) > 0
		if warn {
			st.warned, st.degraded = true, true
		}
		if warn && (st.summary || !st.lastLine.IsZero() && g.now().Sub(st.lastLine) < degradedLogInterval) {
			// The group lost its last agent a moment ago (it flaps):
			// the summary at the end of the interval says what it has
			// then.
			st.held++
			summarize := !st.summary
			st.summary = true
			at := st.lastLine.Add(degradedLogInterval)
			g.groups.mu.Unlock()
			if summarize {
				go g.summarizeGroup(group, at)
			}
			return
		}
		g.groups.mu.Unlock()
		break
	}
	if warn {
		g.log.Warn(msgSingle, zap.String("group", group), zap.String("agent", agents[0]), zap.Strings("apps", apps),
			zap.Duration("for", redundancyGrace))
	}
}

// msgAgentless is warnAgentless's line.
const msgAgentless = "connector group has had no agent since the gateway started: its apps answer 503 no-connector; " +
	"check the app's group: for a typo (groups_with_agents lists those that have agents), or enroll an agent " +
	"with a token of the group (sallyport token create --group G)"

// warnAgentless warns, once per group, of each group that an app uses and
// that has had no agent at all since the gateway started (a typo in an
// app's group: nothing else would ever say so, as the group never loses an
// agent). It runs agentlessGrace after the first session, and after a
// reload that added an app on a group without agents (see groupChanged);
// not once the gateway stops.
func (g *Gateway) warnAgentless() {
	if isClosed(g.stopped) {
		return
	}
	type warning struct {
		group string
		apps  []string
	}
	var warn []warning
	g.groups.mu.Lock()
	g.groups.looking = false
	done := map[string]bool{}
	for _, r := range g.router.Load().routes {
		if done[r.Group] {
			continue
		}
		done[r.Group] = true
		agents, apps := g.groupAgents(r.Group)
		st := g.groups.state(r.Group)
		if len(agents) == 0 && !st.seen && !st.agentless {
			st.agentless = true
			warn = append(warn, warning{r.Group, apps})
		}
	}
	g.groups.mu.Unlock()
	if len(warn) == 0 {
		return
	}
	var live []string
	for _, s := range g.registry.Sessions() {
		if !s.Draining && !slices.Contains(live, s.Group) {
			live = append(live, s.Group)
		}
	}
	slices.Sort(live)
	for _, w := range warn {
		g.log.Warn(msgAgentless, zap.String("group", w.group), zap.Strings("apps", w.apps),
			zap.Strings("groups_with_agents", live))
	}
}
