package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// Server serves, on the agent, the exchanges that arrive on tunnel streams.
// The zero value refuses every exchange; set Backend.
type Server struct {
	// Backend returns the client that reaches the backend for req, or an
	// error when req must not be sent (for example a host outside the
	// agent's allow list). Nil refuses every exchange.
	Backend func(req *http.Request, head *tunnelv1.RequestHead) (http.RoundTripper, error)
	// Classify maps a backend error to an X-Sallyport-Error code and a
	// message safe to show to users. Nil → "backend-unreachable" with the
	// error text.
	Classify func(err error) (code, msg string)
	// Log receives protocol errors (warn), failed exchanges (warn) and one
	// line per exchange (debug). Nil → no logs.
	Log *zap.Logger
	// BodyStallTimeout cuts an exchange whose backend took none of the
	// request body (or upgraded bytes) queued for it for that long: it
	// stopped reading, and the stream's read loop, which waits for it,
	// would not see the gateway give up meanwhile. The backend's request
	// is cancelled with a *BodyStallError. Zero → DefaultBodyStallTimeout.
	BodyStallTimeout time.Duration

	inFlight atomic.Int64 // exchanges being served (serve); see InFlight
}

// InFlight is the number of exchanges the server is serving now, from the
// request head to the end of the response (an upgraded connection until
// it closes): what a draining agent waits for.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// DefaultBodyStallTimeout is Server.BodyStallTimeout when it is zero.
const DefaultBodyStallTimeout = 5 * time.Minute

func (s *Server) bodyStallTimeout() time.Duration {
	if s.BodyStallTimeout > 0 {
		return s.BodyStallTimeout
	}
	return DefaultBodyStallTimeout
}

// nopLog is the logger of a Server without Log (zap.NewNop allocates).
var nopLog = zap.NewNop()

// errStreamEnded cancels an exchange whose stream ended. One value for all:
// QUIC and yamux end a stream after every exchange.
var errStreamEnded = errors.New("stream ended")

func (s *Server) log() *zap.Logger {
	if s.Log == nil {
		return nopLog
	}
	return s.Log
}

func (s *Server) classify(err error) (string, string) {
	if s.Classify == nil {
		return "backend-unreachable", err.Error()
	}
	return s.Classify(err)
}

