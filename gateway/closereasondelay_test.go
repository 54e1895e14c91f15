package gateway

import (
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/clock"
)

// TestCloseReasonDuringShutdownDelay: during the shutdown delay the
// gateway serves as before and has not told its agents yet, so a session
// that ends then for another reason counts under that reason, not as
// reason="shutdown" (which counts the sessions the stop itself ends).
func TestCloseReasonDuringShutdownDelay(t *testing.T) {
	fake := clock.NewFake(time.Now())
	g, w, cancel := startWatchedShutdownGateway(t, Config{ShutdownDelay: time.Hour, Clock: fake})
	cancel()
	w.wait(t, w.delaying, "the shutdown delay")
	silent, lost := newSilentFake("s1"), newSilentFake("s2")
	silent.silent.Store(true)
	if r := g.closeReason(silent, silent.info); r != closeSilent {
		t.Errorf("a silent session ending in the shutdown delay: reason %q, want %q", r, closeSilent)
	}
	if r := g.closeReason(lost, lost.info); r != closeLost {
		t.Errorf("a lost session ending in the shutdown delay: reason %q, want %q", r, closeLost)
	}
	fake.Advance(time.Hour)
	if err := <-w.served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if r := g.closeReason(lost, lost.info); r != closeShutdown {
		t.Errorf("a session ending after the stop began: reason %q, want %q", r, closeShutdown)
	}
}
