package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
)

// TestQUICSurvivesNATRebinding: a NAT that gives an idle agent's QUIC
// session a new source port (its mapping expired, a router restarted)
// neither ends the session (quic-go validates the new path) nor stalls the
// next request for long. The gateway learns the new port only from the
// agent's next packet, its next keepalive when idle: with a ping after
// 15 s without a packet, the first request after the rebinding waited
// about 12 s (its packets went to the old port); the agent now pings
// after 5 s. The 10 s bound is that difference, not a performance target.
func TestQUICSurvivesNATRebinding(t *testing.T) {
	rig, nat := lossyQUICRig(t, 1)
	a := rig.StartAgent(func(c *agent.Config) { c.Gateway = nat.Addr() })
	var before []string
	waitFor(t, "the agent's session", func() bool { before = a.A.Sessions(); return len(before) == 1 })
	c := rig.Client()
	get := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", rig.URL+"/", nil)
		req.Host = "lossy.test"
		res, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	if code, err := get(context.Background()); err != nil || code != 200 {
		t.Fatalf("before the rebinding: %d %v", code, err)
	}
	// Idle: the last acknowledgements of that exchange have gone by.
	waitFor(t, "a quiet path", func() bool {
		n := nat.Stats().Forwarded
		time.Sleep(300 * time.Millisecond)
		return nat.Stats().Forwarded == n
	})
	if err := nat.Rebind(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	code, err := get(ctx)
	if err != nil || code != 200 {
		t.Fatalf("the first request after a NAT rebinding: %d %v after %v: the gateway sent to the old port until the agent's next keepalive",
			code, err, time.Since(start).Round(time.Millisecond))
	}
	if now := a.A.Sessions(); len(now) != 1 || now[0] != before[0] {
		t.Fatalf("the session did not survive the rebinding: agent sessions %v, before %v", now, before)
	}
}
