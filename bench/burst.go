package bench

import (
	"context"
	"sync"
	"time"
)

// burstFollow is how many sequential GETs follow each burst; only they are
// measured.
const burstFollow = 20

// burstDriver drives the burst scenario: Burst concurrent small GETs at
// once, then burstFollow sequential ones whose latency is recorded, again
// until the round ends. It shows whether the exchanges right after a burst
// pay any setup (with --link-rtt, a round trip is plain to see). It has its
// own client, with a connection for every GET of a burst.
type burstDriver struct {
	lg   *loader
	load *load
	n    int
}

func newBurstDriver(l *load, n int) *burstDriver {
	return &burstDriver{lg: newLoader(n + 1), load: l, n: n}
}

func (d *burstDriver) round(ctx context.Context, dur time.Duration, run *pathRun, progress func(*recorder) func()) time.Duration {
	start := time.Now()
	deadline := start.Add(dur)
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(d.load.drain))
	defer cancel()
	if progress != nil {
		defer progress(run.rec)()
	}
	rec := run.rec
	for rctx.Err() == nil && time.Now().Before(deadline) {
		var wg sync.WaitGroup
		for range d.n {
			wg.Go(func() {
				// Burst exchanges are not timed; their failures count.
				if err := d.lg.exchange(rctx, d.load, rec); err != nil && rctx.Err() == nil {
					rec.errors.Add(1)
					rec.sample("burst: " + err.Error())
				}
			})
		}
		wg.Wait()
		for range burstFollow {
			if rctx.Err() != nil || !time.Now().Before(deadline) {
				break
			}
			t0 := time.Now()
			err := d.lg.exchange(rctx, d.load, rec)
			rec.done(rctx, deadline, time.Since(t0), err)
		}
	}
	if ctx.Err() != nil {
		return min(time.Since(start), dur)
	}
	return dur
}

func (d *burstDriver) close() { d.lg.close() }
