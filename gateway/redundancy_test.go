package gateway

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/clock"
)

// redundancyGateway is a gateway with a fake clock, an observed log and
// one app, web.test, on group "g".
func redundancyGateway(t *testing.T) (*Gateway, *observer.ObservedLogs, *clock.Fake) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	fake := clock.NewFake(time.Unix(1e9, 0))
	g := &Gateway{cfg: Config{Clock: fake}, log: zap.New(core), registry: NewRegistry(), stopped: make(chan struct{})}
	router, err := NewRouter([]Route{{App: "web", Hosts: []string{"web.test"}, Backend: &url.URL{Scheme: "http", Host: "b:80"}, Group: "g"}})
	if err != nil {
		t.Fatal(err)
	}
	g.router.Store(router)
	return g, logs, fake
}

// TestGroupRedundancy: a group an app uses is watched for its agents. A
// single agent is warned about once it has been alone for the grace (not
// at once: agents connect one after another); losing the last agent is an
// error; two again is said once; a group no app uses is never mentioned.
func TestGroupRedundancy(t *testing.T) {
	g, logs, fake := redundancyGateway(t)
	add := func(id, group string) *fakeSession { return addToGroup(t, g, id, group) }
	end := func(s *fakeSession) {
		s.Close(nil)
		g.registry.Remove(s)
		g.groupChanged(s.info.Group)
	}
	lines := func(level zapcore.Level) []observer.LoggedEntry {
		return logs.FilterLevelExact(level).All()
	}
	// Wait for the grace's timer, then let it pass.
	passGrace := func() {
		t.Helper()
		done := make(chan struct{})
		defer close(done)
		if !fake.WaitForWaiter(1, done) {
			t.Fatal("no grace timer")
		}
		fake.Advance(redundancyGrace)
	}
	waitLines := func(level zapcore.Level, n int) []observer.LoggedEntry {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(lines(level)) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d %v lines, want %d: %v", len(lines(level)), level, n, logs.All())
			}
			time.Sleep(time.Millisecond)
		}
		return lines(level)
	}

	a := add("a", "g")
	add("other", "unused") // no app: never mentioned
	if n := logs.Len(); n != 0 {
		t.Fatalf("logged at once: %v", logs.All())
	}
	passGrace()
	warn := waitLines(zapcore.WarnLevel, 1)[0]
	if f := warn.ContextMap(); f["group"] != "g" || f["agent"] != "host-a" || !equalStrings(f["apps"], "web") {
		t.Fatalf("single-agent warning: %v", f)
	}

	b := add("b", "g")
	if info := waitLines(zapcore.InfoLevel, 1)[0]; info.ContextMap()["group"] != "g" || !equalStrings(info.ContextMap()["agents"], "host-a", "host-b") {
		t.Fatalf("recovery line: %v", info.ContextMap())
	}
	// A draining agent does not count: b alone for the grace is warned about.
	a.drain()
	g.groupChanged("g")
	passGrace()
	waitLines(zapcore.WarnLevel, 2)
	end(a)
	end(b)
	if e := waitLines(zapcore.ErrorLevel, 1)[0]; e.ContextMap()["group"] != "g" {
		t.Fatalf("no-agent error: %v", e.ContextMap())
	}
	for _, e := range logs.All() {
		if e.ContextMap()["group"] == "unused" {
			t.Fatalf("a group no app uses was mentioned: %v", e.Message)
		}
	}
	if n := len(lines(zapcore.WarnLevel)); n != 2 {
		t.Fatalf("%d warnings", n)
	}
	// Sessions that end because the gateway stops say nothing.
	c := add("c", "g")
	close(g.stopped)
	end(c)
	if n := len(lines(zapcore.ErrorLevel)); n != 1 {
		t.Fatalf("%d errors after the gateway stopped, want the 1 from before", n)
	}
}

