package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Options are the per-exchange settings of RoundTrip. The zero value works.
type Options struct {
	// App and RequestID are passed to the agent for its logs.
	App       string
	RequestID string
	// BackendHTTP2 asks the agent to speak HTTP/2 to the backend.
	BackendHTTP2 bool
	// HeadTimeout bounds the wait for the response head; zero means no bound
	// other than the request's context. With a held-back body (see
	// ExpectContinue) it bounds the wait for the agent's go-ahead too.
	HeadTimeout time.Duration
	// ExpectContinue says that the agent honours RequestHead.expect_continue
	// (the session's protocol version is VersionExpectContinue or later):
	// the body of a request with "Expect: 100-continue" is then read only
	// once the agent asks for it, so that the client, which waits for its
	// 100 Continue until the body is read, sends no body that the backend
	// refuses. False: every body is read at once, as older agents need.
	ExpectContinue bool
	// Informational, if not nil, takes the backend's informational
	// responses (103 Early Hints, 102 Processing; never 100 or 101), each
	// before the final response, in RoundTrip's goroutine, with validated
	// headers. Set it only when the agent relays them (the session's
	// protocol version is VersionInformational or later) and the client
	// can receive them (not HTTP/1.0); nil: the agent is not asked for
	// them and drops them. (An interface rather than a func: the gateway's
	// response writer goes in without the allocation a method value would
	// cost every exchange.)
	Informational InformationalWriter
	// Done, if not nil, is called exactly once when the exchange is over:
	// both bodies finished, or the exchange failed or was abandoned.
	Done func()
	// Body, if not nil, is req's whole body, already read by the caller: at
	// most CoalesceLimit bytes, of a request that is no upgrade, has no
	// trailers and is not held back for 100 Continue. It goes to the agent
	// with the head, in one frame; req.Body is closed but not read, and a
	// retry after ErrNotSent sends Body again. The gateway reads a small
	// body before it takes a stream, under a bound of its own, so that a
	// client that sends it slowly holds no stream. Nil: RoundTrip reads a
	// small body itself, after the stream was taken and with no bound but
	// the body's own (see the coalescing case in RoundTrip).
	Body []byte
	// HeadSent, if not nil, is called with req once its head has been sent,
	// before RoundTrip waits for the response head: RoundTrip reads no more
	// of req than its context, body and trailers from then on, so the
	// caller may let go of what only the head needed (such as the header
	// map) while a long poll waits. Not called when the head was not sent.
	HeadSent func(req *http.Request)
}

