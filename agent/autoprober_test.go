package agent

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestProberMovesGRPCSessionsWhenSlotsReturnToQUIC: in auto mode, a slot
// whose gRPC dial the gateway's host refused sends the slots back to QUIC
// (gatewayDown); a session of another slot that is up on gRPC must then be
// told to move too. The prober used to stop at its next wake without
// closing the move channel, and that session stayed on gRPC for its whole
// life, with nothing probing any more (a reviewer's note on e6d64f1).
func TestProberMovesGRPCSessionsWhenSlotsReturnToQUIC(t *testing.T) {
	a := &Agent{mode: TransportAuto, log: zap.NewNop(), cfg: Config{QUICRetry: 20 * time.Millisecond}}
	a.auto.useQUIC = true
	a.auto.back = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer a.bg.Wait()
	defer cancel()
	// Slot B: no QUIC session in time, so gRPC, which is up.
	if !a.fallBack(ctx, TransportQUIC, errors.New("timeout: no recent network activity")) {
		t.Fatal("auto mode did not fall back to gRPC after a QUIC timeout")
	}
	move := a.quicBack(TransportGRPC)
	// Slot A: its gRPC dial was refused (the gateway is not up there).
	a.gatewayDown(TransportGRPC, syscall.ECONNREFUSED)
	select {
	case <-move:
	case <-time.After(10 * time.Second):
		a.auto.mu.Lock()
		probing, useQUIC := a.auto.probing, a.auto.useQUIC
		a.auto.mu.Unlock()
		t.Fatalf("the gRPC session was never told to move to QUIC (probing=%v, useQUIC=%v)", probing, useQUIC)
	}
}
