package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// shortKeepalive is the keepalive TestKeepaliveConfigured sets: the
// shortest a config accepts.
const shortKeepalive = 5 * time.Second

// How long after the cut TestKeepaliveConfigured waits for a side to
// notice. With shortKeepalive gRPC and yamux notice after 10 s on both
// sides (5 s to the first unanswered ping, 5 s for its answer; gRPC's
// agent sends its own pings, since gRPC pings no more often than every
// 10 s and noticed only after 15 s that way), QUIC after 10 to 15 s (2 × 5
// s idle timeout plus up to 5 s to its last ping). With the default of 15
// s it takes 25 s (gRPC and yamux, cut just after traffic or a session
// start) or 30 to 35 s (QUIC), so a keepalive that is not applied fails
// the test.
const (
	keepaliveNoticeBound    = 20 * time.Second // QUIC
	keepaliveNoticeBoundTCP = 13 * time.Second // gRPC and yamux: 10 s and a margin for a loaded machine
)

// TestKeepaliveConfigured: with a keepalive of 5 s (the gateway's
// tunnel.keepalive, the agent's keepalive) a silently dead path (a
// firewall or NAT that lost the flow: no FIN, no RST) is noticed by both
// sides within about 10-15 s instead of 25-35 s, on every transport; the
// agent reconnects and the app works again. On gRPC and yamux each side
// notices by its own pings, so one run with both set checks both settings
// (and gRPC's agent, whose pings gRPC would send only every 10 s, must
// notice as soon as the gateway).
// QUIC's peers use the smaller of their idle timeouts, so each side's
// setting alone must make both notice: one run each. The cut comes just
// after the session came up and carried a request, so with the default
// keepalive it would take 25 s or more on every transport, not a shorter
// time by luck of phase.
func TestKeepaliveConfigured(t *testing.T) {
	testrig.SkipShort(t, "waits up to 20 s for real keepalives")
	t.Parallel()
	for _, tc := range []struct {
		name, transport string
		gateway, agent  time.Duration // keepalives; 0: the default
		bound           time.Duration // for each side to notice
	}{
		{"grpc", "grpc", shortKeepalive, shortKeepalive, keepaliveNoticeBoundTCP},
		{"yamux", "yamux", shortKeepalive, shortKeepalive, keepaliveNoticeBoundTCP},
		{"quic/gateway-only", "quic", shortKeepalive, 0, keepaliveNoticeBound},
		{"quic/agent-only", "quic", 0, shortKeepalive, keepaliveNoticeBound},
	} {
		parallelOn(t, tc.transport, tc.name, func(t *testing.T) {
			keepaliveConfigured(t, tc.transport, tc.gateway, tc.agent, tc.bound)
		})
	}
}

// keepaliveConfigured is one case of TestKeepaliveConfigured.
func keepaliveConfigured(t *testing.T, transport string, gatewayKeepalive, agentKeepalive, bound time.Duration) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "alive")
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes: []gateway.Route{
			{App: "ka", Hosts: []string{"ka.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
		Gateway: func(c *gateway.Config) { c.Keepalive = gatewayKeepalive },
	})
	// The relay carries the agent's transport only (UDP for QUIC);
	// BlackholeCurrent kills the flows open now and lets a redial pass.
	var blackhole func()
	var relayAddr string
	if transport == "quic" {
		r := testrig.StartImpairedUDP(t, rig.Tunnel, 1)
		blackhole, relayAddr = r.BlackholeCurrent, r.Addr()
	} else {
		r := testrig.StartImpairedTCP(t, rig.Tunnel)
		blackhole, relayAddr = r.BlackholeCurrent, r.Addr()
	}
	a := rig.StartAgent(func(c *agent.Config) {
		c.Gateway = relayAddr
		c.Keepalive = agentKeepalive
	})
	var before []string
	waitFor(t, "the agent's session", func() bool { before = a.A.Sessions(); return len(before) == 1 })
	dead := before[0]
	code, body, err := get(t, rig.Client(), rig.URL, "ka.test", "/")
	if err != nil || code != 200 || body != "alive" {
		t.Fatalf("before the cut: %d %q %v", code, body, err)
	}
	blackhole()
	start := time.Now()
	var gatewayAfter, agentAfter time.Duration
	// Polling: keepalive has no event to wait on.
	for gatewayAfter == 0 || agentAfter == 0 {
		if gatewayAfter == 0 && !slices.ContainsFunc(rig.G.Registry().Sessions(), func(s gateway.SessionStatus) bool { return s.ID == dead }) {
			gatewayAfter = time.Since(start)
		}
		if agentAfter == 0 && !slices.Contains(a.A.Sessions(), dead) {
			agentAfter = time.Since(start)
		}
		if time.Since(start) > bound {
			t.Fatalf("%s, keepalive gateway %v, agent %v (0s: the default): the dead path was not noticed within %v "+
				"(the gateway %s, the agent %s): is the keepalive applied?", transport, gatewayKeepalive, agentKeepalive,
				bound, noticedAfter(gatewayAfter), noticedAfter(agentAfter))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s: the dead path was noticed by the gateway after %v, by the agent after %v", transport,
		gatewayAfter.Round(100*time.Millisecond), agentAfter.Round(100*time.Millisecond))
	waitFor(t, "the agent's new session", func() bool {
		now := a.A.Sessions()
		ids := rig.G.Registry().Sessions()
		return len(now) == 1 && now[0] != dead && len(ids) == 1 && ids[0].ID == now[0]
	})
	code, body, err = get(t, rig.Client(), rig.URL, "ka.test", "/")
	if err != nil || code != 200 || body != "alive" {
		t.Fatalf("after reconnect: %d %q %v", code, body, err)
	}
}

// noticedAfter describes a side's time to notice for a failure message.
func noticedAfter(d time.Duration) string {
	if d == 0 {
		return "did not notice"
	}
	return "noticed after " + d.Round(100*time.Millisecond).String()
}
