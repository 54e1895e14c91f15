package tunnel

import "testing"

// maxSmallExchangeAllocs is the allocation budget of one small exchange on
// the tunnel leg (issue 3, target 8): the gateway's RoundTrip and the
// agent's ServeStream, both heads encoded and decoded, without the client
// and the backend.
const maxSmallExchangeAllocs = 25

// TestSmallExchangeAllocs proves the budget. Allocation counts, unlike
// times, do not depend on the machine; the race detector changes them, so
// the test is skipped under it (make test runs it once more without).
func TestSmallExchangeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./tunnel/...)")
	}
	r := newSmallExchangeRig(t, 64)
	defer r.stop()
	r.exchange(t) // warm up: pools, the agent's goroutine
	got := testing.AllocsPerRun(500, func() { r.exchange(t) })
	t.Logf("%.1f allocations per small exchange", got)
	if got > maxSmallExchangeAllocs {
		t.Fatalf("a small exchange allocates %.1f times on the tunnel leg, want at most %d", got, maxSmallExchangeAllocs)
	}
}
