package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/tunnel"
)

// fakeSession is a tunnel.Session whose draining and end the test controls.
type fakeSession struct {
	info      tunnel.SessionInfo
	draining  chan struct{}
	done      chan struct{}
	drainOnce sync.Once
	doneOnce  sync.Once
}

func newFakeSession(id, group string) *fakeSession {
	return &fakeSession{
		info:     tunnel.SessionInfo{ID: id, AgentID: "agent-" + id, AgentName: "host-" + id, Group: group, Transport: "grpc"},
		draining: make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (s *fakeSession) OpenStream(ctx context.Context) (tunnel.Stream, error) {
	return nil, errors.New("fake session: no streams")
}
func (s *fakeSession) Info() tunnel.SessionInfo  { return s.info }
func (s *fakeSession) Draining() <-chan struct{} { return s.draining }
func (s *fakeSession) Done() <-chan struct{}     { return s.done }
func (s *fakeSession) Close(error)               { s.doneOnce.Do(func() { close(s.done) }) }
func (s *fakeSession) drain()                    { s.drainOnce.Do(func() { close(s.draining) }) }
func (s *fakeSession) String() string            { return s.info.ID }

// entries returns the registry's list for group (test access to internals).
func (r *Registry) entries(group string) []*regEntry { return slices.Collect(r.load().entries(group)) }

// setInFlight sets e's exchanges in flight to n, as n picks held would,
// and its agent's with them.
func setInFlight(e *regEntry, n int) {
	e.load.Add(int64(n) - e.inflight.Swap(int64(n)))
}

func inflight(r *Registry, s tunnel.Session) int {
	for _, st := range r.Sessions() {
		if st.ID == s.Info().ID {
			return st.InFlight
		}
	}
	return -1
}

func mustPick(t *testing.T, r *Registry, group string, exclude tunnel.Session) *Picked {
	t.Helper()
	p, err := r.Pick(group, exclude)
	if err != nil {
		t.Fatalf("Pick(%q): %v", group, err)
	}
	return p
}

func TestRegistryNoConnector(t *testing.T) {
	a := newFakeSession("a", "other")
	drained := newFakeSession("d", "drained")
	drained.drain()
	ended := newFakeSession("e", "ended")
	tests := []struct {
		name     string
		setup    func(*Registry)
		group    string
		wantText string
	}{
		{"zero registry", func(*Registry) {}, "default", `group "default" is connected`},
		{"other group only", func(r *Registry) { r.Add(a) }, "default", `group "default" is connected`},
		{"all draining", func(r *Registry) { r.Add(drained) }, "drained", `group "drained" is shutting down`},
		{"all ended", func(r *Registry) { r.Add(ended); ended.Close(nil) }, "ended", `group "ended" is connected`},
		{"removed", func(r *Registry) { r.Add(a); r.Remove(a) }, "other", `group "other" is connected`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Registry // the zero value works
			tt.setup(&r)
			p, err := r.Pick(tt.group, nil)
			if p != nil || err == nil {
				t.Fatalf("Pick = %v, %v; want an error", p, err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeNoConnector || e.Status != 503 {
				t.Fatalf("error %#v, want *Error no-connector 503", err)
			}
			if !strings.Contains(e.Msg, tt.wantText) {
				t.Errorf("message %q lacks %q", e.Msg, tt.wantText)
			}
			if got := ErrorFor(fmt.Errorf("relay: %w", err)); got != e {
				t.Errorf("ErrorFor does not return the registry's error")
			}
		})
	}
}

func TestRegistryPickCountsInFlight(t *testing.T) {
	r := NewRegistry()
	a := newFakeSession("a", "g")
	r.Add(a)
	p1 := mustPick(t, r, "g", nil)
	p2 := mustPick(t, r, "g", nil)
	if p1.Session != a || p2.Session != a {
		t.Fatalf("picked %v, %v; want a", p1.Session, p2.Session)
	}
	if n := inflight(r, a); n != 2 {
		t.Fatalf("in flight %d, want 2", n)
	}
	p1.Done()
	p1.Done() // only the first Done counts
	if n := inflight(r, a); n != 1 {
		t.Fatalf("in flight after Done %d, want 1", n)
	}
	p2.Done()
	if n := inflight(r, a); n != 0 {
		t.Fatalf("in flight after both Done %d, want 0", n)
	}
}

// TestRegistryPrefersLessLoaded: with two sessions both are drawn every
// time, so the one with fewer exchanges in flight always wins.
func TestRegistryPrefersLessLoaded(t *testing.T) {
	tests := []struct {
		loadA, loadB int
		picks        int
		wantA        int // picks that must go to a
	}{
		{loadA: 10, loadB: 0, picks: 10, wantA: 0},
		{loadA: 0, loadB: 5, picks: 5, wantA: 5},
		{loadA: 3, loadB: 1, picks: 2, wantA: 0},
		{loadA: 1, loadB: 100, picks: 50, wantA: 50},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%d", tt.loadA, tt.loadB), func(t *testing.T) {
			r := NewRegistry()
			a, b := newFakeSession("a", "g"), newFakeSession("b", "g")
			r.Add(a)
			r.Add(b)
			for _, e := range r.entries("g") {
				if e.s == a {
					setInFlight(e, tt.loadA)
				} else {
					setInFlight(e, tt.loadB)
				}
			}
			gotA := 0
			for range tt.picks {
				if mustPick(t, r, "g", nil).Session == a {
					gotA++
				}
			}
			if gotA != tt.wantA {
				t.Errorf("a picked %d of %d times, want %d", gotA, tt.picks, tt.wantA)
			}
		})
	}
}

// TestRegistryEvensLoad holds every pick: the power of two choices keeps the
// sessions' loads close together.
func TestRegistryEvensLoad(t *testing.T) {
	for _, n := range []int{2, 3, 4, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := NewRegistry()
			for i := range n {
				r.Add(newFakeSession(fmt.Sprint("s", i), "g"))
			}
			held := make([]*Picked, 0, 100*n)
			for range 100 * n {
				held = append(held, mustPick(t, r, "g", nil))
			}
			lo, hi := 1<<30, 0
			for _, st := range r.Sessions() {
				lo, hi = min(lo, st.InFlight), max(hi, st.InFlight)
			}
			// Two choices keep the spread at a few exchanges (over 20,000
			// runs with 8 sessions the worst was 8); one random choice per
			// pick would spread the loads by about 30.
			if hi-lo > 15 {
				t.Errorf("loads range from %d to %d", lo, hi)
			}
			for _, p := range held {
				p.Done()
			}
			for _, st := range r.Sessions() {
				if st.InFlight != 0 {
					t.Errorf("%s: %d in flight after all Done", st.ID, st.InFlight)
				}
			}
		})
	}
}

