package agent

import (
	"context"
	"fmt"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// TestQUICBackAfterProbe: a slot that chose gRPC before the background
// prober found QUIC working, and asks where to move only after it, is told
// to move at once. It used to get the prober's next channel, which nothing
// closes, and stayed on gRPC for the session's life (found by a probe that
// slowed the slot's gRPC dial).
func TestQUICBackAfterProbe(t *testing.T) {
	a := &Agent{mode: TransportAuto}
	a.auto.back = make(chan struct{})
	before := a.quicBack(TransportGRPC)
	select {
	case <-before:
		t.Fatal("QUIC counted as back before the prober succeeded")
	default:
	}
	// What probeQUIC does when a QUIC session comes up.
	a.auto.mu.Lock()
	a.auto.useQUIC = true
	close(a.auto.back)
	a.auto.back = make(chan struct{})
	a.auto.mu.Unlock()
	for name, ch := range map[string]<-chan struct{}{"asked before": before, "asked after": a.quicBack(TransportGRPC)} {
		select {
		case <-ch:
		default:
			t.Errorf("%s the prober's success: the gRPC session is not told to move to QUIC", name)
		}
	}
	if a.quicBack(TransportQUIC) != nil {
		t.Error("a QUIC session is told to move")
	}
}

// TestRevokedIsNoFallback: a revoked connector's QUIC refusal is not taken
// for blocked UDP: auto mode logged "transport switch: QUIC → gRPC … UDP
// may be blocked" just before the agent stopped as revoked.
func TestRevokedIsNoFallback(t *testing.T) {
	a := &Agent{mode: TransportAuto}
	a.auto.useQUIC = true
	err := fmt.Errorf("connect: %w: connector c1 was revoked", tunnel.ErrRevoked)
	if a.fallBack(context.Background(), TransportQUIC, err) {
		t.Fatal("a revocation made auto mode fall back to gRPC")
	}
	if !a.auto.useQUIC {
		t.Fatal("a revocation switched auto mode off QUIC")
	}
}
