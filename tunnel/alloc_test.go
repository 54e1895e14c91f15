package tunnel

import (
	"net/http"
	"testing"
)

// maxSmallExchangeAllocs is the allocation budget of one small exchange on
// the tunnel leg (issue 3, target 8): the gateway's RoundTrip and the
// agent's ServeStream, both heads encoded and decoded, without the client
// and the backend.
const maxSmallExchangeAllocs = 20

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

// relayingBackend is a backend client that relays informational responses
// itself, as the agent's synchronous HTTP/1.1 client does.
type relayingBackend struct{ http.RoundTripper }

func (relayingBackend) RelaysInformational(*http.Request) bool { return true }

type dropInformational struct{}

func (dropInformational) WriteInformational(int, http.Header) {}

// TestInformationalExchangeAllocs: an exchange whose gateway takes
// informational responses (every one from an HTTP/1.1 or HTTP/2 client)
// and whose backend client relays them itself costs no more.
func TestInformationalExchangeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./tunnel/...)")
	}
	r := newSmallExchangeRigOf(t, relayingBackend{newFixedBackend(64)})
	defer r.stop()
	r.opts.Informational = dropInformational{}
	r.exchange(t)
	got := testing.AllocsPerRun(500, func() { r.exchange(t) })
	t.Logf("%.1f allocations per small exchange", got)
	if got > maxSmallExchangeAllocs {
		t.Fatalf("a small exchange that takes informational responses allocates %.1f times on the tunnel leg, want at most %d", got, maxSmallExchangeAllocs)
	}
}
