package gateway

import "testing"

// TestCloseReasonSilent: a session that ends set aside as silent (the
// liveness watch closed it: the agent's host or path died) counts as
// reason="silent" in sessions_closed_total; before, it was "lost", the
// same as a connection an agent's crash reset, and an operator could not
// tell the two apart. One that was not silent stays "lost".
func TestCloseReasonSilent(t *testing.T) {
	g := &Gateway{}
	g.metrics = &gatewayMetrics{} // closeReason reads its revoked and certEnded (nil: none)
	g.serving.Store(true)
	s := newSilentFake("s1")
	if r := g.closeReason(s, s.info); r != closeLost {
		t.Errorf("a session that ended without a drain, answering: reason %q, want %q", r, closeLost)
	}
	s.silent.Store(true)
	if r := g.closeReason(s, s.info); r != closeSilent {
		t.Errorf("a session that ended silent: reason %q, want %q", r, closeSilent)
	}
}
