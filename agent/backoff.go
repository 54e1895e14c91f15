package agent

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff computes reconnect delays: exponential from Min, doubling per
// attempt up to Max, with "equal jitter". The caller owns the attempt counter
// (start at 0, reset it after a connection that worked), so one Backoff can
// serve many connections.
//
// Equal jitter rather than full jitter: full jitter spreads retries best but
// can return (nearly) zero, and an agent whose gateway just went away should
// not hammer it; equal jitter keeps every delay between half and all of the
// exponential step, which still de-synchronises a fleet of agents.
//
// The zero value is ready to use. Next is safe for concurrent use if Rand is.
type Backoff struct {
	// Min is the first step. Zero or negative means 500ms.
	Min time.Duration
	// Max caps every delay. Zero or negative means 30s. A Max below Min
	// lowers Min to Max, so no delay ever exceeds Max.
	Max time.Duration
	// Rand returns a number in [0, 1). If nil, math/rand/v2's Float64 is
	// used. Values outside the range are clamped.
	Rand func() float64
}

func (b *Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	return min(lo, hi), hi
}

func (b *Backoff) rand() float64 {
	f := rand.Float64
	if b.Rand != nil {
		f = b.Rand
	}
	r := f()
	if !(r >= 0) { // also catches NaN
		return 0
	}
	return min(r, 1)
}

// Next returns the delay before retry number attempt (0 for the first
// retry; negative counts as 0). The result is in [step/2, step] where
// step = min(Min·2^attempt, Max), so it is never zero and never above Max.
func (b *Backoff) Next(attempt int) time.Duration {
	lo, hi := b.bounds()
	attempt = max(attempt, 0)
	step := hi
	// lo<<attempt stays below hi exactly when attempt < log2(hi/lo); test by
	// halving hi instead of shifting lo so nothing overflows.
	if attempt < 63 && lo <= hi>>attempt {
		step = lo << attempt
	}
	// step >= 1, so jitter <= step/2 < step and the result is at least 1ns.
	jitter := time.Duration(math.Floor(b.rand() * float64(step/2)))
	return step - jitter
}

// Stable reports whether a connection that lasted d worked: d is at least
// Max (30s by default). The caller then starts its attempt counter over.
// A connection that ends sooner counts as one more failed attempt, so that
// a peer that accepts connections and drops them at once (a gateway that
// refuses the session once it is up, a middlebox that cuts connections)
// is retried with growing delays, as one that refuses them outright,
// instead of about twice a second for ever.
func (b *Backoff) Stable(d time.Duration) bool {
	_, hi := b.bounds()
	return d >= hi
}
