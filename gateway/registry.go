package gateway

import (
	"errors"
	"iter"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// Registry holds the live tunnel sessions of each connector group and picks
// one for every exchange. The zero value is an empty registry ready to use;
// it is safe for concurrent use.
//
// The registry starts no goroutines. Pick checks a session's Draining and
// Done channels when it considers the session: a draining session is not
// picked any more, and a done one is also dropped from the registry on the
// spot. The code that accepted a session still calls Remove once the
// session's Done channel is closed, so that an idle group does not keep
// ended sessions around until the next Pick.
//
// Sessions are compared with ==, so session types must be comparable (in
// practice, pointers).
type Registry struct {
	// MaxPerConnector bounds the live sessions of one enrolled connector
	// (SessionInfo.ConnectorID): Add refuses more. Zero means no bound. Set
	// it before the first Add.
	MaxPerConnector int

	mu sync.Mutex // serialises writers (Add, Remove, purge)
	// groups maps a connector group to its sessions. The map and the views
	// are never modified once stored: writers build copies under mu and swap
	// the pointer, so Pick reads without a lock. nil means empty.
	groups atomic.Pointer[map[string]*groupView]
	// seq numbers the sessions in the order Add registered them (under
	// mu): the connector's latest process is the one that registered last
	// (see supersedeLocked).
	seq uint64
	// unheard: some session is held back until its agent is heard from
	// (see supersedeLocked); picks look, at most every heardLook after
	// nextLook (MonoNow). Set under mu; cleared under mu by lookHeard.
	unheard  atomic.Bool
	nextLook atomic.Int64
}

// groupView is one group's sessions by agent. Never modified once stored.
type groupView struct {
	agents []*agentView // in the order of their first session
}

// agentView is one agent's sessions in a group.
type agentView struct {
	load     *atomic.Int64 // shared by the sessions: their exchanges in flight
	sessions []*regEntry
}

// regEntry is one session in the registry.
type regEntry struct {
	s        tunnel.Session
	info     tunnel.SessionInfo // s.Info() when added
	agent    string             // balanceKey(info)
	inflight atomic.Int64       // exchanges picked and not yet Done
	// load counts the exchanges in flight on every session of the agent,
	// this one's included; shared by the agent's entries in the group.
	load    *atomic.Int64
	retired atomic.Bool // the gateway drains it (see Retire); never unset
	// superseded: another process of its connector registered a session
	// later and still has one that may take new exchanges (see
	// supersedeLocked); picked only when nothing else in the group can be
	// (pickFallback). Written under Registry.mu; cleared once that
	// process's sessions have all ended or drain.
	superseded atomic.Bool
	seq        uint64 // Registry.seq when added
	// silent is s when its transport tells that the agent stopped
	// answering (see silentSession); nil when it cannot tell.
	silent silentSession
	// heard is s when its transport counts what comes from the agent (see
	// heardSession); nil when it cannot tell.
	heard heardSession
	// heardMark is heard's count when the session was set aside
	// (superseded turned true); written under Registry.mu.
	heardMark atomic.Uint64
	// unheard: its process is its connector's latest, but the session
	// was set aside and nothing came from the agent since: it stays aside
	// until something does (see supersedeLocked). Written under
	// Registry.mu.
	unheard atomic.Bool
}

// heardSession is a session whose transport counts what comes from the
// agent (QUIC's packets, yamux's and gRPC's bytes read): a live agent is
// heard at least every keepalive (it pings, and it answers the gateway's
// pings and probes), a dead one never. The registry reads it to tell a
// live earlier process of a connector from a dead one (see
// supersedeLocked).
type heardSession interface {
	// Heard counts what came from the agent so far; ok is false when the
	// transport cannot tell. Cheap (an atomic load or two).
	Heard() (n uint64, ok bool)
	// Ask asks the agent for a sign of life without blocking: a live
	// one answers within a round trip (counted by Heard); the liveness
	// watch sets a dead one's session aside within about a second and
	// closes it some seconds later (see silentSession).
	Ask()
}

// heardSince reports whether something came from e's agent since e was set
// aside; true when its transport cannot tell (as before sessions counted
// it).
func (e *regEntry) heardSince() bool {
	if e.heard == nil {
		return true
	}
	n, ok := e.heard.Heard()
	return !ok || n != e.heardMark.Load()
}

// silentSession is a session whose transport notices, within about a
// second, an agent that stopped answering the exchanges sent to it (a host
// that lost power, a network path cut without a word: QUIC, see
// muxtunnel's liveness watch). Until something comes from the agent again
// such a session is picked only when nothing else in its group can be
// (pickFallback), as a superseded one: exchanges sent there would wait for
// the keepalive's idle timeout (30 s by default) while another agent of
// the group answers at once.
type silentSession interface {
	// Silent reports that an exchange sent on the session has gone
	// unanswered and nothing came from the agent since. One atomic load:
	// it is called for every session a pick considers.
	Silent() bool
}

// isSilent reports whether e's agent stopped answering (see silentSession).
func (e *regEntry) isSilent() bool { return e.silent != nil && e.silent.Silent() }

// balanceKey tells the agents of a group apart for balancing: the agent id
// its sessions share (an older agent: its connector; a session that says
// neither is an agent of its own).
func balanceKey(info tunnel.SessionInfo) string {
	if k := agentKey(info); k != "" {
		return k
	}
	return "session " + info.ID
}

// Picked is a session chosen for one exchange. Call Done when the exchange
// has ended, whether it succeeded or not.
type Picked struct {
	Session tunnel.Session
	e       *regEntry
	done    atomic.Bool
}

// Done ends the exchange's claim on the session. Calls after the first do
// nothing.
func (p *Picked) Done() {
	if p.done.CompareAndSwap(false, true) {
		p.e.inflight.Add(-1)
		p.e.load.Add(-1)
	}
}

// SessionStatus is a snapshot of one session for the admin surface.
type SessionStatus struct {
	tunnel.SessionInfo
	InFlight int  // exchanges on the session right now
	Draining bool // the agent announced its shutdown, the gateway retired it, or its agent was restarted
	// Superseded: a later process of its connector is connected (see
	// supersedeLocked): its agent was restarted, or runs twice from one
	// data_dir; the agent is counted by the later process's sessions.
	Superseded bool
	// Silent: an exchange sent on it went unanswered and nothing came
	// from the agent since (see silentSession); picked only when no other
	// session can be.
	Silent bool
}

// NewRegistry returns an empty Registry (the zero value works as well).
func NewRegistry() *Registry { return new(Registry) }

// Add registers s under its group (s.Info().Group). Adding a session twice,
// or one that has already ended, does nothing. It returns false, having
// added nothing, when s's connector already holds MaxPerConnector live
// sessions and none of them may make room; held is that number. A session
// from a new process of its agent supersedes those of the previous one
// (see supersedeLocked); superseded sessions count towards
// MaxPerConnector, and at the bound they are closed to make room for the
// connections the new process announced (SessionInfo.Connections), the
// least busy first (see evictSuperseded).
func (r *Registry) Add(s tunnel.Session) (held int, ok bool) {
	if isClosed(s.Done()) {
		return 0, true
	}
	info := s.Info()
	key := balanceKey(info)
	var evicted []*regEntry
	defer func() {
		// Closed outside the lock: a transport's Close may write to the
		// network.
		for _, e := range evicted {
			e.s.Close(errSupersededEvicted)
		}
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.load()
	// Up to date first: a process that superseded others may have ended or
	// be draining since (see refreshSuperseded).
	r.supersedeLocked(old, info.Group, info.ConnectorID)
	var load *atomic.Int64
	var superseded []*regEntry
	own := 1 // sessions of s's process, s included
	for e := range old.entries(info.Group) {
		if e.s == s {
			return 0, true
		}
		if info.ConnectorID != "" && e.info.ConnectorID == info.ConnectorID && !isClosed(e.s.Done()) {
			held++
			switch {
			case e.superseded.Load():
				superseded = append(superseded, e)
			case info.AgentID != "" && e.info.AgentID == info.AgentID:
				own++
			}
		}
		if load == nil && e.agent == key {
			load = e.load
		}
	}
	if r.MaxPerConnector > 0 && held >= r.MaxPerConnector {
		// Only the sessions of processes that look dead may make room: not
		// s's own, and none of a process that still has a session nobody
		// superseded (it registered after the others: it is alive, as two
		// copies of one data_dir or replicas sharing a connector are).
		alive := map[string]bool{info.AgentID: true}
		for e := range old.entries(info.Group) {
			if e.info.ConnectorID == info.ConnectorID && !e.superseded.Load() && !isClosed(e.s.Done()) {
				alive[e.info.AgentID] = true
			}
		}
		superseded = slices.DeleteFunc(superseded, func(e *regEntry) bool { return alive[e.info.AgentID] })
		if info.AgentID != "" && own <= int(info.Connections) {
			// Room for the sessions the new process announced, not
			// more: sessions opened in a loop under new agent ids are
			// still refused (and logged) at the bound.
			evicted = evictSuperseded(superseded, held-r.MaxPerConnector+1)
		}
		if held -= len(evicted); held >= r.MaxPerConnector {
			return held, false
		}
		r.removeLocked(func(e *regEntry) bool { return slices.Contains(evicted, e) })
		old = r.load()
	}
	if load == nil {
		load = new(atomic.Int64)
	}
	r.seq++
	e := &regEntry{s: s, info: info, agent: key, load: load, seq: r.seq}
	e.silent, _ = s.(silentSession)
	if h, ok := s.(heardSession); ok {
		if _, can := h.Heard(); can {
			e.heard = h
		}
	}
	r.store(old, info.Group, old[info.Group].with(e))
	r.supersedeLocked(r.load(), info.Group, info.ConnectorID)
	return held, true
}

// errSupersededEvicted is the reason of a superseded session closed to make
// room for a new one of its connector (see evictSuperseded).
var errSupersededEvicted = errors.New("closed to make room for the sessions of the agent's new process: " +
	"this session's process was restarted and the connector holds the most sessions one connector may")

// evictSuperseded returns up to n of the superseded sessions of one
// connector, the fewest exchanges in flight first, to be closed so that a
// new session of the connector fits under MaxPerConnector. A process
// that died without a word leaves its sessions registered until the
// keepalive ends them (30 s over QUIC), while each new process it is
// restarted as supersedes them: an agent with 64 connections restarted
// in a loop (a crash loop, kill -9 under a supervisor) reached the 256
// sessions of its connector at its fifth process within that time, and
// the gateway refused it until they timed out. Superseded sessions take
// no new exchanges; a live old process that still holds some (two copies
// of one data_dir) reconnects and supersedes in turn, within the bound.
// None when there are fewer than n: nothing is closed for a session that
// is refused anyway.
func evictSuperseded(superseded []*regEntry, n int) []*regEntry {
	if n <= 0 || len(superseded) < n {
		return nil
	}
	slices.SortStableFunc(superseded, func(a, b *regEntry) int {
		return int(a.inflight.Load() - b.inflight.Load())
	})
	return superseded[:n]
}

// supersedeLocked sets aside the sessions of every process of connector
// in group but its latest one, and brings back those of the latest one:
// one connector is one agent process, so a session from a new process
// (another agent id) means the previous one was restarted. The latest
// process is the one that registered a session last among those with a
// session that may take new exchanges (not ended, not draining, not
// retired): once a later process has none left (it stopped, drained, was
// killed and its sessions closed), the live sessions of the one before
// serve again as full members of the group. Sessions of agents without an
// agent id (older agents) are left alone. r.mu must be held.
//
// Why set aside: a process that died without a word (kill -9, a crash,
// the OOM killer, a host that lost power) leaves its QUIC sessions
// registered until their idle timeout (30 s by default: UDP has no RST),
// and every exchange picked there meanwhile hung until the app's timeout
// (504 backend-timeout) or that idle timeout. Exchanges already on the
// set-aside sessions go on, and they are still picked when nothing else in
// the group can be (pickFallback).
//
// Why bring back: two processes run from copies of one data_dir (or one
// started by mistake next to a running one, then stopped) are both alive;
// the earlier one kept its sessions, and while they stayed set aside the
// group had one agent fewer than it looked (no exchanges, and the agents
// gauge, the single-agent and no-agents warnings counted without it),
// until that agent was restarted. Sessions of a dead earlier process do
// not come back: while the restarted process is connected they stay set
// aside, and they end (a TCP RST at once, QUIC's idle timeout) and are
// dropped. A crash loop does not bring them back either: a process that
// crashes in turn leaves its sessions registered too, and its successor
// registers later.
//
// Why only once heard: if the restarted process leaves cleanly (it
// drains, or its sessions end) before the dead one's half-open sessions
// time out (QUIC after kill -9, or a host that died: up to 30 s), those
// would be picked again, and the exchanges sent there in the second
// before the liveness watch noticed (see silentSession) hung some 6 s (in
// a probe over QUIC, 10 of ~1,850 requests; POSTs among them got 502).
// So a session's transport count of what came from its agent (see
// heardSession) is noted when it is set aside, and its agent is asked for
// a sign of life (heardSession.Ask): a live one answers within a round
// trip (and is heard at least every keepalive anyway: it pings, and it
// answers the gateway's pings); a dead one never does, and the liveness
// watch closes its sessions some seconds later (about 6 s over QUIC),
// not at their idle timeout. A set-aside session counts as its
// process's again only once that count moved. A process whose
// set-aside sessions are all unheard when no other is left to choose
// stays aside (unheard: still the last resort) and is asked again; if it
// answers, it serves at the next look (a pick, at most every heardLook,
// or Sessions and Count). Sessions whose transport cannot tell come back
// as soon as they are the latest.
//
// Why the set-aside sessions are neither told nor closed: a live process
// told to drain, or whose sessions are closed, reconnects, and its new
// sessions would set aside the other process in turn (the two would take
// turns at every reconnect); a dead one cannot be told anything, and
// closing it would end the exchanges still on it. Kept, a live one is a
// standby that serves again once the later process leaves. They are
// closed only to make room for the new process's sessions at
// MaxPerConnector (see evictSuperseded).
func (r *Registry) supersedeLocked(m groupMap, group, connector string) {
	if connector == "" {
		return
	}
	var latest *regEntry
	unheard := false // a session set aside that may take new exchanges, and nothing came from its agent since
	for e := range m.entries(group) {
		if e.info.ConnectorID != connector || e.info.AgentID == "" || !mayTakeNew(e) {
			continue
		}
		if e.superseded.Load() && !e.heardSince() {
			unheard = true
			continue
		}
		if latest == nil || e.seq > latest.seq {
			latest = e
		}
	}
	if latest == nil {
		// Every process drains or has ended (nothing to choose), or was
		// set aside and is not heard from since: those stay aside until
		// they are, and their agent is asked.
		if unheard {
			for e := range m.entries(group) {
				if e.info.ConnectorID == connector && e.info.AgentID != "" && e.superseded.Load() &&
					mayTakeNew(e) && !e.heardSince() && !e.unheard.Swap(true) {
					e.heard.Ask()
				}
			}
			r.unheard.Store(true)
		}
		return
	}
	for e := range m.entries(group) {
		if e.info.ConnectorID != connector || e.info.AgentID == "" {
			continue
		}
		aside := e.info.AgentID != latest.info.AgentID
		if aside && !e.superseded.Load() && e.heard != nil {
			// Noted, then asked: a live agent answers within a round trip
			// and counts as heard from then on; a dead one's session is
			// closed by the liveness watch some seconds later, not at
			// its idle timeout.
			n, _ := e.heard.Heard()
			e.heardMark.Store(n)
			e.superseded.Store(true)
			if mayTakeNew(e) {
				e.heard.Ask()
			}
		}
		e.superseded.Store(aside)
		e.unheard.Store(false)
	}
}

// heardLook is how often picks look whether an unheard process (see
// supersedeLocked) was heard from, while there is one.
const heardLook = 100 * time.Millisecond

// lookHeard brings back, at most every heardLook, the processes held back
// until heard from (see supersedeLocked) that were, and clears
// Registry.unheard once none is left. Picks call it while that is set.
func (r *Registry) lookHeard() {
	now := tunnel.MonoNow()
	next := r.nextLook.Load()
	if now < next || !r.nextLook.CompareAndSwap(next, now+int64(heardLook)) {
		return
	}
	r.refreshSuperseded("")
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, view := range r.load() {
		for e := range view.entries {
			if e.unheard.Load() && mayTakeNew(e) {
				return
			}
		}
	}
	r.unheard.Store(false)
}

// mayTakeNew reports whether e's session could still be given new
// exchanges by its own state (a superseded or silent one included): it has
// not ended, and neither its agent nor the gateway drains it.
func mayTakeNew(e *regEntry) bool {
	return !isClosed(e.s.Done()) && !e.retired.Load() && !isClosed(e.s.Draining())
}

// supersededConnectors returns the connectors with a superseded session
// in v that has not ended: usually none, found in one pass without
// allocating.
func supersededConnectors(v *groupView) []string {
	var out []string
	for e := range v.entries {
		if e.superseded.Load() && !slices.Contains(out, e.info.ConnectorID) && !isClosed(e.s.Done()) {
			out = append(out, e.info.ConnectorID)
		}
	}
	return out
}

// refreshSuperseded brings the superseded marks of group ("" for all) up
// to date when the latest process of a connector with set-aside sessions
// is no longer the one that set them aside: nothing tells the registry
// when a session ends or drains (see Registry), so Sessions and Count
// look. The marks are stale exactly when the connector's latest session
// that may take new exchanges is set aside: the process chosen last time
// lost its latest session since. That process may keep older live
// sessions, registered before the set-aside process's: they do not make
// it the latest. One pass over the sessions, without allocating, when
// nothing is set aside.
func (r *Registry) refreshSuperseded(group string) {
	type conn struct{ group, connector string }
	var latest map[conn]*regEntry // of a connector with a set-aside session: its latest that may take new exchanges
	for g, view := range r.load() {
		if group != "" && g != group {
			continue
		}
		for e := range view.entries {
			if e.info.AgentID == "" || !e.superseded.Load() || !mayTakeNew(e) {
				continue
			}
			if latest == nil {
				latest = map[conn]*regEntry{}
			}
			latest[conn{g, e.info.ConnectorID}] = nil
		}
	}
	if latest == nil {
		return
	}
	for g, view := range r.load() {
		if group != "" && g != group {
			continue
		}
		for e := range view.entries {
			k := conn{g, e.info.ConnectorID}
			if l, ok := latest[k]; ok && e.info.AgentID != "" && mayTakeNew(e) && (l == nil || e.seq > l.seq) {
				latest[k] = e
			}
		}
	}
	for k, l := range latest {
		if l == nil || l.superseded.Load() {
			r.mu.Lock()
			r.supersedeLocked(r.load(), k.group, k.connector)
			r.mu.Unlock()
		}
	}
}

// Remove drops s from the registry. Exchanges already picked on it keep
// their Picked handle. Removing an unknown session does nothing.
func (r *Registry) Remove(s tunnel.Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(func(e *regEntry) bool { return e.s == s })
}

// purgeDone drops the ended sessions of group; Pick calls it when it comes
// across one.
func (r *Registry) purgeDone(group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.load()
	for e := range old.entries(group) {
		if isClosed(e.s.Done()) {
			r.removeLocked(func(e *regEntry) bool { return isClosed(e.s.Done()) })
			return
		}
	}
}

// removeLocked drops every entry for which drop is true, across groups.
// r.mu must be held.
func (r *Registry) removeLocked(drop func(*regEntry) bool) {
	old := r.load()
	for group, view := range old {
		if view.has(drop) {
			r.store(old, group, view.without(drop))
			old = r.load()
			// The process that set others aside may be gone with the
			// dropped sessions.
			for _, c := range supersededConnectors(old[group]) {
				r.supersedeLocked(old, group, c)
			}
		}
	}
}

// groupMap is the registry's published state: group → its view.
type groupMap map[string]*groupView

// entries yields group's sessions.
func (m groupMap) entries(group string) iter.Seq[*regEntry] {
	return m[group].entries
}

// entries yields the sessions of v (nil: none), agent by agent.
func (v *groupView) entries(yield func(*regEntry) bool) {
	if v == nil {
		return
	}
	for _, av := range v.agents {
		for _, e := range av.sessions {
			if !yield(e) {
				return
			}
		}
	}
}

// has reports whether v holds an entry for which f is true.
func (v *groupView) has(f func(*regEntry) bool) bool {
	for e := range v.entries {
		if f(e) {
			return true
		}
	}
	return false
}

// load returns the current map; nil when empty. Never modify it.
func (r *Registry) load() groupMap {
	if p := r.groups.Load(); p != nil {
		return *p
	}
	return nil
}

// store publishes a copy of old with group's view replaced (or deleted
// when empty). r.mu must be held.
func (r *Registry) store(old groupMap, group string, view *groupView) {
	m := make(map[string]*groupView, len(old)+1)
	for g, v := range old {
		m[g] = v
	}
	if view == nil {
		delete(m, group)
	} else {
		m[group] = view
	}
	r.groups.Store(&m)
}

// with returns a copy of v (nil: empty) with e added. The views of the
// other agents are shared, so that a group of many agents that all
// reconnect at once (a gateway restart) costs copies of pointers only.
func (v *groupView) with(e *regEntry) *groupView {
	if v == nil {
		v = &groupView{}
	}
	nv := &groupView{agents: slices.Clone(v.agents)}
	for i, av := range nv.agents {
		if av.load == e.load {
			nv.agents[i] = &agentView{load: av.load, sessions: append(slices.Clip(av.sessions), e)}
			return nv
		}
	}
	nv.agents = append(nv.agents, &agentView{load: e.load, sessions: []*regEntry{e}})
	return nv
}

// without returns a copy of v without the entries for which drop is true;
// nil when none is left. The views of agents that lose no session are
// shared.
func (v *groupView) without(drop func(*regEntry) bool) *groupView {
	nv := &groupView{agents: make([]*agentView, 0, len(v.agents))}
	for _, av := range v.agents {
		if !slices.ContainsFunc(av.sessions, drop) {
			nv.agents = append(nv.agents, av)
			continue
		}
		var left []*regEntry
		for _, e := range av.sessions {
			if !drop(e) {
				left = append(left, e)
			}
		}
		if len(left) > 0 {
			nv.agents = append(nv.agents, &agentView{load: av.load, sessions: left})
		}
	}
	if len(nv.agents) == 0 {
		return nil
	}
	return nv
}

// Pick chooses a session of group for one exchange and counts the exchange
// as in flight on it until the returned Picked's Done.
//
// It balances over agents, not sessions, since an agent's sessions share
// its fate: one backend that is slow on that agent's side, one host, one
// network path that may die without a word (a NAT mapping that expires, a
// host that loses power), where the exchanges sent over it hang until
// keepalive ends the sessions 25–30 s later. Of two agents drawn at random
// among those with a usable session (not draining, not ended), the one with
// fewer exchanges in flight over all its sessions wins (the power of two
// choices: the load stays even without herding onto one "least loaded"
// agent), and of its sessions one with few in flight (see best). Drawing
// two sessions instead would compare two sessions of one agent about half
// the time, and so keep sending a stalled or slow agent its share of those
// draws however far behind it is: a sixth of all exchanges with two agents
// of two sessions each.
//
// An agent with a silent session (see silentSession) is skipped, its other
// sessions too, while another agent can take the exchange.
//
// exclude (may be nil) is skipped while another usable session exists, so a
// retry after a failed OpenStream goes elsewhere when it can. Without a
// usable session Pick returns an *Error with code no-connector naming group.
func (r *Registry) Pick(group string, exclude tunnel.Session) (*Picked, error) {
	return r.pick(group, exclude, nil)
}

// PickAvoiding is Pick that never takes a session of the agents in avoid
// (their balanceKey): agents whose connection broke an exchange, whose
// other sessions share its fate. Without a usable session of another
// agent it returns the no-connector *Error.
func (r *Registry) PickAvoiding(group string, exclude tunnel.Session, avoid []string) (*Picked, error) {
	return r.pick(group, exclude, avoid)
}

func (r *Registry) pick(group string, exclude tunnel.Session, avoid []string) (*Picked, error) {
	if r.unheard.Load() {
		r.lookHeard()
	}
	view := r.load()[group]
	if view == nil {
		return nil, noConnectorError(group, false)
	}
	e, sawDone := pickFast(view.agents, exclude, avoid)
	if e == nil {
		// Slow path: a draw had no usable session or was avoided, or the
		// group has a single agent. Scan the group once.
		var done bool
		e, done = pickSlow(view.agents, exclude, avoid)
		sawDone = sawDone || done
	}
	if sawDone {
		r.purgeDone(group)
		if e == nil || e.s == exclude {
			// The ended sessions may have been a process's that set
			// another's aside: those serve again (see supersedeLocked).
			// The last resort below looks at the purged view too.
			if view = r.load()[group]; view == nil {
				return nil, noConnectorError(group, false)
			}
			if again, _ := pickSlow(view.agents, exclude, avoid); again != nil && (e == nil || again.s != exclude) {
				e = again
			}
		}
	}
	if e == nil || e.s == exclude {
		// Last resort: a session that a later process of its agent
		// superseded but that is otherwise fine (two processes run from
		// copies of one data_dir, and the later one is excluded, avoided
		// or silent; see supersedeLocked), or
		// whose agent went silent (it may answer again); it is preferred
		// to exclude, which the usual pick falls back to.
		if sup := pickFallback(view.agents, exclude, avoid); sup != nil && (e == nil || sup.s != exclude) {
			e = sup
		}
	}
	if e == nil {
		return nil, noConnectorError(group, !sawDone)
	}
	e.inflight.Add(1)
	e.load.Add(1)
	return &Picked{Session: e.s, e: e}, nil
}

// pickFast draws two distinct agents and returns the best session (see
// best) of the less loaded one when both have one; nil otherwise. It does
// not allocate.
func pickFast(agents []*agentView, exclude tunnel.Session, avoid []string) (e *regEntry, sawDone bool) {
	n := len(agents)
	if n < 2 {
		return nil, false
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	if agents[i].avoided(avoid) || agents[j].avoided(avoid) {
		return nil, false
	}
	a, doneA := agents[i].best(exclude)
	b, doneB := agents[j].best(exclude)
	sawDone = doneA || doneB
	if a == nil || b == nil {
		return nil, sawDone
	}
	return lessLoaded(a, b), sawDone
}

// pickSlow draws two agents with a usable session that is not exclude in
// one pass (reservoir sampling, so each session is checked once and a
// session that drains meanwhile cannot void the draw) and returns the best
// session of the less loaded one. exclude is returned only if nothing else
// is usable. sawDone reports an ended session.
func pickSlow(agents []*agentView, exclude tunnel.Session, avoid []string) (e *regEntry, sawDone bool) {
	var a, b *regEntry
	m := 0 // agents seen with a usable session that is not exclude
	for _, av := range agents {
		if av.avoided(avoid) {
			continue
		}
		c, done := av.best(exclude)
		sawDone = sawDone || done
		if c == nil {
			continue
		}
		m++
		switch {
		case m == 1:
			a = c
		case m == 2:
			b = c
		default:
			// Keep c with probability 2/m in place of one of the draws.
			switch rand.IntN(m) {
			case 0:
				a = c
			case 1:
				b = c
			}
		}
	}
	switch {
	case a == nil:
		return excluded(agents, exclude, avoid), sawDone
	case b == nil:
		return a, sawDone
	}
	if rand.IntN(2) == 0 {
		a, b = b, a // the list order must not break ties
	}
	return lessLoaded(a, b), sawDone
}

// excluded returns exclude's entry when it is usable and its agent not
// avoided; nil otherwise.
func excluded(agents []*agentView, exclude tunnel.Session, avoid []string) *regEntry {
	if exclude == nil {
		return nil
	}
	for _, av := range agents {
		if av.avoided(avoid) {
			continue
		}
		for _, e := range av.sessions {
			if e.s == exclude {
				if ok, _ := usable(e, nil); ok {
					return e
				}
				return nil
			}
		}
	}
	return nil
}

// avoided reports whether the agent is one of avoid (balanceKey).
func (av *agentView) avoided(avoid []string) bool {
	return len(avoid) > 0 && slices.Contains(avoid, av.sessions[0].agent)
}

// scanSessions is the most sessions of one agent that best compares all
// of; of more it compares two drawn at random.
const scanSessions = 4

// best returns one of the agent's usable sessions other than exclude, with
// few exchanges in flight: the one with the fewest, or with more than
// scanSessions sessions the less busy of two drawn at random (the power of
// two choices again, so that a pick costs the same with 64 sessions as
// with 2). nil when none is usable; sawDone reports an ended session.
func (av *agentView) best(exclude tunnel.Session) (e *regEntry, sawDone bool) {
	list := av.sessions
	n := len(list)
	if n > scanSessions {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := list[i], list[j]
		okA, doneA := usable(a, exclude)
		okB, doneB := usable(b, exclude)
		if okA && okB {
			if b.inflight.Load() < a.inflight.Load() {
				return b, doneA || doneB
			}
			return a, doneA || doneB
		}
		// Slow path: scan them all.
	}
	// On a tie the first from a random start wins, so that exchanges that
	// end at once still use every session.
	start := 0
	if n > 1 {
		start = rand.IntN(n)
	}
	var low int64
	silent := false
	for k := range n {
		c := list[(start+k)%n]
		ok, done := usable(c, exclude)
		sawDone = sawDone || done
		if !ok {
			silent = silent || c.isSilent()
			continue
		}
		if l := c.inflight.Load(); e == nil || l < low {
			e, low = c, l
		}
	}
	if silent {
		// One of the agent's sessions went silent: its host or its path
		// may be down, which its other sessions share. They are left to
		// pickFallback until the watch has asked them too (muxtunnel
		// probes the agent's other sessions then), or the agent answers.
		// (Of more than scanSessions, only a draw that met the silent
		// one comes here.)
		return nil, sawDone
	}
	return e, sawDone
}

// lessLoaded returns the session whose agent has fewer exchanges in flight,
// a on a tie: callers pass the two in random order.
func lessLoaded(a, b *regEntry) *regEntry {
	if b.load.Load() < a.load.Load() {
		return b
	}
	return a
}

// pickFallback returns the best of the sessions that the usual pick
// skips but that could carry a new exchange, of an agent not in avoid:
// the answering sessions of an agent with a silent one, superseded ones
// (see supersedeLocked) and silent ones (see silentSession), in
// that order (a silent session's agent may be dead; a superseded one's
// process is alive when it still answers), and of equals the least busy;
// exclude only if there is no other. Nil when there is none.
func pickFallback(agents []*agentView, exclude tunnel.Session, avoid []string) *regEntry {
	var best, excluded *regEntry
	bestRank := 0
	for _, a := range agents {
		if a.avoided(avoid) {
			continue
		}
		tainted := slices.ContainsFunc(a.sessions, (*regEntry).isSilent)
		for _, e := range a.sessions {
			if !mayTakeNew(e) {
				continue
			}
			rank := 0 // an answering session of an agent with a silent one
			switch {
			case e.isSilent():
				rank = 2
			case e.superseded.Load():
				rank = 1
			case !tainted:
				continue // the usual pick's
			}
			if e.s == exclude {
				excluded = e
				continue
			}
			if best == nil || rank < bestRank || rank == bestRank && e.inflight.Load() < best.inflight.Load() {
				best, bestRank = e, rank
			}
		}
	}
	if best == nil {
		return excluded
	}
	return best
}

// usable reports whether e may carry a new exchange; done reports that its
// session has ended.
func usable(e *regEntry, exclude tunnel.Session) (ok, done bool) {
	if isClosed(e.s.Done()) {
		return false, true
	}
	if e.retired.Load() || e.superseded.Load() || isClosed(e.s.Draining()) || e.isSilent() {
		return false, false
	}
	return exclude == nil || e.s != exclude, false
}

// isClosed reports whether ch is closed (or, for a channel carrying values,
// ready), without blocking.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Count is the number of sessions of group that Pick may choose (not
// draining, not ended).
func (r *Registry) Count(group string) int {
	r.refreshSuperseded(group)
	n := 0
	for e := range r.load().entries(group) {
		if ok, _ := usable(e, nil); ok {
			n++
		}
	}
	return n
}

// Sessions returns a snapshot of the registered sessions that have not
// ended, with their exchanges in flight, sorted by group and session id.
func (r *Registry) Sessions() []SessionStatus {
	r.refreshSuperseded("")
	var out []SessionStatus
	for _, view := range r.load() {
		for e := range view.entries {
			if isClosed(e.s.Done()) {
				continue
			}
			out = append(out, SessionStatus{
				SessionInfo: e.info,
				InFlight:    int(e.inflight.Load()),
				Draining:    e.retired.Load() || e.superseded.Load() || isClosed(e.s.Draining()),
				Superseded:  e.superseded.Load(),
				Silent:      e.isSilent(),
			})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Retire stops picking s for new exchanges, as if its agent had announced
// a drain; exchanges already on it go on. It reports whether s was
// registered and not retired before.
func (r *Registry) Retire(s tunnel.Session) bool {
	for e := range r.load().entries(s.Info().Group) {
		if e.s == s {
			return e.retired.CompareAndSwap(false, true)
		}
	}
	return false
}

// Connector returns the registered sessions of a connector that have not
// ended.
func (r *Registry) Connector(id string) []tunnel.Session {
	return r.live(func(info tunnel.SessionInfo) bool { return info.ConnectorID == id })
}

// all returns every registered session that has not ended.
func (r *Registry) all() []tunnel.Session {
	return r.live(func(tunnel.SessionInfo) bool { return true })
}

// live returns the registered sessions that have not ended and keep
// accepts.
func (r *Registry) live(keep func(tunnel.SessionInfo) bool) []tunnel.Session {
	var out []tunnel.Session
	for _, view := range r.load() {
		for e := range view.entries {
			if keep(e.info) && !isClosed(e.s.Done()) {
				out = append(out, e.s)
			}
		}
	}
	return out
}

// waitEnded waits until every one of sessions has ended, or until
// deadline, and returns how many are still up.
func waitEnded(sessions []tunnel.Session, deadline time.Time) int {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for i, s := range sessions {
		select {
		case <-s.Done():
		case <-t.C:
			n := 0
			for _, s := range sessions[i:] {
				if !isClosed(s.Done()) {
					n++
				}
			}
			return n
		}
	}
	return 0
}

// CloseConnector closes every session of a connector and returns how many
// it closed.
func (r *Registry) CloseConnector(id string, reason error) int {
	list := r.Connector(id)
	for _, s := range list {
		s.Close(reason)
	}
	return len(list)
}
