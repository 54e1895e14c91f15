package gateway

import (
	"math/rand/v2"
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
	// groups maps a connector group to its sessions. The map and its slices
	// are never modified once stored: writers build copies under mu and swap
	// the pointer, so Pick reads without a lock. nil means empty.
	groups atomic.Pointer[map[string][]*regEntry]
}

// regEntry is one session in the registry.
type regEntry struct {
	s        tunnel.Session
	info     tunnel.SessionInfo // s.Info() when added
	inflight atomic.Int64       // exchanges picked and not yet Done
	retired  atomic.Bool        // the gateway drains it (see Retire); never unset
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
	}
}

// SessionStatus is a snapshot of one session for the admin surface.
type SessionStatus struct {
	tunnel.SessionInfo
	InFlight int  // exchanges on the session right now
	Draining bool // the agent announced its shutdown, or the gateway retired it
}

// NewRegistry returns an empty Registry (the zero value works as well).
func NewRegistry() *Registry { return new(Registry) }

// Add registers s under its group (s.Info().Group). Adding a session twice,
// or one that has already ended, does nothing. It returns false, having
// added nothing, when s's connector already holds MaxPerConnector live
// sessions; held is that number.
func (r *Registry) Add(s tunnel.Session) (held int, ok bool) {
	if isClosed(s.Done()) {
		return 0, true
	}
	info := s.Info()
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.load()
	for _, e := range old[info.Group] {
		if e.s == s {
			return 0, true
		}
		if info.ConnectorID != "" && e.info.ConnectorID == info.ConnectorID && !isClosed(e.s.Done()) {
			held++
		}
	}
	if r.MaxPerConnector > 0 && held >= r.MaxPerConnector {
		return held, false
	}
	list := make([]*regEntry, 0, len(old[info.Group])+1)
	list = append(list, old[info.Group]...)
	list = append(list, &regEntry{s: s, info: info})
	r.store(old, info.Group, list)
	return held, true
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
	for _, e := range old[group] {
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
	for group, entries := range old {
		var keep []*regEntry
		changed := false
		for i, e := range entries {
			if drop(e) {
				if !changed {
					keep = append(make([]*regEntry, 0, len(entries)-1), entries[:i]...)
					changed = true
				}
				continue
			}
			if changed {
				keep = append(keep, e)
			}
		}
		if changed {
			r.store(old, group, keep)
			old = r.load()
		}
	}
}

// load returns the current map; nil when empty. Never modify it.
func (r *Registry) load() map[string][]*regEntry {
	if p := r.groups.Load(); p != nil {
		return *p
	}
	return nil
}

// store publishes a copy of old with group's list replaced (or deleted when
// empty). r.mu must be held.
func (r *Registry) store(old map[string][]*regEntry, group string, list []*regEntry) {
	m := make(map[string][]*regEntry, len(old)+1)
	for g, l := range old {
		m[g] = l
	}
	if len(list) == 0 {
		delete(m, group)
	} else {
		m[group] = list
	}
	r.groups.Store(&m)
}

// Pick chooses a session of group for one exchange and counts the exchange
// as in flight on it until the returned Picked's Done. It uses the power of
// two choices: of two sessions drawn at random among the usable ones (not
// draining, not ended), the one with fewer exchanges in flight wins, which
// keeps the load even without herding onto one "least loaded" session.
//
// exclude (may be nil) is skipped while another usable session exists, so a
// retry after a failed OpenStream goes elsewhere when it can. Without a
// usable session Pick returns an *Error with code no-connector naming group.
func (r *Registry) Pick(group string, exclude tunnel.Session) (*Picked, error) {
	list := r.load()[group]
	e, sawDone := pickFast(list, exclude)
	if e == nil {
		// Slow path: a draw was draining, ended or excluded, or the group
		// has a single session. Scan the group once.
		e, sawDone = pickSlow(list, exclude)
	}
	if sawDone {
		r.purgeDone(group)
	}
	if e == nil {
		return nil, noConnectorError(group, len(list) > 0 && !sawDone)
	}
	e.inflight.Add(1)
	return &Picked{Session: e.s, e: e}, nil
}

// pickFast draws two distinct sessions and returns the less loaded one when
// both are usable and not excluded; nil otherwise. It does not allocate.
func pickFast(list []*regEntry, exclude tunnel.Session) (e *regEntry, sawDone bool) {
	n := len(list)
	if n < 2 {
		return nil, false
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := list[i], list[j]
	okA, doneA := usable(a, exclude)
	okB, doneB := usable(b, exclude)
	if !okA || !okB {
		return nil, doneA || doneB
	}
	return lessLoaded(a, b), false
}

// pickSlow draws two usable sessions in one pass (reservoir sampling, so
// each session is checked once and a session that drains meanwhile cannot
// void the draw) and returns the less loaded one. exclude is returned only
// if nothing else is usable. sawDone reports an ended session in list.
func pickSlow(list []*regEntry, exclude tunnel.Session) (e *regEntry, sawDone bool) {
	var a, b, excluded *regEntry
	m := 0 // usable, not excluded sessions seen
	for _, c := range list {
		ok, done := usable(c, nil)
		sawDone = sawDone || done
		if !ok {
			continue
		}
		if exclude != nil && c.s == exclude {
			excluded = c
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
		return excluded, sawDone
	case b == nil:
		return a, sawDone
	}
	if rand.IntN(2) == 0 {
		a, b = b, a // the list order must not break ties
	}
	return lessLoaded(a, b), sawDone
}

// lessLoaded returns the entry with fewer exchanges in flight, a on a tie:
// callers pass the two in random order.
func lessLoaded(a, b *regEntry) *regEntry {
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

// usable reports whether e may carry a new exchange; done reports that its
// session has ended.
func usable(e *regEntry, exclude tunnel.Session) (ok, done bool) {
	if isClosed(e.s.Done()) {
		return false, true
	}
	if e.retired.Load() || isClosed(e.s.Draining()) {
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
	n := 0
	for _, e := range r.load()[group] {
		if ok, _ := usable(e, nil); ok {
			n++
		}
	}
	return n
}

// Sessions returns a snapshot of the registered sessions that have not
// ended, with their exchanges in flight, sorted by group and session id.
func (r *Registry) Sessions() []SessionStatus {
	var out []SessionStatus
	for _, entries := range r.load() {
		for _, e := range entries {
			if isClosed(e.s.Done()) {
				continue
			}
			out = append(out, SessionStatus{
				SessionInfo: e.info,
				InFlight:    int(e.inflight.Load()),
				Draining:    e.retired.Load() || isClosed(e.s.Draining()),
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
	for _, e := range r.load()[s.Info().Group] {
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
	for _, entries := range r.load() {
		for _, e := range entries {
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
