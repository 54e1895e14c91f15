//go:build !agentonly

package main

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// TestKeepaliveReachesGatewayAndAgent: tunnel.keepalive becomes the
// gateway's Keepalive and the agent's keepalive the agent's, with 15s when
// they are not set.
func TestKeepaliveReachesGatewayAndAgent(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"tunnel: {keepalive: 5s}\n", 5 * time.Second},
		{"data_dir: x\n", 15 * time.Second},
	} {
		g, err := config.ParseGateway("gateway.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		g.DataDir = t.TempDir()
		out, err := gatewayConfig(g, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if out.Keepalive != tc.want {
			t.Errorf("gateway config %q: Keepalive %v, want %v", tc.yaml, out.Keepalive, tc.want)
		}
	}
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"keepalive: 7s\n", 7 * time.Second},
		{"", 15 * time.Second},
	} {
		a, err := config.ParseAgent("agent.yaml", []byte("gateway: 127.0.0.1:8443\ntoken: t\n"+tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		a.DataDir = t.TempDir()
		out, err := agentConfig(a, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if out.Keepalive != tc.want {
			t.Errorf("agent config %q: Keepalive %v, want %v", tc.yaml, out.Keepalive, tc.want)
		}
	}
}

// TestKeepaliveBoundsAgree: the shortest keepalive a config accepts is one
// the transports use as given (none raises it) and one the gateway's gRPC
// enforcement policy lets an agent ping at: an agent configured lower than
// its gateway must not be closed with GOAWAY too_many_pings.
func TestKeepaliveBoundsAgree(t *testing.T) {
	for name, min := range map[string]time.Duration{
		"grpctunnel": grpctunnel.MinKeepalive, "quictunnel": quictunnel.MinKeepalive, "yamuxtunnel": yamuxtunnel.MinKeepalive,
	} {
		if min != config.MinKeepalive {
			t.Errorf("%s.MinKeepalive = %v, config.MinKeepalive = %v: keep them equal", name, min, config.MinKeepalive)
		}
	}
	for name, def := range map[string]time.Duration{
		"grpctunnel": grpctunnel.DefaultKeepalive, "quictunnel": quictunnel.DefaultKeepalive, "yamuxtunnel": yamuxtunnel.DefaultKeepalive,
	} {
		if def != config.DefaultKeepalive {
			t.Errorf("%s.DefaultKeepalive = %v, config.DefaultKeepalive = %v: keep them equal", name, def, config.DefaultKeepalive)
		}
	}
}
