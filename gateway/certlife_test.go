package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/clock"
)

// stuckSession is a session whose agent does not read its control
// stream: SendDrain blocks until the session is closed.
type stuckSession struct {
	*fakeSession
	sending chan struct{} // closed when SendDrain is called
}

func (s *stuckSession) SendDrain(string) error {
	close(s.sending)
	<-s.done
	return errors.New("stuck session: closed")
}

// TestExpiryClosesSessionThatDoesNotRead: an agent that stops reading its
// control stream cannot keep its session past the certificate's expiry
// by blocking the Drain the gateway sends it. Without the fix the expiry
// watcher waited in SendDrain forever: the session outlived its
// certificate and the goroutine leaked.
func TestExpiryClosesSessionThatDoesNotRead(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	g := &Gateway{cfg: Config{Clock: clk}, log: zap.NewNop(), registry: NewRegistry()}
	s := &stuckSession{fakeSession: newFakeSession("s1", "g"), sending: make(chan struct{})}
	s.info.ConnectorID, s.info.CertSerial, s.info.CertExpires = "c1", "0a", start.Add(time.Hour)
	if _, ok := g.registry.Add(s); !ok {
		t.Fatal("not registered")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.watchExpiry(s)
	if !clk.WaitForWaiter(1, ctx.Done()) {
		t.Fatal("no drain timer")
	}
	clk.Advance(time.Hour - certDrainLead)
	select {
	case <-s.sending:
	case <-ctx.Done():
		t.Fatal("no drain sent")
	}
	if !clk.WaitForWaiter(1, ctx.Done()) {
		t.Fatal("no expiry timer: the watcher is stuck sending the drain")
	}
	clk.Advance(certDrainLead)
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("the session was not closed at its certificate's expiry")
	}
}

// TestAgentMoveWait: how long shutdown waits for agents to move: 5 s by
// default, never past the shutdown grace, and not at all when negative (a
// gateway with no replica to move to).
func TestAgentMoveWait(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want time.Duration
	}{
		{Config{}, 5 * time.Second},
		{Config{AgentMoveWait: -1}, 0},
		{Config{AgentMoveWait: time.Minute, ShutdownGrace: 2 * time.Second}, 2 * time.Second},
		{Config{AgentMoveWait: 300 * time.Millisecond}, 300 * time.Millisecond},
	} {
		if got := c.cfg.agentMoveWait(); got != c.want {
			t.Errorf("AgentMoveWait %v, ShutdownGrace %v: waits %v, want %v", c.cfg.AgentMoveWait, c.cfg.ShutdownGrace, got, c.want)
		}
	}
}