// bufPool holds ChunkSize buffers for copying request bodies.
var bufPool = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// RoundTrip relays req over st and returns the backend's response. req.URL
// must already point at the backend (scheme and host), as
// httputil.ProxyRequest.SetURL leaves it. RoundTrip owns st from now on and
// finishes it when the exchange is over; it always closes req.Body.
//
// An error wrapping ErrNotSent means nothing reached the agent and req may be
// retried on another stream (its body is then untouched unless the error
// says otherwise). One wrapping ErrNoResponse means the request was sent
// but its stream broke before the response head came.
func RoundTrip(st Stream, req *http.Request, o *Options) (*http.Response, error) {
	if o == nil {
		o = &Options{}
	}
	ex := &clientExchange{st: st, req: req, done: o.Done}
	hasBody := req.Body != nil && req.Body != http.NoBody
	upgrade := IsUpgradeRequest(req)
	// held: the body waits for the agent's go-ahead (Frame.send_body).
	held := hasBody && !upgrade && o.Body == nil && o.ExpectContinue && expectsContinue(req.Header)

	// The first frame comes from a pool and goes back once sent (see
	// requestFrame); the response and its body live in the exchange, which
	// saves two allocations.
	rf := requestFrames.Get().(*requestFrame)
	head := &rf.frame
	fillRequestHead(&rf.head, req, o, rf.fill(req.Header, false))
	head.Request = &rf.head
	switch {
	case upgrade:
		// An upgrade request has no body: the data that follows the head is
		// the upgraded connection's, and `end` is its half-close. It asks
		// for no informational responses (see recvHead's caller).
		head.Request.ContentLength = 0
		head.Request.Informational = false
		if hasBody {
			req.Body.Close()
			hasBody = false
		}
	case !hasBody:
		head.End = true
	case held:
		// Not even a small body is read now: reading it is what sends the
		// client its 100 Continue.
		head.Request.ExpectContinue = true
	case o.Body != nil:
		// Small body read by the caller: head, body and end in one frame.
		head.Data = o.Body
		head.End = true
		req.Body.Close()
		hasBody = false
	case req.ContentLength > 0 && req.ContentLength <= CoalesceLimit && len(req.Trailer) == 0:
		// Small body: send head, body and end as one frame.
		buf := make([]byte, req.ContentLength)
		_, err := io.ReadFull(req.Body, buf)
		req.Body.Close()
		hasBody = false
		if err != nil {
			rf.release(&requestFrames)
			st.Finish(false)
			ex.finishDone()
			return nil, &notSentError{&ClientBodyError{Err: err}}
		}
		head.Data = buf
		head.End = true
		// Keep the body replayable in case the head cannot be sent.
		req.Body = io.NopCloser(bytes.NewReader(buf))
	}
	informational := head.Request.Informational
	err := st.Send(head)
	// The stream keeps nothing of a frame once Send returned.
	rf.release(&requestFrames)
	if err != nil {
		st.Finish(false)
		// When the body was not read yet it stays open, so that the caller
		// may retry with it.
		ex.finishDone()
		return nil, &notSentError{fmt.Errorf("send request head: %w", err)}
	}
	if o.HeadSent != nil {
		o.HeadSent(req)
	}

	// From here on the exchange owns the stream: cancellation of the
	// request and the head timeout reset it. A bodiless request watches its
	// context only once the head is late (see headWait) or the response
	// body streams: most answer within the delay, and watching costs five
	// allocations and a registration with the context.
	if hasBody || upgrade || req.Context().Err() != nil {
		ex.watch()
	}
	switch {
	case held:
		// Sent on the agent's go-ahead (see awaitGoAhead).
	case hasBody:
		go ex.sendBody(req.Body, req.Trailer)
	case !upgrade:
		ex.halfDone()
	}
	ex.startHeadTimer(o.HeadTimeout)
	var f *Frame
	if held || informational {
		// Slow path: frames may come before the head.
		f, err = ex.recvHead(held, o)
	} else {
		f, err = st.Recv()
	}
	ex.stopHeadTimer()
	if err != nil {
		// No cause of the exchange's own (head timeout, the client gone):
		// the stream or its session broke after the request was sent.
		lost := ex.abortErr.Load() == nil
		err = ex.fail(fmt.Errorf("receive response head: %w", err))
		if lost {
			err = &noResponseError{err}
		}
		return nil, err
	}
	if f.Error != nil {
		return nil, ex.fail(&ExchangeError{Code: f.Error.GetCode(), Message: f.Error.GetMessage()})
	}
	if f.Response == nil {
		if f.SendBody {
			return nil, ex.fail(malformed("the agent asked for a request body that was not held back for it, or asked twice"))
		}
		if f.Informational != nil {
			return nil, ex.fail(malformed("the agent sent an informational response that was not asked for"))
		}
		return nil, ex.fail(malformed("first frame from the agent has no response head"))
	}
	res := &ex.response
	if err := fillResponse(res, f.Response, req); err != nil {
		return nil, ex.fail(err)
	}
	ex.res = res
	if f.End {
		if err := mergeTrailers(&res.Trailer, f.Trailers); err != nil {
			return nil, ex.fail(err)
		}
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		if !upgrade || f.End {
			return nil, ex.fail(malformed("101 response to a request that did not ask for an upgrade"))
		}
		res.Body = &upgradeConn{ex: ex, pending: f.Data}
		ex.watch()
		return res, nil
	}
	if upgrade {
		// The backend declined the upgrade: end the (empty) request side.
		if err := st.Send(&Frame{End: true}); err != nil {
			return nil, ex.fail(fmt.Errorf("send request end: %w", err))
		}
		ex.halfDone()
	}
	body := &ex.body
	*body = responseBody{ex: ex, pending: chunk{data: f.Data}, ended: f.End}
	body.dr, _ = st.(DataReceiver)
	if f.End && len(f.Data) == 0 {
		body.finish()
	}
	if !f.End {
		ex.watch() // the body may wait on the backend for a long time
	}
	res.Body = body
	return res, nil
}