// TestGroupRedundancyAtDrain: the last agent of a group that announces
// its shutdown leaves the group without agents at once (it gets no new
// exchanges), though its session may take the drain grace to end; the
// error used to come only when the session ended.
func TestGroupRedundancyAtDrain(t *testing.T) {
	g, logs, _ := redundancyGateway(t)
	a := newFakeSession("a", "g")
	if _, ok := g.registry.Add(a); !ok {
		t.Fatal("not added")
	}
	g.groupChanged("g")
	ended := make(chan struct{})
	go func() {
		g.awaitEnd(a)
		close(ended)
	}()
	a.drain()
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessageSnippet("connector group has no agents").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no error while the last agent drains: %v", logs.All())
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-ended:
		t.Fatal("awaitEnd returned before the session ended")
	default:
	}
	a.Close(nil)
	<-ended
	close(g.stopped) // ends the single-agent look scheduled at the start
}

// TestGroupRedundancyAfterReload: an app added by a reload on a group whose
// single agent connected before any app used it gets the single-agent
// warning after the grace. The group used to be looked at only when one
// of its sessions started or ended.
func TestGroupRedundancyAfterReload(t *testing.T) {
	g, logs, fake := redundancyGateway(t)
	defer close(g.stopped)
	s := newFakeSession("a", "h")
	if _, ok := g.registry.Add(s); !ok {
		t.Fatal("not added")
	}
	g.groupChanged("h") // no app uses h yet
	err := g.SetRoutes([]Route{
		{App: "web", Hosts: []string{"web.test"}, Backend: &url.URL{Scheme: "http", Host: "b:80"}, Group: "g"},
		{App: "new", Hosts: []string{"new.test"}, Backend: &url.URL{Scheme: "http", Host: "b:80"}, Group: "h"},
	})
	if err != nil {
		t.Fatal(err)
	}
	timeout := make(chan struct{})
	stop := time.AfterFunc(5*time.Second, func() { close(timeout) })
	defer stop.Stop()
	if !fake.WaitForWaiter(1, timeout) {
		t.Fatal("no single-agent look scheduled for the group the reload put an app on")
	}
	fake.Advance(redundancyGrace)
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessageSnippet("connector group has a single agent").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no single-agent warning: %v", logs.All())
		}
		time.Sleep(time.Millisecond)
	}
	if f := logs.FilterMessageSnippet("connector group has a single agent").All()[0].ContextMap(); f["group"] != "h" || !equalStrings(f["apps"], "new") {
		t.Fatalf("warning: %v", f)
	}
}

func equalStrings(v any, want ...string) bool {
	got, ok := v.([]any)
	if !ok || len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestGroupRedundancyGraceRestartsPerSpell: agents restarted one after the
// other leave the group with one agent twice, each time for less than the
// grace. The look scheduled in the first spell must not warn about the
// second one after a few seconds of it; a second spell that lasts the
// whole grace is warned about then.
func TestGroupRedundancyGraceRestartsPerSpell(t *testing.T) {
	g, logs, fake := redundancyGateway(t)
	add := func(id string) *fakeSession {
		s := newFakeSession(id, "g")
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not added")
		}
		g.groupChanged("g")
		return s
	}
	end := func(s *fakeSession) {
		s.Close(nil)
		g.registry.Remove(s)
		g.groupChanged("g")
	}
	warnings := func() int { return logs.FilterLevelExact(zapcore.WarnLevel).Len() }
	// waitLook waits until the scheduled look has either warned or armed
	// its timer again.
	waitLook := func(wantWarnings int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for fake.Waiters() == 0 && warnings() < wantWarnings {
			if time.Now().After(deadline) {
				t.Fatalf("the look neither warned nor waited again: %v", logs.All())
			}
			time.Sleep(time.Millisecond)
		}
	}
	noTimer := make(chan struct{})
	time.AfterFunc(5*time.Second, func() { close(noTimer) })

	a := add("a")
	b := add("b")
	end(b) // b restarts: a alone from t=0
	if !fake.WaitForWaiter(1, noTimer) {
		t.Fatal("no grace timer")
	}
	fake.Advance(20 * time.Second)
	add("b2") // b is back at t=20
	fake.Advance(5 * time.Second)
	end(a) // a restarts: b2 alone from t=25
	fake.Advance(5 * time.Second)
	// t=30: the look scheduled at t=0 comes; b2 has been alone for 5 s.
	waitLook(1)
	if n := warnings(); n != 0 {
		t.Fatalf("warned after 5 s alone: %v", logs.All())
	}
	fake.Advance(redundancyGrace - 5*time.Second)
	// t=55: b2 has been alone for the grace.
	waitLook(1)
	deadline := time.Now().Add(5 * time.Second)
	for warnings() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d warnings after the grace alone, want 1: %v", warnings(), logs.All())
		}
		time.Sleep(time.Millisecond)
	}
	if f := logs.FilterLevelExact(zapcore.WarnLevel).All()[0].ContextMap(); f["agent"] != "host-b2" {
		t.Errorf("warning names %v, want host-b2", f["agent"])
	}
}

