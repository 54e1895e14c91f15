package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: microseconds from 1 µs to one hour, three significant
// digits (values below 2,048 µs are exact).
const (
	histMinUS  = 1
	histMaxUS  = int64(time.Hour / time.Microsecond)
	histDigits = 3
)

// maxErrorSamples is how many distinct error messages a recorder keeps.
const maxErrorSamples = 3

// errorPause is how long a worker waits after a failed exchange, so a path
// that refuses at once does not turn the loop into a spin.
const errorPause = time.Millisecond

// recorder gathers one path's figures over all its rounds. Counters are
// atomic; the histogram and samples are guarded by mu.
type recorder struct {
	exchanges  atomic.Int64 // completed within a round, status 2xx, full body
	errors     atomic.Int64 // failed while the round ran
	unfinished atomic.Int64 // still running when a round ended
	bytes      atomic.Int64 // body bytes moved, both directions, cut-off exchanges included
	held       atomic.Int64 // long polls held by the backend now (longpoll only)

	mu      sync.Mutex
	hist    *hdrhistogram.Histogram // latency in µs; guarded by mu
	maxUS   int64                   // exact largest latency; guarded by mu
	samples []string                // distinct error messages; guarded by mu
}

func newRecorder() *recorder {
	return &recorder{hist: hdrhistogram.New(histMinUS, histMaxUS, histDigits)}
}

// done records the end of one exchange that took lat (counted from its
// start, or its scheduled time in open loop).
func (r *recorder) done(ctx context.Context, deadline time.Time, lat time.Duration, err error) {
	switch {
	case ctx.Err() != nil || time.Now().After(deadline):
		// Still running when the round ended, whatever came of it.
		r.unfinished.Add(1)
	case err != nil:
		r.errors.Add(1)
		r.sample(err.Error())
		t := time.NewTimer(errorPause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	default:
		r.exchanges.Add(1)
		r.record(lat)
	}
}

func (r *recorder) record(lat time.Duration) {
	us := max(int64(lat/time.Microsecond), histMinUS)
	r.mu.Lock()
	r.maxUS = max(r.maxUS, us)
	_ = r.hist.RecordValue(min(us, histMaxUS)) // in range by construction
	r.mu.Unlock()
}

func (r *recorder) sample(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) >= maxErrorSamples {
		return
	}
	for _, s := range r.samples {
		if s == msg {
			return
		}
	}
	r.samples = append(r.samples, msg)
}

// Latency holds latency percentiles in milliseconds.
type Latency struct {
	P50, P90, P99, P999, Max float64
}

// latency extracts the percentiles of what r recorded; ok is false when
// nothing was.
func (r *recorder) latency() (l Latency, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return percentiles(r.hist, r.maxUS)
}

// percentiles reads p50, p90, p99 and p99.9 of h (µs) as milliseconds;
// maxUS is the exact maximum, which the histogram only knows to its
// precision.
func percentiles(h *hdrhistogram.Histogram, maxUS int64) (Latency, bool) {
	if h.TotalCount() == 0 {
		return Latency{}, false
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	// ValueAtQuantile takes a percentage (0–100), despite its name.
	at := func(p float64) float64 { return ms(min(h.ValueAtQuantile(p), maxUS)) }
	return Latency{P50: at(50), P90: at(90), P99: at(99), P999: at(99.9), Max: ms(maxUS)}, true
}
