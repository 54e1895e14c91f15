package gateway

import (
	"net/url"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
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
	add := func(id, group string) *fakeSession {
		s := newFakeSession(id, group)
		if _, ok := g.registry.Add(s); !ok {
			t.Fatal("not added")
		}
		g.groupChanged(group)
		return s
	}

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
