package quictunnel

import (
	"testing"
	"time"
)

// TestGatewayNoticesDeadPathAsAgent: a silently dead path must be noticed
// by the gateway after 2K to 2K + min(5 s, K) for a keepalive K, as by the
// agent (README, tunnel.keepalive: 30–35 s by default). quic-go restarts
// its idle timer at the first packet it sends after the last one it
// received, so an end that received its last packet at T0 closes the
// connection at T0 + its ping period + the idle timeout; T0 is up to the
// agent's ping period (min(5 s, K)) before the path died. The gateway's
// config (baseConfig, as Listener.Serve uses it) must therefore ping after
// min(5 s, K) too: with a ping every K it noticed after 3K less up to 5 s
// (40–45 s by default; a kill -9 of an idle QUIC agent was noticed after
// 42 and 44 s).
func TestGatewayNoticesDeadPathAsAgent(t *testing.T) {
	for _, k := range []time.Duration{0, MinKeepalive, DefaultKeepalive, 30 * time.Second, 2 * time.Minute} {
		cfg := baseConfig(k)
		eff := keepaliveOrDefault(k)
		agentPing := min(agentKeepalivePeriod, eff)
		latest := cfg.KeepAlivePeriod + cfg.MaxIdleTimeout // after the last packet received
		if want := 2*eff + agentPing; latest > want {
			t.Errorf("keepalive %v: the gateway notices a dead path up to %v after the agent's last packet "+
				"(ping after %v, idle timeout %v), want at most 2 × keepalive + the agent's ping period = %v",
				k, latest, cfg.KeepAlivePeriod, cfg.MaxIdleTimeout, want)
		}
		if cfg.KeepAlivePeriod <= 0 || cfg.KeepAlivePeriod > cfg.MaxIdleTimeout/2 {
			t.Errorf("keepalive %v: ping after %v with an idle timeout of %v", k, cfg.KeepAlivePeriod, cfg.MaxIdleTimeout)
		}
	}
}