// goAhead takes the agent's go-ahead for a held-back body (see recvHead):
// it starts sending the body. The head timer runs until the response head
// comes, so an agent that never answers fails the exchange at the head
// timeout, as one that never sends a head does.
func (ex *clientExchange) goAhead(f *Frame) error {
	if f.Response != nil || f.Error != nil || len(f.Data) > 0 || f.End || len(f.Trailers) > 0 || f.Informational != nil {
		ex.req.Body.Close()
		return malformed("the agent's go-ahead for the request body came with other fields")
	}
	go ex.sendBody(ex.req.Body, ex.req.Trailer)
	return nil
}

// clientExchange is the gateway's state of one exchange.
type clientExchange struct {
	st   Stream
	req  *http.Request
	res  *http.Response // set once the head arrived; owned by the reader
	done func()

	halves    atomic.Int32 // request and response sides that ended cleanly
	reqEnding atomic.Bool  // the request body is complete and its end is being sent
	over      atomic.Bool  // the exchange is over; Done was called
	abortErr  atomic.Pointer[error]
	abortOnce sync.Once

	// The response and its body, in this allocation rather than two more;
	// set up by RoundTrip, then owned by whoever RoundTrip returns them to.
	response http.Response
	body     responseBody

	headArrived  atomic.Bool   // RoundTrip received the response head (or failed)
	headDeadline time.Time     // when the head timeout fires; zero: none. Set before the timer starts
	headTimeout  time.Duration // Options.HeadTimeout; set before the timer starts
	// bodyMoved is when sendBody last sent a piece of the request body, or
	// its end (monoSince); 0 before. The head timeout counts from then
	// when that is later than the head (see headWait).
	bodyMoved atomic.Int64

	watchMu   sync.Mutex
	stopWatch func() bool // stops watching the request's context; nil until watch; guarded by watchMu
	unwatched bool        // the exchange is over: no more watching; guarded by watchMu
	headTimer *headTimer  // set by startHeadTimer; guarded by watchMu
}

// headTimer runs headWait for the exchange that holds it. The timers are
// pooled: time.AfterFunc per exchange cost two allocations (the timer and
// the method value) on the gateway's hot path.
type headTimer struct {
	t  *time.Timer // runs fire; made once
	mu sync.Mutex
	ex *clientExchange // the holder; nil while pooled; guarded by mu
}

var headTimers = sync.Pool{New: func() any {
	ht := new(headTimer)
	ht.t = time.AfterFunc(time.Hour, ht.fire)
	ht.t.Stop()
	return ht
}}

// fire runs on the timer. A run left over from an earlier holder may find
// the next one, which then starts watching its request's context early: a
// little work, nothing more (headWait resets the timer only for a holder
// still waiting, and aborts only past its own deadline).
func (ht *headTimer) fire() {
	ht.mu.Lock()
	ex := ht.ex
	ht.mu.Unlock()
	if ex != nil {
		ex.headWait()
	}
}

// watchDelay is how long a bodiless exchange waits for its response head
// before it watches the request's context: a client that goes away sooner
// is noticed this late at most.
const watchDelay = 20 * time.Millisecond

