package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Long poll timing: how long the harness waits for every exchange to be
// held, and how long the backend holds one at most (well under the
// gateway's 85 s app timeout), so a harness that dies frees the backend.
const (
	longpollSetup = 90 * time.Second
	longpollMax   = 150 * time.Second
	heldPoll      = 50 * time.Millisecond
)

// longpollDriver drives the longpoll scenario, once per path: load.workers
// GETs that the backend holds, each on its own connection. When every one
// still running is held, it reads the resident memory of each process of
// the path, then releases them all at once. An exchange counts when it is
// answered after the release; its latency runs from the release. The RSS
// growth per held exchange is measured from a baseline taken just before,
// after each process returned its free memory to the system, once as the
// system sees it and once more after the same collection while held.
type longpollDriver struct {
	st   *stack
	load *load
	log  *zap.Logger
	// heldProfile names the heap profiles taken while the exchanges are
	// held (Config.HeldProfile); empty → none.
	heldProfile string
}

func (d *longpollDriver) close() {}

func (d *longpollDriver) round(ctx context.Context, _ time.Duration, run *pathRun, progress func(*recorder) func()) time.Duration {
	n := d.load.workers
	rec := run.rec
	procs := d.st.pathMeters(run.path.name)
	base := make(map[string]procStats, len(procs))
	for _, m := range procs {
		if err := m.freeMemory(); err != nil {
			d.log.Debug("cannot free memory before the long polls", zap.String("process", m.name), zap.Error(err))
		}
		if s, err := m.stats(); err == nil {
			base[m.name] = s
		}
	}

	lg := newLoader(n)
	defer lg.close()
	ctl := newLoader(1)
	defer ctl.close()
	id := randomToken()[:12]
	l := *d.load
	l.url += "?round=" + id + "&max=" + longpollMax.String()
	rctx, cancel := context.WithTimeout(ctx, longpollSetup+longpollMax)
	defer cancel()
	if progress != nil {
		defer progress(rec)()
	}

	start := time.Now()
	var releasedAt atomic.Int64 // Unix ns of the release; 0 before
	var finished atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			err := lg.exchange(rctx, &l, rec)
			at := releasedAt.Load()
			finished.Add(1)
			switch {
			case err != nil:
				rec.errors.Add(1)
				rec.sample(err.Error())
			case at == 0:
				rec.errors.Add(1)
				rec.sample("answered before the release")
			default:
				rec.exchanges.Add(1)
				rec.record(time.Since(time.Unix(0, at)))
			}
		})
	}

	held, err := d.waitHeld(rctx, ctl, run.path, id, n, &finished, rec)
	if err != nil && ctx.Err() == nil {
		d.log.Warn("long polls: not all held", zap.String("path", run.path.name), zap.Error(err))
		rec.sample("waiting for the long polls to be held: " + err.Error())
	}
	run.held = max(run.held, int64(held))
	if held > 0 {
		grown(procs, base, held, run.growth, nil)
		for _, m := range procs {
			_ = m.freeMemory() // unsupported: the figure is the same as the first
		}
		grown(procs, base, held, run.liveGrowth, run.goGrowth)
		d.profileHeld(procs, run.path.name)
	}

	releasedAt.Store(time.Now().UnixNano())
	if err := ctl.control(rctx, run.path, http.MethodPost, "/longpoll/release?round="+id); err != nil {
		rec.sample("release: " + err.Error())
		cancel() // nothing will answer them now
	}
	wg.Wait()
	return time.Since(start)
}

// profileHeld writes the heap and goroutine profiles of each process of
// the path while the exchanges are held, when asked for.
func (d *longpollDriver) profileHeld(procs []meter, path string) {
	if d.heldProfile == "" {
		return
	}
	for _, m := range procs {
		file := d.heldProfile + "." + path + "." + m.name
		if err := m.heapProfile(file); errors.Is(err, errNotOurs) {
			continue // a target's process: neither profile can be had
		} else if err != nil {
			d.log.Warn("no heap profile of the held long polls", zap.String("process", m.name),
				zap.String("file", file), zap.Error(err))
		}
		if err := m.goroutineProfile(file + heldGoroutinesSuffix); err != nil {
			d.log.Warn("no goroutine profile of the held long polls", zap.String("process", m.name),
				zap.String("file", file+heldGoroutinesSuffix), zap.Error(err))
		}
	}
}

// heldGoroutinesSuffix ends the name of a held goroutine profile's file.
const heldGoroutinesSuffix = ".goroutines"

// grown sets each process's RSS growth over base, per held exchange, in
// into (the largest when several rounds measured it), and, when goInto is
// not nil, the growth of what the Go runtime counts (from the round whose
// stacks plus heap grew most).
func grown(procs []meter, base map[string]procStats, held int, into map[string]float64, goInto map[string]goHeld) {
	per := func(now, before int64) float64 { return float64(now-before) / float64(held) }
	for _, m := range procs {
		s, err := m.stats()
		b, ok := base[m.name]
		if !ok || err != nil {
			continue
		}
		if s.RSS > 0 && b.RSS > 0 {
			into[m.name] = max(into[m.name], per(s.RSS, b.RSS))
		}
		if goInto == nil || s.Go.Goroutines == 0 || b.Go.Goroutines == 0 {
			continue // a reading without the runtime's figures
		}
		g := goHeld{
			goroutines: per(s.Go.Goroutines, b.Go.Goroutines),
			stackBytes: per(s.Go.StackBytes, b.Go.StackBytes),
			heapBytes:  per(s.Go.HeapBytes, b.Go.HeapBytes),
		}
		if old, seen := goInto[m.name]; !seen || g.stackBytes+g.heapBytes > old.stackBytes+old.heapBytes {
			goInto[m.name] = g
		}
	}
}

// waitHeld polls the backend until every exchange still running is held,
// and returns how many are held.
func (d *longpollDriver) waitHeld(ctx context.Context, ctl *loader, p path, id string, n int, finished *atomic.Int64, rec *recorder) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, longpollSetup)
	defer cancel()
	t := time.NewTicker(heldPoll)
	defer t.Stop()
	held := 0
	for {
		if int(finished.Load()) >= n {
			// Every exchange has ended (failed, most likely): there is
			// nothing left to hold, whatever the backend can say.
			return held, nil
		}
		body, err := ctl.get(ctx, p, "/longpoll/held?round="+id)
		if err == nil {
			held, err = strconv.Atoi(body)
		}
		if err == nil {
			rec.held.Store(int64(held))
			if held >= n-int(finished.Load()) {
				return held, nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%d of %d held after %v", held, n, longpollSetup)
			}
			return held, err
		case <-t.C:
		}
	}
}

// get fetches a short control answer from the backend behind p.
func (lg *loader) get(ctx context.Context, p path, target string) (string, error) {
	res, err := lg.do(ctx, p, http.MethodGet, target)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<10))
	return string(b), err
}

// control sends a control request to the backend behind p and drops the
// answer.
func (lg *loader) control(ctx context.Context, p path, method, target string) error {
	res, err := lg.do(ctx, p, method, target)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return res.Body.Close()
}

func (lg *loader) do(ctx context.Context, p path, method, target string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.base+target, nil)
	if err != nil {
		return nil, err
	}
	req.Host = p.host
	res, err := lg.tr.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode/100 != 2 {
		res.Body.Close()
		return nil, statusError(res)
	}
	return res, nil
}