// TestRegistrySpreadsIdlePicks: picks that end at once still reach every
// session.
func TestRegistrySpreadsIdlePicks(t *testing.T) {
	r := NewRegistry()
	const n = 4
	for i := range n {
		r.Add(newFakeSession(fmt.Sprint("s", i), "g"))
	}
	count := map[tunnel.Session]int{}
	for range 4000 {
		p := mustPick(t, r, "g", nil)
		count[p.Session]++
		p.Done()
	}
	for s, c := range count {
		if c < 500 {
			t.Errorf("%v picked %d of 4000 times", s, c)
		}
	}
	if len(count) != n {
		t.Errorf("%d sessions picked, want %d", len(count), n)
	}
}

func TestRegistrySkipsDrainingAndEnded(t *testing.T) {
	tests := []struct {
		name      string
		sessions  int
		drain     []int // sessions to mark draining
		retire    []int // sessions the gateway retires (Registry.Retire)
		end       []int // sessions to end
		wantPick  []int // sessions Pick may return
		wantCount int
		wantListN int // sessions left in the registry after the picks
	}{
		{"one draining of two", 2, []int{0}, nil, nil, []int{1}, 1, 2},
		{"two draining of three", 3, []int{0, 2}, nil, nil, []int{1}, 1, 3},
		{"one retired of two", 2, nil, []int{1}, nil, []int{0}, 1, 2},
		{"one ended of two", 2, nil, nil, []int{1}, []int{0}, 1, 1},
		{"mixed", 5, []int{0}, []int{4}, []int{1, 2}, []int{3}, 1, 3},
		{"none", 3, nil, nil, nil, []int{0, 1, 2}, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			ss := make([]*fakeSession, tt.sessions)
			for i := range ss {
				ss[i] = newFakeSession(fmt.Sprint("s", i), "g")
				r.Add(ss[i])
			}
			for _, i := range tt.drain {
				ss[i].drain()
			}
			for _, i := range tt.retire {
				if !r.Retire(ss[i]) || r.Retire(ss[i]) {
					t.Fatalf("Retire(%d) does not report the first call alone", i)
				}
			}
			for _, i := range tt.end {
				ss[i].Close(nil)
			}
			if got := r.Count("g"); got != tt.wantCount {
				t.Errorf("Count = %d, want %d", got, tt.wantCount)
			}
			allowed := map[tunnel.Session]bool{}
			for _, i := range tt.wantPick {
				allowed[ss[i]] = true
			}
			for range 200 {
				p := mustPick(t, r, "g", nil)
				if !allowed[p.Session] {
					t.Fatalf("picked %v", p.Session)
				}
				p.Done()
			}
			if got := len(r.entries("g")); got != tt.wantListN {
				t.Errorf("%d sessions left in the registry, want %d (ended ones purged)", got, tt.wantListN)
			}
			statuses := r.Sessions()
			if len(statuses) != tt.sessions-len(tt.end) {
				t.Errorf("Sessions() lists %d, want %d", len(statuses), tt.sessions-len(tt.end))
			}
			for _, st := range statuses {
				wantDrain := false
				for _, i := range append(tt.drain, tt.retire...) {
					wantDrain = wantDrain || ss[i].info.ID == st.ID
				}
				if st.Draining != wantDrain {
					t.Errorf("%s: Draining %v, want %v", st.ID, st.Draining, wantDrain)
				}
			}
		})
	}
}