// watch makes cancellation of the request's context abort the exchange,
// from now until unwatch.
func (ex *clientExchange) watch() {
	ex.watchMu.Lock()
	defer ex.watchMu.Unlock()
	if ex.stopWatch != nil || ex.unwatched {
		return
	}
	ctx := ex.req.Context()
	ex.stopWatch = context.AfterFunc(ctx, func() { ex.abort(ctx.Err()) })
}

// unwatch stops watching the request's context, for good.
func (ex *clientExchange) unwatch() {
	ex.watchMu.Lock()
	ex.unwatched = true
	stop := ex.stopWatch
	ex.watchMu.Unlock()
	if stop != nil {
		stop()
	}
}

// startHeadTimer arms the timer of headWait: at the head timeout, or
// sooner, after watchDelay.
func (ex *clientExchange) startHeadTimer(timeout time.Duration) {
	first := watchDelay
	if timeout > 0 {
		ex.headDeadline = time.Now().Add(timeout)
		ex.headTimeout = timeout
		first = min(first, timeout)
	}
	ht := headTimers.Get().(*headTimer)
	ht.mu.Lock()
	ht.ex = ex
	ht.mu.Unlock()
	ex.watchMu.Lock()
	ex.headTimer = ht
	ht.t.Reset(first)
	ex.watchMu.Unlock()
}

// stopHeadTimer is called once RoundTrip's wait for the head is over. The
// timer goes back to the pool; a run of it that already started sees
// headArrived and does nothing.
func (ex *clientExchange) stopHeadTimer() {
	ex.headArrived.Store(true)
	ex.watchMu.Lock()
	ht := ex.headTimer
	ht.t.Stop()
	ex.watchMu.Unlock()
	ht.mu.Lock()
	ht.ex = nil
	ht.mu.Unlock()
	headTimers.Put(ht)
}

// headWait runs on the head timer while the head has not arrived: it starts
// watching the request's context, and aborts the exchange at the head
// timeout.
func (ex *clientExchange) headWait() {
	if ex.headArrived.Load() {
		return
	}
	ex.watch()
	if ex.headDeadline.IsZero() {
		return
	}
	deadline := ex.headDeadline
	if moved := ex.bodyMoved.Load(); moved != 0 {
		// A request body that still moves, or has just ended, is not
		// late: the timeout counts from its last piece (a long upload
		// at a steady pace was cut at the app's timeout while the
		// backend read it), and once it ended from its end, as
		// net/http's ResponseHeaderTimeout does. A body that stops
		// moving (a client that stopped sending, a backend that stopped
		// reading) still ends the exchange a timeout later.
		deadline = later(deadline, monoEpoch.Add(time.Duration(moved)).Add(ex.headTimeout))
	}
	if left := time.Until(deadline); left > 0 {
		ex.watchMu.Lock()
		if !ex.headArrived.Load() {
			ex.headTimer.t.Reset(left)
		}
		ex.watchMu.Unlock()
		return
	}
	ex.abort(ErrHeadTimeout)
}

// monoEpoch anchors MonoNow.
var monoEpoch = time.Now()

// MonoNow is the time since the process started on the monotonic clock, in
// nanoseconds, at least 1 (0 can mean "none"): a wall-clock step (NTP, a VM
// resumed) must not make a wait look longer or shorter than it was. One
// clock for the tunnel, its transports, the gateway and the agent.
func MonoNow() int64 { return int64(time.Since(monoEpoch)) + 1 }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// halfDone records that one direction ended cleanly; the second one
// releases the stream for reuse.
func (ex *clientExchange) halfDone() {
	if ex.halves.Add(1) == 2 {
		ex.unwatch()
		if ex.abortErr.Load() == nil {
			ex.st.Finish(true)
		}
		ex.finishDone()
	}
}

