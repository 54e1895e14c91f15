package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
)

// startGraceRig starts a gateway with app demo on the rig's group and
// app nobody on group "empty", on a store that outlives a restart; enrolls
// an agent of the rig's group, stops it, and restarts the gateway: the
// group expects its agents back (its connector is in the store), and has
// none. wait is the stream wait.
func startGraceRig(t *testing.T, transport string, wait time.Duration) *testrig.Rig {
	t.Helper()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	t.Cleanup(backend.Close)
	db, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rig := testrig.New(t, testrig.Options{
		Routes: []gateway.Route{
			{App: "demo", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
			{App: "nobody", Hosts: []string{"nobody.test"}, Backend: testrig.MustURL(t, backend.URL), Group: "empty"},
		},
		Gateway: func(cfg *gateway.Config) {
			cfg.StreamWait = wait
			cfg.Store = db
		},
		Transport: transport,
	})
	rig.StartAgent(nil).Stop()
	rig.Restart(nil)
	return rig
}

// timedGet sends a GET for host and returns its status, error code and
// how long it took.
func timedGet(t *testing.T, rig *testrig.Rig, host string) (int, string, time.Duration) {
	t.Helper()
	req := appRequest(t, context.Background(), "GET", rig.URL+"/", nil)
	req.Host = host
	start := time.Now()
	res, _ := doAndRead(t, rig.Client(), req)
	return res.StatusCode, res.Header.Get(gateway.ErrorHeader), time.Since(start)
}

// TestStartHoldsUntilFirstAgent: right after the gateway restarts, an
// exchange for a group whose agents are not back yet waits for the first
// one and is relayed (it used to get 503 no-connector: a soak saw 24 in
// the 1.5 s before the first yamux agent was back).
func TestStartHoldsUntilFirstAgent(t *testing.T) {
	for _, tr := range testrig.Transports {
		t.Run(tr, func(t *testing.T) {
			rig := startGraceRig(t, tr, 5*time.Second)
			type result struct {
				status  int
				code    string
				elapsed time.Duration
			}
			got := make(chan result, 1)
			go func() {
				req := appRequest(t, context.Background(), "GET", rig.URL+"/", nil)
				start := time.Now()
				res, err := rig.Client().Do(req)
				if err != nil {
					t.Errorf("GET: %v", err)
					got <- result{}
					return
				}
				res.Body.Close()
				got <- result{res.StatusCode, res.Header.Get(gateway.ErrorHeader), time.Since(start)}
			}()
			time.Sleep(300 * time.Millisecond)
			rig.StartAgent(nil)
			r := <-got
			if r.status != http.StatusOK {
				t.Fatalf("GET before the first agent: %d %q after %v; want 200 once the agent connected", r.status, r.code, r.elapsed)
			}
			if r.elapsed < 250*time.Millisecond {
				t.Errorf("answered after %v, before the agent connected", r.elapsed)
			}
		})
	}
}

// TestStartHoldBounded: a held exchange waits at most the stream wait,
// then gets 503 no-connector; a group without an enrolled connector and
// one that had an agent and lost it answer at once.
func TestStartHoldBounded(t *testing.T) {
	const wait = 400 * time.Millisecond
	rig := startGraceRig(t, "", wait)

	status, code, took := timedGet(t, rig, "nobody.test")
	if status != http.StatusServiceUnavailable || code != gateway.CodeNoConnector || took > 200*time.Millisecond {
		t.Errorf("group without an enrolled connector: %d %q after %v; want 503 no-connector at once", status, code, took)
	}

	status, code, took = timedGet(t, rig, appHost)
	if status != http.StatusServiceUnavailable || code != gateway.CodeNoConnector {
		t.Fatalf("no agent within the wait: %d %q; want 503 no-connector", status, code)
	}
	if took < wait-50*time.Millisecond || took > wait+time.Second {
		t.Errorf("no agent within the wait: answered after %v; want about the stream wait %v", took, wait)
	}

	a := rig.StartAgent(nil)
	if status, code, _ := timedGet(t, rig, appHost); status != http.StatusOK {
		t.Fatalf("with an agent: %d %q", status, code)
	}
	a.Stop()
	rig.WaitSessions(testrig.Group, 0)
	status, code, took = timedGet(t, rig, appHost)
	if status != http.StatusServiceUnavailable || code != gateway.CodeNoConnector || took > 200*time.Millisecond {
		t.Errorf("group that lost its agent: %d %q after %v; want 503 no-connector at once (an outage, not a start)", status, code, took)
	}
}
