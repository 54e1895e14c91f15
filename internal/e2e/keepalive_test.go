package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestDeadPeerNoticed: when the network path dies silently (no FIN, no
// RST), keepalive makes both sides notice within about 25 s; the agent
// reconnects and the app works again. On every transport at once: the
// three waits overlap, and `make test` runs it only in its first pass,
// which covers all three (the passes over QUIC and yamux skip it).
func TestDeadPeerNoticed(t *testing.T) {
	testrig.SkipShort(t, "waits for keepalive (about 25 s)")
	t.Parallel()
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			deadPeerNoticed(t, transport)
		})
	}
}

// deadPeerNoticed is TestDeadPeerNoticed over one transport.
func deadPeerNoticed(t *testing.T, transport string) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "alive")
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes: []gateway.Route{
			{App: "ka", Hosts: []string{"ka.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
		// QUIC notices a dead path by its idle timeout (30 s, pings every
		// 15 s); 10 s (pings every 5 s) keeps this test as short as gRPC's.
		Gateway: func(c *gateway.Config) { c.QUICIdleTimeout = 10 * time.Second },
	})
	fz := startPathRelay(t, rig, false)
	a := rig.StartAgent(func(c *agent.Config) { c.Gateway = fz.Addr() })
	// The gateway registers a session before the agent has read its
	// welcome: wait for the agent's side too.
	var before []string
	waitFor(t, "the agent's session", func() bool { before = a.A.Sessions(); return len(before) == 1 })
	fz.cut()
	start := time.Now()
	// Bounded wait for a new session (the agent noticed and reconnected)
	// and for the gateway to drop the dead one.
	deadline := start.Add(60 * time.Second)
	for {
		now := a.A.Sessions()
		ids := rig.G.Registry().Sessions()
		if len(now) == 1 && now[0] != before[0] && len(ids) == 1 && ids[0].ID == now[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s the dead session was not replaced: agent %v, gateway %v", now, ids)
		}
		time.Sleep(50 * time.Millisecond) // polling; keepalive has no event to wait on
	}
	t.Logf("dead path noticed and replaced after %v", time.Since(start).Round(time.Second))
	code, body, err := get(t, rig.Client(), rig.URL, "ka.test", "/")
	if err != nil || code != 200 || body != "alive" {
		t.Fatalf("after reconnect: %d %q %v", code, body, err)
	}
}
