package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// load is one scenario at one path, as the load generator sees it.
type load struct {
	url       string // absolute URL
	host      string // Host header; empty → the URL's
	method    string
	reqBytes  int64 // request body size (0: none)
	respBytes int64 // expected response body size
	workers   int
	rate      float64 // exchanges/s, open loop; 0 → closed loop
	// drain is how long exchanges still running at the end of a round may
	// go on (uncounted) before they are cancelled: finishing them keeps
	// their connections for the next round. Zero cancels them at once.
	drain time.Duration
	// exchange, when set, makes worker i's exchange instead of an HTTP
	// request to url (a WebSocket round trip).
	exchange func(i int) func(ctx context.Context, rec *recorder) error
}

// worker returns worker i's exchange.
func (lg *loader) worker(l *load, i int) func(ctx context.Context, rec *recorder) error {
	if l.exchange != nil {
		return l.exchange(i)
	}
	return func(ctx context.Context, rec *recorder) error { return lg.exchange(ctx, l, rec) }
}

// loader is the load generator: one http.Transport shared by every path and
// scenario, so each path meets the identical client.
type loader struct {
	tr *http.Transport
}

// readBufSize is the read size for response bodies and the upload chunk.
const readBufSize = 32 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// uploadChunk is what every upload body repeats; it is never written after
// it is made, so readers on many goroutines share it. It is made on first
// use, not in every process of the binary at start-up.
var uploadChunk = sync.OnceValue(func() []byte {
	b := make([]byte, readBufSize)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
})

func newLoader(conns int) *loader {
	return &loader{tr: &http.Transport{
		Proxy:               nil, // never via a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true,
	}}
}

func (lg *loader) close() { lg.tr.CloseIdleConnections() }

// run drives l for d (or until ctx ends) and records into rec. It returns
// the time measured: d, or less when ctx ended first. No exchange starts
// after d; those still in flight then are counted as unfinished, not as
// errors, and cancelled after l.drain. Bytes they moved by then count;
// bytes moved after d do not, as d is the time they are divided by. In
// open loop, the exchanges scheduled within d that were not sent by its
// end (the path fell behind the rate) count as unfinished too, so that
// completed, failed and unfinished add up to what was scheduled.
func (lg *loader) run(ctx context.Context, l *load, d time.Duration, rec *recorder, progress func(*recorder) func()) time.Duration {
	start := time.Now()
	deadline := start.Add(d)
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(l.drain))
	defer cancel()
	if progress != nil {
		defer progress(rec)()
	}
	// The body bytes moved by the deadline: what the round's MB/s counts.
	var atDeadline atomic.Int64
	cut := make(chan struct{})
	timer := time.AfterFunc(d, func() {
		atDeadline.Store(rec.bytes.Load())
		close(cut)
	})
	var next, sent atomic.Int64 // open loop: index of the next scheduled exchange; exchanges sent
	interval := openInterval(l.rate)
	var wg sync.WaitGroup
	for i := range l.workers {
		do := lg.worker(l, i)
		wg.Go(func() {
			if l.rate > 0 {
				openLoop(rctx, interval, do, start, deadline, &next, &sent, rec)
			} else {
				closedLoop(rctx, do, deadline, rec)
			}
		})
	}
	wg.Wait()
	if !timer.Stop() {
		<-cut
		rec.bytes.Store(atDeadline.Load())
	}
	if ctx.Err() != nil {
		return min(time.Since(start), d)
	}
	if l.rate > 0 {
		// Exchanges k = 0, 1, … are due at k × interval before d.
		scheduled := int64((d + interval - 1) / interval)
		rec.unfinished.Add(max(scheduled-sent.Load(), 0))
	}
	return d
}

// Open-loop rates Run accepts, in exchanges per second: at least one every
// 1,000 s and at most one every nanosecond, the clock's resolution.
const (
	minRate = 1e-3
	maxRate = 1e9
)