// ServeStream reads the exchanges that arrive on st, one after another, and
// serves each in a worker goroutine while it keeps reading the request body.
// It returns when the stream ends: nil when the gateway ended it cleanly or
// ctx was cancelled. Cancelling ctx aborts the exchange in flight.
//
// The exchanges of a stream run one after another in one worker goroutine,
// started with the first exchange and kept for the stream's life: a fresh
// goroutine per exchange had to grow its stack again every time (copystack
// was a tenth of the CPU of small exchanges over gRPC).
//
// Fast path: an exchange whose request has no body is served in this
// goroutine (see inlineReader), which saves the hand-off to the worker
// and its wake-up.
func (s *Server) ServeStream(ctx context.Context, st Stream) error {
	var cur *serverExchange
	var work chan *serverExchange // to the worker; nil until the first exchange
	workerDone := make(chan struct{})
	rd := inlineReader{st: st}
	defer func() {
		rd.close()
		if cur != nil {
			cur.cancel(errStreamEnded)
			cur.awaitDone()
		}
		if work != nil {
			close(work)
			<-workerDone
		}
	}()
	rd.dr, _ = st.(DataReceiver)
	for {
		f, d, err := rd.recv()
		if err != nil {
			st.Finish(false)
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if f == nil {
			// Fast path: body data in the transport's memory.
			if cur == nil || cur.reqEnded {
				c := chunkOf(d)
				c.free()
				return s.protocolError(st, malformed("body frame outside an exchange"))
			}
			cur.pipe.send(chunkOf(d))
			continue
		}
		switch {
		case f.Request != nil:
			if cur != nil {
				if !cur.reqEnded {
					return s.protocolError(st, malformed("new request head before the previous request ended"))
				}
				// The gateway sends the next head only after our end; the
				// worker that sent it is about to be free.
				cur.awaitDone()
			}
			cur = s.start(ctx, st, f)
			if cur.noBody {
				rd.serve(cur)
				continue
			}
			if work == nil {
				work = make(chan *serverExchange)
				go serveExchanges(work, workerDone)
			}
			work <- cur
		case f.Response != nil || f.Error != nil || f.SendBody || f.Informational != nil:
			return s.protocolError(st, malformed("the gateway sent a response frame"))
		case cur == nil || cur.reqEnded:
			if len(f.Data) > 0 || f.End || len(f.Trailers) > 0 {
				return s.protocolError(st, malformed("body frame outside an exchange"))
			}
			// A frame with nothing this version knows: skip it.
		default:
			cur.deliver(f)
		}
	}
}

// serveExchanges is a stream's worker: it serves the exchanges it is given,
// one at a time, until work is closed.
func serveExchanges(work <-chan *serverExchange, done chan<- struct{}) {
	defer close(done)
	for ex := range work {
		ex.serve()
	}
}

func (s *Server) protocolError(st Stream, err error) error {
	s.log().Warn("tunnel protocol error; resetting the stream", zap.Error(err))
	st.Finish(false)
	return err
}

// serverExchange is the agent's state of one exchange.
type serverExchange struct {
	s      *Server
	st     Stream
	ctx    context.Context
	cancel context.CancelCauseFunc
	head   *tunnelv1.RequestHead
	start  time.Time

	pipe     *bodyPipe // request body (or upgraded bytes) from the gateway; nil when noBody
	noBody   bool      // the head came with end and no data; set before serve
	reqEnded bool      // the gateway's end arrived; owned by the read loop
	// respDone is closed after the worker's last Send of the exchange; nil
	// for one that ServeStream serves itself (noBody, see inlineReader),
	// which is over when serve returns: a channel per small exchange was an
	// allocation, and closing it a lock.
	respDone chan struct{}
	halves   atomic.Int32 // clean ends: request and response

	pre  preHead              // frames sent before the response head by other goroutines
	ictx informationalContext // the backend request's context when the gateway takes informational responses
}

func (s *Server) start(ctx context.Context, st Stream, f *Frame) *serverExchange {
	exCtx, cancel := context.WithCancelCause(ctx)
	ex := &serverExchange{
		s: s, st: st, ctx: exCtx, cancel: cancel, head: f.Request,
		start: time.Now(),
	}
	ex.noBody = f.End && len(f.Data) == 0
	if !ex.noBody {
		// Slow path: a body (or an upgrade) follows or came with the head.
		ex.respDone = make(chan struct{})
		ex.pipe = newBodyPipe(exCtx, st, f.Data)
		ex.pipe.stall, ex.pipe.stallAfter = cancel, s.bodyStallTimeout()
	}
	if f.End {
		ex.reqEnded = true
		if ex.pipe != nil {
			ex.pipe.end(f.Trailers)
		}
		ex.halfDone()
	}
	return ex
}

// deliver passes a body frame from the read loop to the exchange.
func (ex *serverExchange) deliver(f *Frame) {
	if len(f.Data) > 0 {
		ex.pipe.push(f.Data)
	}
	if f.End {
		ex.reqEnded = true
		ex.pipe.end(f.Trailers)
		ex.halfDone()
	}
}

// awaitDone waits until the exchange's goroutine is done with it, then
// gives back the request body the backend left unread (a backend that
// answered early or broke off). The backend's client may still be reading
// the body (net/http's Transport writes it in a goroutine of its own, which
// goes on after RoundTrip returned): see bodyPipe.discard.
func (ex *serverExchange) awaitDone() {
	if ex.respDone != nil {
		<-ex.respDone
	}
	if ex.pipe != nil {
		ex.pipe.discard()
	}
}

// halfDone records a clean end of one direction; after both, the stream is
// free for the next exchange.
func (ex *serverExchange) halfDone() {
	if ex.halves.Add(1) == 2 {
		ex.st.Finish(true)
	}
}

func (ex *serverExchange) serve() {
	if ex.respDone != nil {
		defer close(ex.respDone)
	}
	ex.s.inFlight.Add(1)
	defer ex.s.inFlight.Add(-1)
	defer ex.cancel(nil)
	ctx := ex.ctx
	informational := ex.head.GetInformational()
	if informational {
		// The backend's client finds the exchange in the request's context
		// (RelayInformational).
		ex.ictx = informationalContext{Context: ex.ctx, ex: ex}
		ctx = &ex.ictx
	}
	req, err := RequestFromHead(ctx, ex.head)
	if err != nil {
		ex.s.log().Warn("malformed request from the gateway", zap.Error(err))
		ex.sendError("tunnel-failed", "the agent refused a malformed request: "+err.Error())
		return
	}
	upgrade := IsUpgradeRequest(req)
	var gate *goAhead // the gateway holds the body back until asked for it
	if upgrade || ex.noBody {
		req.Body = http.NoBody
		req.ContentLength = 0
	} else {
		ex.pipe.req = req
		req.Body = ex.pipe
		if ex.head.GetExpectContinue() && expectsContinue(req.Header) {
			gate = &goAhead{st: ex.st, pre: &ex.pre}
			ex.pipe.gate = gate
		}
	}
	rt, err := ex.backend(req)
	if err != nil {
		ex.fail(err)
		return
	}
	if informational && !relaysInformational(rt, req) {
		// Slow path: net/http's clients report informational responses
		// to a client trace.
		req = ex.traceInformational(req)
	}
	res, err := rt.RoundTrip(req)
	if gate != nil || informational {
		// A go-ahead or an informational response being sent is on its
		// way first, and none follows.
		ex.pre.close()
	}
	if err != nil {
		if ex.ctx.Err() != nil {
			if stall := ex.stallCause(); stall != nil {
				// The agent cut it: the gateway may still be waiting.
				ex.fail(stall)
			}
			return // the gateway gave up on the exchange
		}
		ex.fail(err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		if !upgrade {
			// The backend's fault, reported as such: relayed, the gateway
			// would refuse the 101 as a malformed frame.
			res.Body.Close()
			ex.fail(errUnaskedSwitch)
			return
		}
		ex.serveUpgrade(res)
		return
	}
	if err := checkHeadLimits(res.Header, res.Trailer); err != nil {
		// The backend's fault, reported as such: relayed, the gateway
		// would refuse the head as a malformed frame (tunnel-failed).
		res.Body.Close()
		ex.fail(fmt.Errorf("the backend's response head is too large for the tunnel: %w", err))
		return
	}
	ex.sendResponse(req, res)
}

// goAhead asks the gateway, once, for a request body that it holds back
// (RequestHead.expect_continue), when the backend's client first reads the
// body: Go's transport does that once the backend answered 100 Continue,
// or once it stopped waiting for one (ExpectContinueTimeout). The ask runs
// in the reader's goroutine while the exchange's goroutine waits in
// RoundTrip; pre keeps it from sending at the same time as anything else
// and puts it before the response head, as the gateway requires.
type goAhead struct {
	st   Stream
	pre  *preHead // the exchange's
	sent bool     // the go-ahead was sent (or failed with err); guarded by pre.mu
	err  error    // the go-ahead's Send error; guarded by pre.mu
}

// errBodyAfterAnswer is the body read error of a backend that reads the
// body only after it answered without asking for it.
var errBodyAfterAnswer = errors.New("the backend read the request body after it had answered without asking for it " +
	"(no 100 Continue to the request's Expect): the gateway did not take the body from the client")

// ask sends the go-ahead unless it was sent or the response began.
func (g *goAhead) ask() error {
	g.pre.mu.Lock()
	defer g.pre.mu.Unlock()
	if g.sent {
		return g.err
	}
	if g.pre.late {
		return errBodyAfterAnswer
	}
	g.sent = true
	if err := g.st.Send(&Frame{SendBody: true}); err != nil {
		g.err = fmt.Errorf("ask the gateway for the request body: %w", err)
	}
	return g.err
}

// errUnaskedSwitch is the error of a 101 answer to a request that asked for
// no upgrade.
var errUnaskedSwitch = errors.New("the backend switched protocols, but the request asked for no upgrade")

func (ex *serverExchange) backend(req *http.Request) (http.RoundTripper, error) {
	if ex.s.Backend == nil {
		return nil, errors.New("this agent has no backends configured")
	}
	return ex.s.Backend(req, ex.head)
}

// stallCause returns the exchange's cancellation cause when the agent cut
// it because the backend stopped taking its body (see bodyPipe.send), nil
// otherwise (the gateway gave up, the stream ended): only the former is
// reported to the gateway, which may still be waiting or relaying.
func (ex *serverExchange) stallCause() *BodyStallError {
	var stall *BodyStallError
	if errors.As(context.Cause(ex.ctx), &stall) {
		return stall
	}
	return nil
}

// fail reports a backend error to the gateway.
func (ex *serverExchange) fail(err error) {
	code, msg := ex.s.classify(err)
	ex.s.log().Warn("exchange failed",
		zap.String("app", ex.head.GetApp()),
		zap.String("request_id", ex.head.GetRequestId()),
		zap.String("backend", ex.head.GetScheme()+"://"+ex.head.GetAuthority()),
		zap.String("code", code), zap.Error(err))
	ex.sendError(code, msg)
}

func (ex *serverExchange) sendError(code, msg string) {
	// Errors never make a stream reusable: the gateway resets it.
	_ = ex.st.Send(&Frame{Error: &tunnelv1.Error{Code: code, Message: msg}})
}

// sendResponse streams res to the gateway.
func (ex *serverExchange) sendResponse(req *http.Request, res *http.Response) {
	defer res.Body.Close()
	// The first frame comes from a pool and goes back once sent (see
	// headFrame).
	rf := responseFrames.Get().(*responseFrame)
	head := &rf.frame
	fillResponseHead(&rf.head, res, rf.fill(res.Header, true))
	head.Response = &rf.head
	noBody := req.Method == http.MethodHead || res.StatusCode == http.StatusNoContent ||
		res.StatusCode == http.StatusNotModified || res.Body == http.NoBody
	switch {
	case noBody && len(res.Trailer) == 0:
		head.End = true
		err := ex.st.Send(head)
		rf.release(&responseFrames)
		if err != nil {
			ex.cancel(err)
			return
		}
		ex.logDone(res.StatusCode, 0)
		ex.halfDone()
		return
	case res.ContentLength >= 0 && res.ContentLength <= CoalesceLimit && len(res.Trailer) == 0:
		ex.sendWhole(rf, res)
		return
	}
	err := ex.st.Send(head)
	rf.release(&responseFrames)
	if err != nil {
		ex.cancel(err)
		return
	}
	n, err := ex.copyOut(res.Body)
	if err != nil {
		if ex.ctx.Err() == nil {
			ex.fail(fmt.Errorf("backend response broke off after %d bytes: %w", n, err))
		} else if stall := ex.stallCause(); stall != nil {
			// The agent cut it while the response streamed: the gateway,
			// still relaying it, must end the client's response.
			ex.fail(fmt.Errorf("backend response cut after %d bytes: %w", n, stall))
		}
		return
	}
	end := &Frame{End: true}
	if len(res.Trailer) > 0 {
		end.Trailers = headersToWire(res.Trailer, true)
	}
	if err := ex.st.Send(end); err != nil {
		ex.cancel(err)
		return
	}
	ex.logDone(res.StatusCode, n)
	ex.halfDone()
}

// sendWhole sends the head in rf with the whole body of res, which has a
// known length of at most CoalesceLimit, and end in one frame; rf goes back
// to its pool. The stream does not keep the frame after Send, so the body
// is read into a pooled buffer rather than fresh memory for every response.
func (ex *serverExchange) sendWhole(rf *responseFrame, res *http.Response) {
	defer rf.release(&responseFrames)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := (*bp)[:res.ContentLength]
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		ex.fail(fmt.Errorf("read backend response: %w", err))
		return
	}
	head := &rf.frame
	head.Data, head.End = buf, true
	err := ex.st.Send(head)
	if err != nil {
		ex.cancel(err)
		return
	}
	ex.logDone(res.StatusCode, int64(len(buf)))
	ex.halfDone()
}

// copyOut sends everything r yields as data frames, each as soon as it is
// read, so that streamed responses reach the client promptly.
func (ex *serverExchange) copyOut(r io.Reader) (int64, error) {
	cs := newChunkSender(ex.st)
	defer cs.close()
	var total int64
	for {
		n, rerr := r.Read(cs.next())
		if n > 0 {
			if err := cs.send(n); err != nil {
				ex.cancel(err)
				return total, err
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// serveUpgrade relays an upgraded connection (e.g. WebSocket) both ways
// until either side closes. The stream is not reused afterwards.
func (ex *serverExchange) serveUpgrade(res *http.Response) {
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		ex.sendError("backend-unreachable", "the backend switched protocols but the connection is not writable")
		return
	}
	defer rwc.Close()
	stop := context.AfterFunc(ex.ctx, func() { rwc.Close() })
	defer stop()
	if err := ex.st.Send(&Frame{Response: responseHead(res)}); err != nil {
		ex.cancel(err)
		return
	}
	// The gateway ends an upgrade request's head without end; a head that
	// came with end has no pipe, and the backend gets an immediate EOF.
	var src io.Reader = http.NoBody
	if ex.pipe != nil {
		src = ex.pipe
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyToBackend(rwc, src)
	}()
	n, err := ex.copyOut(rwc)
	if err == nil {
		_ = ex.st.Send(&Frame{End: true})
	} else if stall := ex.stallCause(); ex.ctx.Err() == nil || stall != nil {
		if stall != nil {
			err = stall // the agent cut it (see bodyPipe.send)
		}
		// The backend's side broke (a reset, or the agent's send guard cut
		// a backend that stopped reading): tell the gateway, which then
		// ends the client's side, instead of both waiting for the other.
		ex.fail(fmt.Errorf("upgraded connection to the backend broke off after %d bytes: %w", n, err))
	}
	ex.logDone(res.StatusCode, n)
	// The gateway resets upgraded streams when it is done with them; until
	// then the client may still be sending.
	<-ex.ctx.Done()
	rwc.Close()
	wg.Wait()
}

// copyToBackend writes the upgraded bytes from the gateway to the backend
// and half-closes the backend connection when the gateway's side ends.
func copyToBackend(dst io.WriteCloser, src io.Reader) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
}

func (ex *serverExchange) logDone(status int, bytesOut int64) {
	if ce := ex.s.log().Check(zap.DebugLevel, "exchange"); ce != nil {
		ce.Write(
			zap.String("app", ex.head.GetApp()),
			zap.String("request_id", ex.head.GetRequestId()),
			zap.String("method", ex.head.GetMethod()),
			zap.String("backend", ex.head.GetScheme()+"://"+ex.head.GetAuthority()),
			zap.Int("status", status),
			zap.Int64("bytes_out", bytesOut),
			zap.Duration("duration", time.Since(ex.start)))
	}
}
