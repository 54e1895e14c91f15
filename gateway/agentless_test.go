package gateway

import (
	"context"
	"crypto/tls"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// TestAgentlessGroupWarned: a group that an app uses and that has had no
// agent at all by the end of the grace after the first session (a typo in
// the app's group) is warned about once, naming its apps and the groups
// that do have agents; so is one of an app that a reload adds, after its
// own grace. A group that had an agent and lost it is not (it got the
// no-agents error). Nothing used to be said of such a group: its users
// just got 503 no-connector.
func TestAgentlessGroupWarned(t *testing.T) {
	g, logs, _ := redundancyGateway(t) // app web on group g
	defer close(g.stopped)
	var looks []func()
	g.groups.agentlessAfter = func(d time.Duration, f func()) {
		if d != agentlessGrace {
			t.Errorf("look after %v, want the grace %v", d, agentlessGrace)
		}
		looks = append(looks, f)
	}
	fire := func() {
		t.Helper()
		if len(looks) != 1 {
			t.Fatalf("%d looks scheduled, want 1", len(looks))
		}
		f := looks[0]
		looks = nil
		f()
	}
	warnings := func() []observer.LoggedEntry { return logs.FilterMessageSnippet("has had no agent").All() }
	add := func(id, group string) *fakeSession { return addToGroup(t, g, id, group) }

	add("a", "default") // the agents' group, which no app names (web says g)
	fire()
	w := warnings()
	if len(w) != 1 {
		t.Fatalf("%d agentless warnings, want 1 (group g): %v", len(w), logs.All())
	}
	if f := w[0].ContextMap(); f["group"] != "g" || !equalStrings(f["apps"], "web") || !equalStrings(f["groups_with_agents"], "default") {
		t.Errorf("warning fields %v", f)
	}

	had := add("b", "h") // h will have had an agent
	err := g.SetRoutes([]Route{
		{App: "web", Hosts: []string{"web.test"}, Backend: &url.URL{Scheme: "http", Host: "b:80"}, Group: "g"},
		{App: "wiki", Hosts: []string{"wiki.test"}, Backend: &url.URL{Scheme: "http", Host: "b:80"}, Group: "h"},
		{App: "new", Hosts: []string{"new.test"}, Backend: &url.URL{Scheme: "http", Host: "b:80"}, Group: "typo"},
	})
	if err != nil {
		t.Fatal(err)
	}
	had.Close(nil)
	g.registry.Remove(had)
	g.groupChanged("h")
	fire()
	w = warnings()
	if len(w) != 2 {
		t.Fatalf("%d agentless warnings, want 2 (g, then typo): %v", len(w), logs.All())
	}
	if f := w[1].ContextMap(); f["group"] != "typo" || !equalStrings(f["apps"], "new") {
		t.Errorf("warning fields %v", f)
	}
}

// servedForAgentless starts a gateway (Listen, Serve) with apps web and docs
// on group g and wiki on group h, whose agentless looks are sent on the
// channel returned instead of run after the grace; it returns once the
// gateway logged that it listens. stop ends Serve.
func servedForAgentless(t *testing.T) (g *Gateway, logs *observer.ObservedLogs, looks <-chan func(), stop func()) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	listening := make(chan struct{})
	var once sync.Once
	log := zap.New(zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
		if e.Message == "gateway listening" {
			once.Do(func() { close(listening) })
		}
		return nil
	}))
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	backend := &url.URL{Scheme: "http", Host: "b:80"}
	g, err = New(Config{
		PublicAddr: "127.0.0.1:0", TunnelAddr: "127.0.0.1:0",
		TunnelTLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Log: log,
		Routes: []Route{
			{App: "web", Hosts: []string{"web.test"}, Backend: backend, Group: "g"},
			{App: "wiki", Hosts: []string{"wiki.test"}, Backend: backend, Group: "h"},
			{App: "docs", Hosts: []string{"docs.test"}, Backend: backend, Group: "g"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	scheduled := make(chan func(), 4)
	g.groups.agentlessAfter = func(d time.Duration, f func()) {
		if d != agentlessGrace {
			t.Errorf("look after %v, want the grace %v", d, agentlessGrace)
		}
		select {
		case scheduled <- f:
		default:
			t.Error("more than 4 agentless looks scheduled")
		}
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	stop = func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	select {
	case <-listening:
	case err := <-served:
		t.Fatalf("Serve ended before listening: %v", err)
	}
	return g, logs, scheduled, stop
}

// startLook is the look that Serve scheduled by the time it logged that it
// listens.
func startLook(t *testing.T, looks <-chan func()) func() {
	t.Helper()
	select {
	case f := <-looks:
		return f
	default:
		t.Fatal("no agentless look scheduled at the gateway's start: a gateway whose agents never connect " +
			"(wrong address, firewall, not enrolled) never says that its apps have no agent")
		return nil
	}
}

// TestNoAgentSinceStartWarned: a gateway that no agent of any group
// reaches (all dial a wrong address, a firewall drops them, their
// enrollment expired) says so agentlessGrace after its start, in one line
// naming every group an app uses, their apps, the tunnel address and what
// to check. Nothing did: warnAgentless's look was scheduled by the first
// session only, and there was none, so its users just got 503 no-connector.
func TestNoAgentSinceStartWarned(t *testing.T) {
	g, logs, looks, stop := servedForAgentless(t)
	defer stop()
	startLook(t, looks)()
	w := logs.FilterMessageSnippet("no agent has connected since the gateway started").All()
	if len(w) != 1 {
		t.Fatalf("%d no-agent-yet warnings, want 1: %v", len(w), logs.All())
	}
	f := w[0].ContextMap()
	if w[0].Level != zap.WarnLevel || !equalStrings(f["groups"], "g", "h") || !equalStrings(f["apps"], "docs", "web", "wiki") ||
		f["tunnel"] != g.TunnelAddr().String() {
		t.Errorf("warning %v %v, want a warning with groups [g h], apps [docs web wiki], tunnel %v", w[0].Level, f, g.TunnelAddr())
	}
	if n := len(logs.FilterMessageSnippet("has had no agent").All()); n != 0 {
		t.Errorf("%d per-group agentless warnings besides: %v", n, logs.All())
	}
	// A reload that keeps the groups says nothing more of them; one that
	// adds a group without agents gets its own look, as before.
	backend := &url.URL{Scheme: "http", Host: "b:80"}
	if err := g.SetRoutes([]Route{
		{App: "web", Hosts: []string{"web.test"}, Backend: backend, Group: "g"},
		{App: "wiki", Hosts: []string{"wiki.test"}, Backend: backend, Group: "h"},
		{App: "new", Hosts: []string{"new.test"}, Backend: backend, Group: "typo"},
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-looks:
		f()
	default:
		t.Fatal("no look scheduled after a reload added group typo")
	}
	w = logs.FilterMessageSnippet("has had no agent").All()
	if len(w) != 1 || w[0].ContextMap()["group"] != "typo" {
		t.Errorf("after the reload: %v, want one agentless warning, of group typo", w)
	}
}

// TestStartLookLeavesItToFirstSession: once a session came before the
// start's look, that look says nothing: the first session's own look,
// agentlessGrace after it, names the groups that still have no agent (as
// before), so that agents that come back one after another after a restart
// all get the full grace from the first.
func TestStartLookLeavesItToFirstSession(t *testing.T) {
	g, logs, looks, stop := servedForAgentless(t)
	defer stop()
	atStart := startLook(t, looks)
	s := newFakeSession("a", "g")
	if _, ok := g.registry.Add(s); !ok {
		t.Fatal("not added")
	}
	defer func() {
		s.Close(nil)
		g.registry.Remove(s)
	}()
	g.groupChanged("g")
	var afterSession func()
	select {
	case afterSession = <-looks:
	default:
		t.Fatal("the first session scheduled no agentless look")
	}
	atStart()
	if n := len(logs.FilterMessageSnippet("no agent has connected").All()); n != 0 {
		t.Fatalf("the start's look warned although a session came: %v", logs.All())
	}
	afterSession()
	w := logs.FilterMessageSnippet("has had no agent").All()
	if len(w) != 1 {
		t.Fatalf("%d agentless warnings, want 1 (group h): %v", len(w), logs.All())
	}
	if f := w[0].ContextMap(); f["group"] != "h" || !equalStrings(f["apps"], "wiki") || !equalStrings(f["groups_with_agents"], "g") {
		t.Errorf("warning fields %v", f)
	}
}
