package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// holdGateway is a gateway just started, whose group g expects agents
// (app web uses it) and has none yet.
func holdGateway(t *testing.T) *Gateway {
	t.Helper()
	g, _, _ := redundancyGateway(t)
	g.groups.agentlessAfter = func(time.Duration, func()) {}
	t.Cleanup(func() {
		if !isClosed(g.stopped) {
			close(g.stopped) // ends warnSingle's wait
		}
	})
	g.hold.expected = map[string]bool{"g": true}
	g.hold.start.Store(time.Now().UnixNano())
	return g
}

type holdResult struct {
	again bool
	err   error
	took  time.Duration
}

func holdAsync(g *Gateway, ctx context.Context, group string, wait time.Duration) <-chan holdResult {
	ch := make(chan holdResult, 1)
	go func() {
		start := time.Now()
		again, err := g.holdForAgent(ctx, group, wait)
		ch <- holdResult{again, err, time.Since(start)}
	}()
	return ch
}

func waitHeld(t *testing.T, g *Gateway, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.hold.heldNow() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d exchanges held, want %d", g.hold.heldNow(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func recvHold(t *testing.T, ch <-chan holdResult) holdResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the held exchange did not return")
		return holdResult{}
	}
}

// TestStartHoldWakesOnFirstAgent: an exchange held for a group that has
// had no agent since the start goes on as soon as one connects; once the
// group has had one, losing it is an outage, answered at once.
func TestStartHoldWakesOnFirstAgent(t *testing.T) {
	g := holdGateway(t)
	held := holdAsync(g, context.Background(), "g", 5*time.Second)
	waitHeld(t, g, 1)
	s := newFakeSession("a", "g")
	g.registry.Add(s)
	g.groupChanged("g")
	if r := recvHold(t, held); !r.again || r.err != nil || r.took > time.Second {
		t.Fatalf("held exchange: again %v, err %v after %v; want to pick again at once", r.again, r.err, r.took)
	}
	waitHeld(t, g, 0)

	s.Close(nil)
	g.registry.Remove(s)
	g.groupChanged("g")
	start := time.Now()
	again, err := g.holdForAgent(context.Background(), "g", 5*time.Second)
	// A hold would last the whole 5 s wait; 2 s tells it apart from a
	// loaded machine's delay without timing the call itself.
	if err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("group that lost its agent: %v, %v after %v; want no wait", again, err, time.Since(start))
	}
	if _, err := g.registry.Pick("g", nil); ErrorFor(err).Code != CodeNoConnector {
		t.Fatalf("pick after the loss: %v, want no-connector", err)
	}
}

// TestStartHoldNotHeld: nothing waits for a group that expects no agent
// (no token, no connector), after the grace, or beyond maxStartHeld; a
// held exchange waits at most its wait, and ends with the client or the
// gateway.
func TestStartHoldNotHeld(t *testing.T) {
	quick := func(t *testing.T, g *Gateway, group string) {
		t.Helper()
		start := time.Now()
		again, err := g.holdForAgent(context.Background(), group, 5*time.Second)
		// A hold would last the whole 5 s wait (see above).
		if again || err != nil || time.Since(start) > 2*time.Second {
			t.Fatalf("%v, %v after %v; want no wait", again, err, time.Since(start))
		}
	}
	t.Run("group nothing joins", func(t *testing.T) {
		quick(t, holdGateway(t), "typo")
	})
	t.Run("after the grace", func(t *testing.T) {
		g := holdGateway(t)
		g.hold.start.Store(time.Now().Add(-startGrace - time.Second).UnixNano())
		quick(t, g, "g")
	})
	t.Run("never started", func(t *testing.T) {
		g := holdGateway(t)
		g.hold.start.Store(0)
		quick(t, g, "g")
	})
	t.Run("bounded by the wait", func(t *testing.T) {
		g := holdGateway(t)
		r := recvHold(t, holdAsync(g, context.Background(), "g", 200*time.Millisecond))
		if r.again || r.err != nil || r.took < 150*time.Millisecond || r.took > 2*time.Second {
			t.Fatalf("%v, %v after %v; want no agent after about 200ms", r.again, r.err, r.took)
		}
	})
	t.Run("client leaves", func(t *testing.T) {
		g := holdGateway(t)
		ctx, cancel := context.WithCancel(context.Background())
		held := holdAsync(g, ctx, "g", 5*time.Second)
		waitHeld(t, g, 1)
		cancel()
		if r := recvHold(t, held); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("client gone: %v, %v", r.again, r.err)
		}
	})
	t.Run("gateway stops", func(t *testing.T) {
		g := holdGateway(t)
		held := holdAsync(g, context.Background(), "g", 5*time.Second)
		waitHeld(t, g, 1)
		close(g.stopped)
		if r := recvHold(t, held); r.again || r.err != nil || r.took > 2*time.Second {
			t.Fatalf("gateway stopped: %v, %v after %v", r.again, r.err, r.took)
		}
	})
	t.Run("at most maxStartHeld", func(t *testing.T) {
		g := holdGateway(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		helds := make([]<-chan holdResult, maxStartHeld)
		for i := range helds {
			helds[i] = holdAsync(g, ctx, "g", 5*time.Second)
		}
		waitHeld(t, g, maxStartHeld)
		quick(t, g, "g")
		cancel()
		for _, h := range helds {
			recvHold(t, h)
		}
		waitHeld(t, g, 0)
	})
}
