package gateway

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// TestStallListedOnlyWhileBlocked: a write that ends as its timer lists it
// as stalled is not left listed (counted against the budget for ever, and
// linked twice at its next stall).
func TestStallListedOnlyWhileBlocked(t *testing.T) {
	b := newStallBudget(1<<20, zap.NewNop())
	h := &proxyHandler{stalls: b}
	g := &sendGuard{h: h, timeout: time.Hour, stallAfter: time.Nanosecond} // every write under way is stalled
	gt := &guardTimer{t: time.AfterFunc(time.Hour, func() {})}
	gt.t.Stop()
	defer gt.t.Stop()
	g.watch = gt
	const writes = 4_000_000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the timer, looking as often as it can
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				g.checkLocked(gt)
			}
		}
	}()
	for range writes {
		g.since.Store(tunnel.MonoNow() - 10) // begin, without arming the timer
		g.end()
	}
	close(stop)
	wg.Wait()
	if n := b.stalled(); n != 0 || g.listed || b.head != nil {
		t.Fatalf("after %d writes, each ended: the budget counts %d stalled exchanges (listed %v, list head %p); want none", writes, n, g.listed, b.head)
	}
}
