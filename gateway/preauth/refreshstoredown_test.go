package preauth

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/shortskip"
)

// blackholedRefreshStore finds the renewal leased by another gateway at the
// first claim, then stops answering, as a database whose packets a
// firewall drops: each later call waits for its context to end. It records
// how long each call was given.
type blackholedRefreshStore struct {
	brokenRefreshStore
	mu     sync.Mutex
	claims int
	given  []time.Duration // each claim's context deadline, from the call
}

func (s *blackholedRefreshStore) ClaimRefresh(ctx context.Context, _, _ string, _, _ time.Time) (string, time.Time, bool, error) {
	s.mu.Lock()
	s.claims++
	first := s.claims == 1
	if d, ok := ctx.Deadline(); ok {
		s.given = append(s.given, time.Until(d))
	}
	s.mu.Unlock()
	if first {
		return "", time.Time{}, false, nil // another gateway holds the lease
	}
	<-ctx.Done()
	return "", time.Time{}, false, fmt.Errorf("claim session renewal: %w", ctx.Err())
}

// TestRenewalStoreBlackholedWhileLeaseHeld: a gateway waiting for another
// one's renewal when the database stops answering tells the user that the
// gateway's database does not answer, not that the sign-in provider could
// not be reached or that another gateway is renewing; and each store call
// gets its own short deadline (refreshCallTimeout) rather than the whole
// lease (20 s for one claim, before).
func TestRenewalStoreBlackholedWhileLeaseHeld(t *testing.T) {
	shortskip.Long(t, "waits for a renewal lease (20 s)")
	rg := rotatingRig(t)
	st := &blackholedRefreshStore{}
	rg.svc.UseRefreshStore(st)
	c := rg.signedInBrowser()
	rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
	code, body := page(c, rg.gwTS.URL)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "database does not answer") {
		t.Errorf("renewal while the store is blackholed: %d %q; want 503 saying the gateway's database does not answer", code, body)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.given) < 2 {
		t.Fatalf("%d claims with a deadline, want at least 2", len(st.given))
	}
	for i, d := range st.given {
		if d > refreshCallTimeout {
			t.Errorf("claim %d was given %v, want at most %v", i+1, d, refreshCallTimeout)
		}
	}
}