func TestRegistryExclude(t *testing.T) {
	tests := []struct {
		name     string
		sessions int
		drain    []int
		exclude  int // index, -1 for an unknown session
		wantPick []int
	}{
		{"two", 2, nil, 0, []int{1}},
		{"three", 3, nil, 1, []int{0, 2}},
		{"only the excluded one", 1, nil, 0, []int{0}},
		{"other draining", 2, []int{1}, 0, []int{0}},
		{"excluded draining", 2, []int{0}, 0, []int{1}},
		{"unknown", 2, nil, -1, []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			ss := make([]*fakeSession, tt.sessions)
			for i := range ss {
				ss[i] = newFakeSession(fmt.Sprint("s", i), "g")
				r.Add(ss[i])
			}
			for _, i := range tt.drain {
				ss[i].drain()
			}
			var exclude tunnel.Session = newFakeSession("stranger", "g")
			if tt.exclude >= 0 {
				exclude = ss[tt.exclude]
			}
			allowed := map[tunnel.Session]bool{}
			for _, i := range tt.wantPick {
				allowed[ss[i]] = true
			}
			seen := map[tunnel.Session]bool{}
			for range 200 {
				p := mustPick(t, r, "g", exclude)
				if !allowed[p.Session] {
					t.Fatalf("picked %v", p.Session)
				}
				seen[p.Session] = true
				p.Done()
			}
			if len(seen) != len(allowed) {
				t.Errorf("picked %d distinct sessions, want %d", len(seen), len(allowed))
			}
		})
	}
}

func TestRegistryAddRemove(t *testing.T) {
	r := NewRegistry()
	a, b, c := newFakeSession("a", "g1"), newFakeSession("b", "g1"), newFakeSession("c", "g2")
	r.Add(a)
	r.Add(a) // twice: no duplicate
	r.Add(b)
	r.Add(c)
	ended := newFakeSession("x", "g1")
	ended.Close(nil)
	r.Add(ended) // already ended: ignored
	if r.Count("g1") != 2 || r.Count("g2") != 1 || len(r.entries("g1")) != 2 {
		t.Fatalf("counts g1 %d, g2 %d", r.Count("g1"), r.Count("g2"))
	}
	got := r.Sessions()
	ids := make([]string, len(got))
	for i, st := range got {
		ids[i] = st.Group + "/" + st.ID
	}
	if strings.Join(ids, ",") != "g1/a,g1/b,g2/c" {
		t.Errorf("Sessions() = %v", ids)
	}
	if got[0].SessionInfo != a.info {
		t.Errorf("Sessions()[0] = %+v, want %+v", got[0].SessionInfo, a.info)
	}

	held := mustPick(t, r, "g1", b) // a
	r.Remove(a)
	r.Remove(a)                            // twice: no-op
	r.Remove(newFakeSession("zz", "none")) // unknown: no-op
	for range 50 {
		p := mustPick(t, r, "g1", nil)
		if p.Session != b {
			t.Fatalf("picked %v after removing a", p.Session)
		}
		p.Done()
	}
	held.Done() // a handle outlives its session's removal
	r.Remove(b)
	if _, err := r.Pick("g1", nil); err == nil {
		t.Fatal("Pick after removing every g1 session succeeded")
	}
	if _, ok := r.load()["g1"]; ok {
		t.Error("empty group left in the map")
	}
	if p := mustPick(t, r, "g2", nil); p.Session != c {
		t.Errorf("g2 picked %v", p.Session)
	}
}

