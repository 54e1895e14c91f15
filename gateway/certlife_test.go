package gateway

import (
	"context"
	"errors"
	"sync"
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

// movingClock is a fake clock that moves forward once, right after the
// first time it is read: a test's Advance landing between the gateway's
// reading of the time and its wait.
type movingClock struct {
	*clock.Fake
	move time.Duration
	once sync.Once
}

func (m *movingClock) Now() time.Time {
	now := m.Fake.Now()
	m.once.Do(func() { m.Advance(m.move) })
	return now
}

// TestWaitUntilClockMovedMeanwhile: the wait for a time on the gateway's
// clock ends once the clock has passed it, also when the clock moved
// between the read and the wait. Before, the wait counted its duration
// from the moved time: a test that moved the clock 30 days to a
// certificate's last minute had the drain of its session wait 30 days
// more (a flaky TestDrainedAgainAtOnceBacksOff).
func TestWaitUntilClockMovedMeanwhile(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	mc := &movingClock{Fake: clock.NewFake(t0), move: 30 * 24 * time.Hour}
	g := &Gateway{cfg: Config{Clock: mc}}
	s := newFakeSession("s1", "g")
	done := make(chan bool, 1)
	go func() { done <- g.waitUntil(s, t0.Add(time.Hour)) }()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("waitUntil reported the session ended")
		}
	case <-time.After(10 * time.Second):
		close(s.done) // lets the waiting goroutine go
		t.Fatal("waitUntil still waits 10 s after the clock passed its time")
	}
}