// finishDone calls Done once.
func (ex *clientExchange) finishDone() {
	if ex.over.CompareAndSwap(false, true) && ex.done != nil {
		ex.done()
	}
}

// abort resets the stream because of err (cancellation, timeout, a broken
// body); pending Send and Recv calls fail and report err.
func (ex *clientExchange) abort(err error) {
	ex.abortOnce.Do(func() {
		ex.abortErr.Store(&err)
		ex.st.Finish(false)
		ex.finishDone()
	})
}

// fail ends the exchange after a receive-side error and returns the error to
// report: the abort cause if there was one.
func (ex *clientExchange) fail(err error) error {
	if p := ex.abortErr.Load(); p != nil {
		err = fmt.Errorf("%w (%v)", *p, err)
	}
	ex.abort(err)
	ex.unwatch()
	return err
}

// sendBody streams the request body after the head, then `end` with the
// trailers. It runs in its own goroutine and is the only sender meanwhile.
func (ex *clientExchange) sendBody(body io.ReadCloser, trailer http.Header) {
	defer body.Close()
	cs := newChunkSender(ex.st)
	defer cs.close()
	for {
		n, rerr := body.Read(cs.next())
		if n > 0 {
			if err := cs.send(n); err != nil {
				ex.abort(fmt.Errorf("send request body: %w", err))
				return
			}
			ex.bodyMoved.Store(MonoNow())
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			ex.abort(&ClientBodyError{Err: rerr})
			return
		}
	}
	end := &Frame{End: true}
	if len(trailer) > 0 {
		end.Trailers = headersToWire(trailer, true)
	}
	// Set before Send: the agent may answer as soon as `end` arrives, and
	// the response must not be taken for an early one (see finish).
	ex.reqEnding.Store(true)
	if err := ex.st.Send(end); err != nil {
		ex.abort(fmt.Errorf("send request end: %w", err))
		return
	}
	ex.bodyMoved.Store(MonoNow())
	ex.halfDone()
}

// recvData returns the next body bytes from the agent; it sets *ended when
// the agent's side is complete.
func (ex *clientExchange) recvData(ended *bool) ([]byte, error) {
	f, err := ex.st.Recv()
	return ex.frameData(f, err, ended)
}

// recvChunk is recvData through dr (the stream as a DataReceiver, or nil):
// the data may come in the transport's memory, which the chunk gives back.
func (ex *clientExchange) recvChunk(dr DataReceiver, ended *bool) (chunk, error) {
	f, d, err := receive(ex.st, dr)
	if err == nil && f == nil {
		return chunkOf(d), nil
	}
	data, err := ex.frameData(f, err, ended)
	return chunk{data: data}, err
}

// frameData checks a frame of the response body (or the error of its
// Recv) and returns its data; it aborts the exchange on an error.
func (ex *clientExchange) frameData(f *Frame, err error, ended *bool) ([]byte, error) {
	if err != nil {
		if p := ex.abortErr.Load(); p != nil {
			return nil, *p
		}
		err = fmt.Errorf("receive response body: %w", err)
		ex.abort(err)
		return nil, err
	}
	if f.Error != nil {
		err := &ExchangeError{Code: f.Error.GetCode(), Message: f.Error.GetMessage()}
		ex.abort(err)
		return nil, err
	}
	if f.Response != nil || f.Request != nil || f.SendBody || f.Informational != nil {
		err := malformed("unexpected head, go-ahead or informational response in the middle of a response")
		ex.abort(err)
		return nil, err
	}
	if f.End {
		*ended = true
		if ex.res != nil {
			if err := mergeTrailers(&ex.res.Trailer, f.Trailers); err != nil {
				ex.abort(err)
				return nil, err
			}
		}
	}
	return f.Data, nil
}

// responseBody is the response body handed to the ReverseProxy. Read and
// Close are called by one goroutine.
type responseBody struct {
	ex       *clientExchange
	dr       DataReceiver // ex.st as a DataReceiver, or nil
	pending  chunk        // received bytes not read yet
	ended    bool         // the agent sent end
	finished bool         // the response side was accounted as done
	err      error
}