// TestRegistryConcurrent runs adders, removers, pickers, drainers and
// readers at once under the race detector; every pick must find a usable
// session of its group and the in-flight counts must return to zero.
func TestRegistryConcurrent(t *testing.T) {
	r := NewRegistry()
	const groups = 3
	stable := make([]*fakeSession, groups)
	for g := range groups {
		stable[g] = newFakeSession(fmt.Sprint("stable-", g), fmt.Sprint("g", g))
		r.Add(stable[g])
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Churn: sessions come, drain, end and go.
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s := newFakeSession(fmt.Sprint("churn-", w, "-", i), fmt.Sprint("g", i%groups))
				r.Add(s)
				switch i % 3 {
				case 0:
					s.drain()
					r.Remove(s)
				case 1:
					s.Close(nil) // Pick purges it
				case 2:
					s.Close(nil)
					r.Remove(s)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = r.Sessions()
				_ = r.Count("g0")
			}
		})
	}
	var pickers sync.WaitGroup
	for w := range 16 {
		pickers.Go(func() {
			group := fmt.Sprint("g", w%groups)
			var last tunnel.Session
			for range 2000 {
				p, err := r.Pick(group, last)
				if err != nil {
					t.Errorf("Pick(%s): %v", group, err)
					return
				}
				if got := p.Session.Info().Group; got != group {
					t.Errorf("Pick(%s) returned a session of %s", group, got)
				}
				last = p.Session
				p.Done()
			}
		})
	}
	pickers.Wait()
	close(stop)
	wg.Wait()
	for _, st := range r.Sessions() {
		if st.InFlight != 0 {
			t.Errorf("%s: %d in flight", st.ID, st.InFlight)
		}
	}
}

func TestRegistryPickAllocs(t *testing.T) {
	r := NewRegistry()
	for i := range 4 {
		r.Add(newFakeSession(fmt.Sprint("s", i), "g"))
	}
	allocs := testing.AllocsPerRun(1000, func() {
		p, err := r.Pick("g", nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Done()
	})
	if allocs > 1 {
		t.Errorf("Pick: %v allocations, want at most 1 (the Picked handle)", allocs)
	}
}

func BenchmarkRegistryPick(b *testing.B) {
	for _, n := range []int{1, 2, 8, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			r := NewRegistry()
			for i := range n {
				r.Add(newFakeSession(fmt.Sprint("s", i), "g"))
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p, err := r.Pick("g", nil)
					if err != nil {
						b.Fatal(err)
					}
					p.Done()
				}
			})
		})
	}
}

// TestRegistryMaxPerConnector: Add refuses a session of a connector that
// already holds MaxPerConnector live ones; other connectors, and sessions
// that have ended, do not count.
func TestRegistryMaxPerConnector(t *testing.T) {
	r := &Registry{MaxPerConnector: 2}
	conn := func(id, connector string) *fakeSession {
		s := newFakeSession(id, "g")
		s.info.ConnectorID = connector
		return s
	}
	a1, a2, a3, b1 := conn("a1", "A"), conn("a2", "A"), conn("a3", "A"), conn("b1", "B")
	for _, s := range []*fakeSession{a1, a2, b1} {
		if _, ok := r.Add(s); !ok {
			t.Fatalf("%s refused", s)
		}
	}
	if held, ok := r.Add(a3); ok || held != 2 {
		t.Fatalf("third session of connector A: held %d, ok %v; want refused with 2 held", held, ok)
	}
	if n := len(r.entries("g")); n != 3 {
		t.Fatalf("%d sessions registered, want 3", n)
	}
	a1.Close(nil) // ended, not yet removed
	if _, ok := r.Add(a3); !ok {
		t.Fatal("a session of connector A refused after one of its two ended")
	}
}

// TestAddSessionRefusesOverLimit: the gateway closes a session over the
// per-connector bound, with a logged reason, and keeps the others.
func TestAddSessionRefusesOverLimit(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	st, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.AddConnector(context.Background(), store.Connector{ID: "c1", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{registry: NewRegistry(), log: zap.New(core), store: st}
	g.registry.MaxPerConnector = maxSessionsPerConnector
	var sessions []*fakeSession
	for i := range maxSessionsPerConnector + 1 {
		s := newFakeSession(fmt.Sprintf("s%d", i), "g")
		s.info.ConnectorID = "c1"
		sessions = append(sessions, s)
		g.addSession(s)
	}
	last := sessions[maxSessionsPerConnector]
	if !isClosed(last.Done()) {
		t.Fatalf("session %d of one connector was kept", maxSessionsPerConnector+1)
	}
	if isClosed(sessions[0].Done()) {
		t.Fatal("a session within the bound was closed")
	}
	if n := len(g.registry.entries("g")); n != maxSessionsPerConnector {
		t.Fatalf("%d sessions registered, want %d", n, maxSessionsPerConnector)
	}
	w := logs.FilterMessage("agent refused: too many sessions for one connector").All()
	if len(w) != 1 || w[0].ContextMap()["connector"] != "c1" {
		t.Fatalf("warnings: %v", logs.All())
	}
}