// openInterval is the time between the exchanges of an open loop at rate
// (exchanges per second, minRate to maxRate).
func openInterval(rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return max(time.Duration(float64(time.Second)/rate), time.Nanosecond)
}

// closedLoop sends the next exchange as soon as the last one is done.
func closedLoop(ctx context.Context, do func(context.Context, *recorder) error, deadline time.Time, rec *recorder) {
	for ctx.Err() == nil && time.Now().Before(deadline) {
		t0 := time.Now()
		err := do(ctx, rec)
		rec.done(ctx, deadline, time.Since(t0), err)
	}
}

// timerSlack is how long before an exchange's time the open loop stops
// waiting on the runtime's timer (late by up to a millisecond on Linux,
// which would be charged to the path measured) and sleeps precisely.
const timerSlack = 2 * time.Millisecond

// openLoop takes scheduled exchanges in turn, waits for each one's time and
// counts its latency from that time, so a slow exchange that delays the
// next ones is charged for them too (no coordinated omission).
//
// An exchange that no worker is free to send before the deadline, because
// the path fell behind the rate, is not sent; sent counts those that were.
func openLoop(ctx context.Context, interval time.Duration, do func(context.Context, *recorder) error, start, deadline time.Time, next, sent *atomic.Int64, rec *recorder) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due := start.Add(time.Duration(next.Add(1)-1) * interval)
		if !due.Before(deadline) {
			return
		}
		if wait := time.Until(due) - timerSlack; wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		sleepUntil(due, false)
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return
		}
		sent.Add(1)
		err := do(ctx, rec)
		rec.done(ctx, deadline, time.Since(due), err)
		if ctx.Err() != nil {
			return
		}
	}
}

// exchange sends one request and reads the whole response, adding body
// bytes to rec as they move (those of a successful response only).
func (lg *loader) exchange(ctx context.Context, l *load, rec *recorder) error {
	req, err := http.NewRequestWithContext(ctx, l.method, l.url, nil)
	if err != nil {
		return err
	}
	req.Host = l.host
	if l.reqBytes > 0 {
		req.Body = &uploadBody{left: l.reqBytes, rec: rec}
		req.ContentLength = l.reqBytes
	}
	res, err := lg.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	// An error page is read to its end, so the connection stays usable,
	// but its bytes are not the scenario's body: they do not count.
	success := res.StatusCode/100 == 2
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	var n int64
	for {
		k, err := res.Body.Read(*bp)
		n += int64(k)
		if success {
			rec.bytes.Add(int64(k))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
	}
	if !success {
		return statusError(res)
	}
	if n != l.respBytes {
		return fmt.Errorf("body of %d bytes, want %d", n, l.respBytes)
	}
	return nil
}

// statusError describes a response that is not a success, with the
// gateway's error code when it answered itself.
func statusError(res *http.Response) error {
	if code := res.Header.Get("X-Sallyport-Error"); code != "" {
		return fmt.Errorf("status %d (%s)", res.StatusCode, code)
	}
	return fmt.Errorf("status %d", res.StatusCode)
}

// uploadBody is a request body of left bytes cut from uploadChunk.
type uploadBody struct {
	left int64
	off  int
	rec  *recorder
}

func (b *uploadBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	chunk := uploadChunk()
	n := copy(p, chunk[b.off:])
	b.off = (b.off + n) % len(chunk)
	b.left -= int64(n)
	b.rec.bytes.Add(int64(n))
	return n, nil
}

func (b *uploadBody) Close() error { return nil }

// probe sends small GETs to p until one succeeds or wait passes: a relay
// answers no-connector until the agent's session is registered.
func (lg *loader) probe(ctx context.Context, p path, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	l := &load{url: p.base + "/bytes/64", host: p.host, method: "GET", respBytes: 64}
	for {
		err := lg.exchange(ctx, l, newRecorder())
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				err = ctx.Err()
			}
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}