// TestGroupRedundancyFlappingAgent: a group whose only agent drops and
// comes back every few seconds (a flapping link, a crash loop) gets the
// no-agents error at once for the first drop, then at most one line per
// degradedLogInterval, which says what the group has then and how many
// lines and drops it stands for. It used to log an error for every drop.
func TestGroupRedundancyFlappingAgent(t *testing.T) {
	g, logs, fake := redundancyGateway(t)
	defer close(g.stopped)
	var n int
	flap := func() {
		n++
		s := newFakeSession(fmt.Sprintf("a%d", n), "g")
		s.info.AgentID = "agent-a" // the same agent, a new session
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not added")
		}
		g.groupChanged("g")
		fake.Advance(2 * time.Second)
		s.Close(nil)
		g.registry.Remove(s)
		g.groupChanged("g")
		fake.Advance(3 * time.Second)
	}
	errorLines := func() []observer.LoggedEntry { return logs.FilterLevelExact(zapcore.ErrorLevel).All() }
	waitErrors := func(want int) []observer.LoggedEntry {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(errorLines()) < want {
			if time.Now().After(deadline) {
				t.Fatalf("%d error lines, want %d: %v", len(errorLines()), want, logs.All())
			}
			fake.Advance(time.Second)
			time.Sleep(time.Millisecond)
		}
		return errorLines()
	}

	start := fake.Now()
	for range 10 { // 10 drops in 50 s
		flap()
	}
	if got := errorLines(); len(got) != 1 {
		t.Fatalf("%d error lines for 10 drops of the only agent within 50 s, want 1 (the first, at once): %v", len(got), logs.All())
	}
	summary := waitErrors(2)[1].ContextMap()
	if summary["group"] != "g" || summary["similar_lines_suppressed"] != int64(9) || summary["agent_losses"] != int64(9) {
		t.Fatalf("summary of the drops held back: %v; want group g, 9 lines and 9 losses", summary)
	}
	// The first drop came 2 s after start.
	if d := fake.Now().Sub(start); d < 2*time.Second+degradedLogInterval {
		t.Errorf("summary %v after the start, want at least %v", d, 2*time.Second+degradedLogInterval)
	}
	// Quiet for an interval: the next drop is said at once again.
	fake.Advance(degradedLogInterval)
	flap()
	if got := errorLines(); len(got) != 3 {
		t.Fatalf("%d error lines after a quiet interval and one more drop, want 3: %v", len(got), logs.All())
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 0 {
		t.Errorf("%d single-agent warnings for spells shorter than the grace", n)
	}

	// Slower: up for longer than the grace (a single-agent warning each
	// time), down for 5 s. Still at most one line per interval, the first
	// at once.
	fake.Advance(degradedLogInterval)
	before := logs.FilterLevelExact(zapcore.WarnLevel).Len() + len(errorLines())
	start = fake.Now()
	for i := range 8 {
		s := newFakeSession(fmt.Sprintf("slow%d", i), "g")
		s.info.AgentID = "agent-a"
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not added")
		}
		g.groupChanged("g")
		for range 35 {
			fake.Advance(time.Second)
			time.Sleep(time.Millisecond) // lets the grace's look run
		}
		s.Close(nil)
		g.registry.Remove(s)
		g.groupChanged("g")
		fake.Advance(5 * time.Second)
	}
	elapsed := fake.Now().Sub(start)
	lines := logs.FilterLevelExact(zapcore.WarnLevel).Len() + len(errorLines()) - before
	if max := 1 + int(elapsed/degradedLogInterval); lines > max {
		t.Errorf("%d warnings and errors in %v of an agent up 35 s, down 5 s; want at most %d: %v", lines, elapsed, max, logs.All())
	}
}