func (b *responseBody) Read(p []byte) (int, error) {
	for b.pending.empty() {
		b.pending.free()
		if b.err != nil {
			return 0, b.err
		}
		if b.ended {
			b.finish()
			return 0, io.EOF
		}
		c, err := b.ex.recvChunk(b.dr, &b.ended)
		if err != nil {
			b.err = err
			return 0, err
		}
		b.pending = c
	}
	return b.pending.read(p), nil
}

// MayWait reports whether the next Read may have to wait for the agent:
// nothing received is left to read, and the agent has not ended the body.
// The gateway flushes what it wrote to the client when such a Read is
// slow, so that bytes the backend sent before a pause do not stay in a
// buffer.
func (b *responseBody) MayWait() bool {
	return b.pending.empty() && !b.ended && b.err == nil
}

// finish accounts for the end of the response side. When the request body
// is still being sent (its end is not on its way yet), the backend answered
// without reading all of it: the stream cannot be reused, so it is reset.
func (b *responseBody) finish() {
	if b.finished {
		return
	}
	b.finished = true
	if b.ex.halves.Load() == 0 && !b.ex.reqEnding.Load() {
		b.ex.abort(errors.New("response ended before the request body"))
		return
	}
	b.ex.halfDone()
}

var errBodyClosed = errors.New("read on closed response body")

func (b *responseBody) Close() error {
	if !b.finished {
		if b.ended && b.pending.empty() {
			b.finish()
		} else {
			b.ex.abort(errors.New("response body closed before its end"))
		}
	}
	b.pending.free()
	if b.err == nil {
		b.err = errBodyClosed
	}
	return nil
}

// upgradeConn is the backend side of an upgraded (101) exchange as the
// ReverseProxy sees it: reads return the agent's data, writes send data.
// One goroutine reads while another writes.
type upgradeConn struct {
	ex      *clientExchange
	pending []byte
	ended   bool
	rerr    error
	closed  atomic.Bool
}

func (c *upgradeConn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.ended {
			return 0, io.EOF
		}
		data, err := c.ex.recvData(&c.ended)
		if err != nil {
			c.rerr = err
			return 0, err
		}
		c.pending = data
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *upgradeConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), ChunkSize)
		if err := c.ex.st.Send(&Frame{Data: p[:n]}); err != nil {
			if e := c.ex.abortErr.Load(); e != nil {
				err = *e
			}
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// CloseWrite half-closes the upgraded connection: `end` follows the data
// written so far, and the agent passes the half-close on to the backend.
// The ReverseProxy calls it when the client's side reached EOF, so the
// client's last bytes (such as a WebSocket close frame) reach the backend
// before Close resets the stream.
func (c *upgradeConn) CloseWrite() error {
	if err := c.ex.st.Send(&Frame{End: true}); err != nil {
		if e := c.ex.abortErr.Load(); e != nil {
			err = *e
		}
		return fmt.Errorf("send upgraded connection end: %w", err)
	}
	return nil
}

// Close ends the upgraded connection. Upgraded streams are never reused.
func (c *upgradeConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.ex.unwatch()
		c.ex.abort(errors.New("upgraded connection closed"))
	}
	return nil
}

// IsUpgradeRequest reports whether req asks for a protocol switch (an
// Upgrade header, and Connection naming it).
func IsUpgradeRequest(req *http.Request) bool {
	return req.Header.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "Upgrade")
}

// expectsContinue reports whether h asks for 100 Continue before the body.
func expectsContinue(h http.Header) bool {
	return httpguts.HeaderValuesContainsToken(h["Expect"], "100-continue")
}

// Ensure the upgrade body satisfies what ReverseProxy needs.
var _ io.ReadWriteCloser = (*upgradeConn)(nil)
