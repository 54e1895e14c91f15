package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestSetRoutes: the published apps change while the gateway runs. An
// exchange in flight finishes with the app it started with; new requests
// see the new apps; a bad set of apps changes nothing.
func TestSetRoutes(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	one := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "one")
	}))
	two := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "two")
	}))
	core, logs := observer.New(zap.InfoLevel)
	rig := testrig.New(t, testrig.Options{
		Log:    zap.New(core),
		Routes: []gateway.Route{{App: "one", Hosts: []string{"one.test"}, Backend: testrig.MustURL(t, one.URL)}},
	})
	rig.StartAgent(nil)
	c := rig.Client()
	get := func(host, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", rig.URL+path, nil)
		req.Host = host
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("one.test", "/"); code != 200 || body != "one" {
		t.Fatalf("before: %d %q", code, body)
	}

	type result struct {
		code int
		body string
	}
	slow := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", rig.URL+"/slow", nil)
		req.Host = "one.test"
		res, err := rig.Client().Do(req)
		if err != nil {
			slow <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		slow <- result{res.StatusCode, string(b)}
	}()
	<-started

	routes := []gateway.Route{{App: "two", Hosts: []string{"two.test"}, Backend: testrig.MustURL(t, two.URL), Group: testrig.Group}}
	if err := rig.G.SetRoutes(routes); err != nil {
		t.Fatal(err)
	}
	close(release)
	if r := <-slow; r.code != 200 || r.body != "one" {
		t.Fatalf("the exchange in flight across the change: %d %q", r.code, r.body)
	}
	if code, body := get("one.test", "/"); code != http.StatusNotFound || !strings.Contains(body, "no-route") && !strings.Contains(body, "No app") {
		t.Fatalf("a removed app: %d %q", code, body)
	}
	if code, body := get("two.test", "/"); code != 200 || body != "two" {
		t.Fatalf("an added app: %d %q", code, body)
	}
	line := logs.FilterMessage("apps reloaded").All()
	if len(line) != 1 {
		t.Fatalf("%d 'apps reloaded' lines", len(line))
	}
	if f := line[0].ContextMap(); f["apps"] != int64(1) || !equalAny(f["added"], "two") || !equalAny(f["removed"], "one") || !equalAny(f["changed"]) {
		t.Errorf("'apps reloaded' fields: %v", f)
	}

	// Refused: two apps claiming one host, and sign-in without pre-auth.
	bad := append(routes, gateway.Route{App: "dup", Hosts: []string{"two.test"}, Backend: testrig.MustURL(t, one.URL), Group: testrig.Group})
	if err := rig.G.SetRoutes(bad); err == nil || !strings.Contains(err.Error(), `already used by app "two"`) {
		t.Fatalf("duplicate host: %v", err)
	}
	auth := []gateway.Route{{App: "two", Hosts: []string{"two.test"}, Backend: testrig.MustURL(t, two.URL), Group: testrig.Group,
		Preauth: &preauth.Policy{Provider: "corp"}}}
	if err := rig.G.SetRoutes(auth); err == nil || !strings.Contains(err.Error(), "restart the gateway to add the first app with sign-in") {
		t.Fatalf("sign-in without pre-authentication: %v", err)
	}
	if code, body := get("two.test", "/"); code != 200 || body != "two" {
		t.Fatalf("after refused changes: %d %q", code, body)
	}
	if n := logs.FilterMessage("apps reloaded").Len(); n != 1 {
		t.Fatalf("%d 'apps reloaded' lines after refused changes", n)
	}

	// A changed backend is named as changed.
	routes[0].Backend = testrig.MustURL(t, one.URL)
	if err := rig.G.SetRoutes(routes); err != nil {
		t.Fatal(err)
	}
	if code, body := get("two.test", "/"); code != 200 || body != "one" {
		t.Fatalf("a changed backend: %d %q", code, body)
	}
	if f := logs.FilterMessage("apps reloaded").All()[1].ContextMap(); !equalAny(f["changed"], "two") || !equalAny(f["added"]) {
		t.Errorf("'apps reloaded' fields: %v", f)
	}
}

// equalAny reports whether a logged string list is want.
func equalAny(v any, want ...string) bool {
	got, _ := v.([]any)
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