// TestGroupRedundancyFlappingSummaryWhileUp: the summary of no-agents
// errors held back is an error even when the flapping agent is up as it
// is written (it was a single-agent warning then, so alerts on errors
// missed the outages).
func TestGroupRedundancyFlappingSummaryWhileUp(t *testing.T) {
	g, logs, fake := redundancyGateway(t)
	defer close(g.stopped)
	var n int
	up := func() *fakeSession {
		n++
		s := newFakeSession(fmt.Sprintf("a%d", n), "g")
		s.info.AgentID = "agent-a"
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not added")
		}
		g.groupChanged("g")
		return s
	}
	for range 4 { // four drops within 20 s
		s := up()
		fake.Advance(2 * time.Second)
		s.Close(nil)
		g.registry.Remove(s)
		g.groupChanged("g")
		fake.Advance(3 * time.Second)
	}
	up() // up when the summary comes
	errorLines := func() []observer.LoggedEntry { return logs.FilterLevelExact(zapcore.ErrorLevel).All() }
	deadline := time.Now().Add(5 * time.Second)
	for len(errorLines()) < 2 && logs.FilterLevelExact(zapcore.WarnLevel).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no summary: %v", logs.All())
		}
		fake.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	if w := logs.FilterLevelExact(zapcore.WarnLevel).All(); len(w) != 0 {
		t.Fatalf("the summary of 3 held no-agents errors came as a warning: %s %v", w[0].Message, w[0].ContextMap())
	}
	got := errorLines()
	if len(got) != 2 || got[1].Message != msgLostMeanwhile || got[1].ContextMap()["agent_losses"] != int64(3) {
		t.Fatalf("error lines %v; want the first drop's and a summary of 3 losses", got)
	}
}

// TestSingleAgentLookBeforeGroupChanged: a single-agent look that runs
// while a session is registered but its groupChanged has not run yet (the
// registry shows one agent, the gateway's view none: a flapping agent's
// next session) does not warn: the spell has not begun, and that
// groupChanged schedules its own look with the full grace. It warned at
// once before (TestGroupRedundancyFlappingAgent failed once in CI: '1
// single-agent warnings for spells shorter than the grace').
func TestSingleAgentLookBeforeGroupChanged(t *testing.T) {
	g, logs, fake := redundancyGateway(t)
	defer close(g.stopped)
	if _, ok := g.registry.Add(newFakeSession("a", "g")); !ok {
		t.Fatal("not added")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.warnSingle("g") // a look scheduled by an earlier spell
	}()
	if !fake.WaitForWaiter(1, done) {
		t.Fatal("the look returned before waiting for the grace")
	}
	fake.Advance(redundancyGrace)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the look still waits after the grace, with the gateway's view of the group at no agent")
	}
	if w := logs.FilterMessage(msgSingle).All(); len(w) != 0 {
		t.Fatalf("%d single-agent warnings from a look that ran before the session's groupChanged: %v", len(w), w)
	}
}

// addToGroup registers a fake session id of group on g's registry and
// lets the gateway look at the group, as a session's start does.
func addToGroup(t *testing.T, g *Gateway, id, group string) *fakeSession {
	t.Helper()
	s := newFakeSession(id, group)
	if _, ok := g.registry.Add(s); !ok {
		t.Fatal("not added")
	}
	g.groupChanged(group)
	return s
}
