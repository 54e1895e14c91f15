package tunnel

import (
	"sync/atomic"
	"time"
)

// inlineReader is ServeStream's receiving side when it serves a bodiless
// exchange itself instead of handing it to the worker. While it serves, no
// one receives: a reset of the stream (the gateway gave up on the exchange)
// would go unnoticed. So, as the gateway's RoundTrip does with its
// request's context, it starts watching only when the exchange is still
// running after watchDelay: a goroutine then receives for ServeStream,
// aborts the exchange when the stream ends, and hands what it received
// back to ServeStream's next recv. Most exchanges are over well before.
type inlineReader struct {
	st Stream
	dr DataReceiver // st as a DataReceiver, or nil; set before the first recv

	timer *time.Timer     // starts the watcher; made by the first serve, owned by ServeStream
	ex    *serverExchange // the exchange being served; written before state becomes inlineServing
	// state is inlineIdle between exchanges, inlineServing while one is
	// served, inlineWatching once the timer started a watcher for it, and
	// inlineClosed after ServeStream returned. Only the transitions
	// serving → watching (the timer) and serving → idle (the end of the
	// exchange) race, and one compare-and-swap decides between them.
	state atomic.Int32

	result chan received // the watcher's hand-back; made by the first serve
	wait   bool          // a watcher's result is due on result; owned by ServeStream
}

// States of an inlineReader.
const (
	inlineIdle int32 = iota
	inlineServing
	inlineWatching
	inlineClosed
)

// received is one receive result.
type received struct {
	f   *Frame
	d   Data
	err error
}

// recv returns the next frame (or data) of the stream: what a watcher
// received, if one ran, else what the stream gives now.
func (r *inlineReader) recv() (*Frame, Data, error) {
	if r.wait {
		r.wait = false
		res := <-r.result
		return res.f, res.d, res.err
	}
	return receive(r.st, r.dr)
}

// serve serves ex, whose request has no body, in ServeStream's goroutine.
func (r *inlineReader) serve(ex *serverExchange) {
	r.ex = ex
	r.state.Store(inlineServing)
	if r.timer == nil {
		r.result = make(chan received, 1)
		r.timer = time.AfterFunc(watchDelay, r.watch)
	} else {
		r.timer.Reset(watchDelay)
	}
	ex.serve()
	r.timer.Stop()
	if !r.state.CompareAndSwap(inlineServing, inlineIdle) {
		// The timer won: a watcher is receiving.
		r.wait = true
		r.state.Store(inlineIdle)
	}
}

// watch runs on the timer: the exchange is still being served, so a
// goroutine receives for it. A late run from an earlier exchange may start
// watching the next one early, which is harmless; between exchanges it
// does nothing, as ServeStream receives itself then.
func (r *inlineReader) watch() {
	if r.state.CompareAndSwap(inlineServing, inlineWatching) {
		go r.watchRecv(r.ex)
	}
}

// watchRecv is the watcher: it receives the next frame that matters and
// hands it to ServeStream. A stream that ended, or anything but the next
// request's head (which the gateway sends only after this exchange's
// response), aborts ex, as ServeStream's own loop would.
func (r *inlineReader) watchRecv(ex *serverExchange) {
	for {
		f, d, err := receive(r.st, r.dr)
		if err == nil && f != nil && isEmptyFrame(f) {
			continue // a frame with nothing this version knows: skipped
		}
		if err != nil || f == nil || f.Request == nil {
			ex.cancel(errStreamEnded)
		}
		r.result <- received{f, d, err}
		return
	}
}

// isEmptyFrame reports a frame with nothing this version knows.
func isEmptyFrame(f *Frame) bool {
	return f.Request == nil && f.Response == nil && f.Error == nil &&
		len(f.Data) == 0 && !f.End && len(f.Trailers) == 0
}

// close stops the timer when ServeStream returns.
func (r *inlineReader) close() {
	r.state.Store(inlineClosed)
	if r.timer != nil {
		r.timer.Stop()
	}
}
