package bench

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// sseDriver drives the sse scenario: load.workers event streams, each
// asking the backend for one event per interval. Every event counts as an
// exchange; its latency runs from the moment the backend made it (its
// clock, read from the event) to the moment the harness read it, which is
// exact on one machine and as good as the clocks' agreement across two.
type sseDriver struct {
	lg       *loader
	load     *load
	interval time.Duration
}

func (d *sseDriver) round(ctx context.Context, dur time.Duration, run *pathRun, progress func(*recorder) func()) time.Duration {
	start := time.Now()
	deadline := start.Add(dur)
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if progress != nil {
		defer progress(run.rec)()
	}
	var wg sync.WaitGroup
	for range d.load.workers {
		wg.Go(func() {
			for rctx.Err() == nil {
				answered, err := d.stream(rctx, run.rec)
				if rctx.Err() != nil {
					if !answered && ctx.Err() == nil {
						// Asked for and never answered within the
						// round: still running when it ended.
						run.rec.unfinished.Add(1)
					}
					return // the round ended the stream
				}
				if err == nil {
					err = errors.New("event stream ended early")
				}
				run.rec.done(rctx, deadline, 0, err)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return min(time.Since(start), dur)
	}
	return dur
}

// stream opens one event stream and records its events until ctx ends.
// answered reports whether the response's head arrived.
func (d *sseDriver) stream(ctx context.Context, rec *recorder) (answered bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.load.url+"?interval="+d.interval.String(), nil)
	if err != nil {
		return false, err
	}
	req.Host = d.load.host
	req.Header.Set("Accept", "text/event-stream")
	res, err := d.lg.tr.RoundTrip(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return true, statusError(res)
	}
	br := bufio.NewReaderSize(res.Body, 4<<10)
	for {
		line, err := br.ReadSlice('\n')
		rec.bytes.Add(int64(len(line)))
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return true, err
		}
		if sent, ok := parseSSEData(line); ok {
			rec.exchanges.Add(1)
			rec.record(time.Since(sent))
		}
	}
}

func (d *sseDriver) close() {}
