package tunnel

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// The request body of an exchange (bodyPipe) holds received bytes in
// memory that goes back to a pool (or to the transport) once read. The
// backend's client may go on reading and closing the body after RoundTrip
// returned: net/http's Transport writes the body in its writeLoop
// goroutine, which goes on after an early answer (the backend answered
// before it read the upload, or the agent refused the response head). The
// tests below drive the body that way, each step ordered by channels, and
// count the releases of every buffer (keepingStream): a buffer given back
// while the backend's client still reads it could carry another exchange's
// bytes.

// earlyBackend is a backend client that hands the request body to the test
// and answers when the test says so, before the body was read.
type earlyBackend struct {
	body   chan io.ReadCloser // the request body, once RoundTrip has it
	answer chan struct{}      // closed by the test: RoundTrip answers
}

func newEarlyBackend() *earlyBackend {
	return &earlyBackend{body: make(chan io.ReadCloser, 1), answer: make(chan struct{})}
}

func (b *earlyBackend) RoundTrip(req *http.Request) (*http.Response, error) {
	b.body <- req.Body
	select {
	case <-b.answer:
		return bodyResponse(req, 200, []byte("early"), 5), nil
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
}

// takeBody returns the request body the backend was given.
func (b *earlyBackend) takeBody(t *testing.T) io.ReadCloser {
	t.Helper()
	select {
	case body := <-b.body:
		return body
	case <-time.After(hangGuard):
		t.Fatal("the request did not reach the backend")
		return nil
	}
}

// startEarlyExchange starts an exchange whose request head comes with
// data and no end, on a stream that hands over the frames' memory, with a
// backend that answers early.
func startEarlyExchange(t *testing.T, data []byte) (gw *pipeEnd, ks *keepingStream, a *testAgent, be *earlyBackend) {
	t.Helper()
	gw, ag := newPipe(4)
	ks = &keepingStream{Stream: ag, released: map[*[]byte]int{}}
	be = newEarlyBackend()
	a = startAgentOn(t, ag, ks, be)
	head := testHead("PUT", "/upload")
	head.ContentLength = int64(len(data))
	if err := gw.Send(&Frame{Request: head, Data: data}); err != nil {
		t.Fatal(err)
	}
	return gw, ks, a, be
}

// releases returns how many buffers the agent kept, how many of them it
// gave back, and whether one was given back more than once.
func (s *keepingStream) releases() (kept, released int, twice bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.released {
		twice = twice || n > 1
	}
	return s.kept, len(s.released), twice
}

// wantAllReleasedOnce fails t unless every kept buffer went back exactly
// once.
func wantAllReleasedOnce(t *testing.T, ks *keepingStream, when string) {
	t.Helper()
	kept, released, twice := ks.releases()
	if kept == 0 {
		t.Fatalf("%s: the stream handed over no buffer; the test does not test anything", when)
	}
	if twice {
		t.Fatalf("%s: a buffer of the request body was given back twice (it could then carry two exchanges' bytes at once)", when)
	}
	if released != kept {
		t.Fatalf("%s: %d of %d buffers of the request body given back", when, released, kept)
	}
}

// endExchange answers the request, takes the response, ends the stream
// and waits for ServeStream to return (the read loop is then done with the
// exchange and its body).
func endExchange(t *testing.T, gw *pipeEnd, a *testAgent, be *earlyBackend, frames ...*Frame) {
	t.Helper()
	close(be.answer)
	wantResponse(t, gw, 200, "early")
	for _, f := range frames {
		if err := gw.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := gw.closeSend(); err != nil {
		t.Fatal(err)
	}
	if err := a.result(t); err != nil {
		t.Fatalf("ServeStream: %v", err)
	}
}

// heldWriter is a backend connection whose first write blocks until the
// test resumes it.
type heldWriter struct {
	writing chan struct{} // receives once the first write began
	resume  chan struct{} // closed by the test
	n       int
}

func (w *heldWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		w.writing <- struct{}{}
		<-w.resume
	}
	w.n += len(p)
	return len(p), nil
}

// TestRequestBodyKeptWhileBackendWrites: the backend's client writes the
// body straight from the memory it arrived in (WriteBodyTo, the agent's
// HTTP/1.1 connections), the backend answers meanwhile, the exchange ends
// and the stream with it. The buffer being written must stay the writer's
// until its write is done; it was given back when the exchange ended
// (bodyPipe.discard), under the write.
func TestRequestBodyKeptWhileBackendWrites(t *testing.T) {
	data := pattern(1000)
	gw, ks, a, be := startEarlyExchange(t, data)
	body := be.takeBody(t)
	bw, ok := body.(interface {
		WriteBodyTo(w io.Writer, max int64) (int64, error)
	})
	if !ok {
		t.Fatalf("the request body %T has no WriteBodyTo", body)
	}
	w := &heldWriter{writing: make(chan struct{}), resume: make(chan struct{})}
	resume := func() {
		select {
		case <-w.resume:
		default:
			close(w.resume)
		}
	}
	t.Cleanup(resume) // before the agent's cleanup, which waits for it
	type result struct {
		n   int64
		err error
	}
	wrote := make(chan result, 1)
	go func() { // net/http's writeLoop
		n, err := bw.WriteBodyTo(w, int64(len(data)))
		body.Close()
		wrote <- result{n, err}
	}()
	select {
	case <-w.writing:
	case <-time.After(hangGuard):
		t.Fatal("WriteBodyTo did not write")
	}
	endExchange(t, gw, a, be)
	if _, released, _ := ks.releases(); released > 0 {
		t.Fatalf("the agent gave back %d buffer(s) of the request body while the backend's client was still writing from it", released)
	}
	resume()
	r := <-wrote
	if r.err != nil || r.n != int64(len(data)) || w.n != len(data) {
		t.Fatalf("WriteBodyTo: %d bytes (%d written), %v; want %d bytes, no error", r.n, w.n, r.err, len(data))
	}
	wantAllReleasedOnce(t, ks, "after the write and Close")
}

// TestRequestBodyReadAfterExchangeEnds: the backend's client read part of
// the body, the backend answered, the request and the stream ended; the
// body it never closes must not keep its buffers, and reading on must fail
// rather than end: a body cut short must not reach the backend as a whole
// one (with chunked encoding, the backend could not tell).
//
// The previous pipe failed or ended such a read at random (its Read chose
// between the request's end and the exchange's cancellation, both there),
// hence the rounds: each is a fresh exchange, and all must fail the read.
func TestRequestBodyReadAfterExchangeEnds(t *testing.T) {
	const rounds = 16
	for i := range rounds {
		data := pattern(1000)
		gw, ks, a, be := startEarlyExchange(t, data)
		body := be.takeBody(t)
		buf := make([]byte, 10)
		if n, err := io.ReadFull(body, buf); err != nil {
			t.Fatalf("round %d: read the first %d bytes: %d, %v", i, len(buf), n, err)
		}
		endExchange(t, gw, a, be, &Frame{End: true})
		wantAllReleasedOnce(t, ks, "once the exchange ended, the body neither read on nor closed")
		rest, err := io.ReadAll(body)
		if err == nil {
			t.Fatalf("round %d: after the exchange ended, the body gave %d more bytes (%d of %d) and then its end; want an error: the rest was dropped",
				i, len(rest), len(buf)+len(rest), len(data))
		}
		body.Close()
		wantAllReleasedOnce(t, ks, "after Close")
	}
}

// TestRequestBodyCloseDuringRead: the backend's client closes the body
// while another of its goroutines waits in Read for more (Go's HTTP/2
// transport does that when the response ended first): the Read returns,
// and so does every later one.
func TestRequestBodyCloseDuringRead(t *testing.T) {
	data := pattern(1000)
	_, ks, _, be := startEarlyExchange(t, data)
	body := be.takeBody(t)
	if _, err := io.ReadFull(body, make([]byte, len(data))); err != nil {
		t.Fatalf("read the data that came with the head: %v", err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := body.Read(make([]byte, 10))
		read <- err
	}()
	body.Close()
	select {
	case err := <-read:
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("Read during Close: %v; want an error", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("a Read waiting for more of the body did not return when the body was closed")
	}
	if n, err := body.Read(make([]byte, 10)); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Read after Close: %d bytes, %v; want an error", n, err)
	}
	wantAllReleasedOnce(t, ks, "after Close, the exchange still running")
}

// TestRequestBodyReadByLateWriteLoop is the race that the end-to-end
// suite met under load: RoundTrip returns while net/http's writeLoop goes
// on reading the body and closing it, with nothing ordering its reads and
// the read loop's clean-up at the exchange's end (the test waits for the
// writeLoop only after ServeStream returned). Under -race, the previous
// pipe failed it (DATA RACE on bodyPipe.cur between discard and next) in
// most rounds, hence several; without -race, it checks the releases only.
func TestRequestBodyReadByLateWriteLoop(t *testing.T) {
	const rounds = 8
	for range rounds {
		lateWriteLoop(t)
	}
}

// lateWriteLoop runs one exchange of TestRequestBodyReadByLateWriteLoop.
func lateWriteLoop(t *testing.T) {
	t.Helper()
	data := pattern(1000)
	gw, ag := newPipe(4)
	ks := &keepingStream{Stream: ag, released: map[*[]byte]int{}}
	done := make(chan struct{})
	be := rtFunc(func(req *http.Request) (*http.Response, error) {
		// Like net/http's Transport, watch the request's context (which
		// makes its done channel before the writeLoop reads).
		_ = req.Context().Done()
		go func() { // the writeLoop: nothing waits for it
			defer close(done)
			// It reads to the end or fails once the exchange is over;
			// either is fine here.
			_, _ = io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}()
		return bodyResponse(req, 200, []byte("early"), 5), nil
	})
	a := startAgentOn(t, ag, ks, be)
	head := testHead("PUT", "/upload")
	head.ContentLength = int64(len(data))
	if err := gw.Send(&Frame{Request: head, Data: data, End: true}); err != nil {
		t.Fatal(err)
	}
	wantResponse(t, gw, 200, "early")
	if err := gw.closeSend(); err != nil {
		t.Fatal(err)
	}
	if err := a.result(t); err != nil {
		t.Fatalf("ServeStream: %v", err)
	}
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal("the writeLoop's read did not return after the exchange ended")
	}
	wantAllReleasedOnce(t, ks, "after the exchange and the writeLoop")
}

// TestRequestBodyDataAfterExchangeEnds: a data frame that arrives after the
// exchange ended (the backend answered early) is freed by bodyPipe.send;
// the end frame then closes the queue, and a late reader (net/http's
// writeLoop) must get an error, not io.EOF: a chunked body cut short would
// reach the backend as complete. It did in about half the rounds (a
// reviewer's probe of 8944e6e: 2 of 16).
func TestRequestBodyDataAfterExchangeEnds(t *testing.T) {
	eofs := 0
	const rounds = 16
	for i := range rounds {
		data := pattern(1000)
		gw, ag := newPipe(8)
		ks := &keepingStream{Stream: ag, released: map[*[]byte]int{}}
		bodyc := make(chan io.ReadCloser, 1)
		ctxc := make(chan context.Context, 1)
		answer := make(chan struct{})
		be := rtFunc(func(req *http.Request) (*http.Response, error) {
			bodyc <- req.Body
			ctxc <- req.Context()
			<-answer
			return bodyResponse(req, 200, []byte("early"), 5), nil
		})
		a := startAgentOn(t, ag, ks, be)
		head := testHead("PUT", "/upload") // ContentLength -1: chunked to the backend
		if err := gw.Send(&Frame{Request: head, Data: data}); err != nil {
			t.Fatal(err)
		}
		body := <-bodyc
		ctx := <-ctxc
		if _, err := io.ReadFull(body, make([]byte, len(data))); err != nil {
			t.Fatal(err)
		}
		close(answer)
		wantResponse(t, gw, 200, "early")
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("exchange ctx not cancelled")
		}
		// The gateway's next piece of the upload, in flight when the answer came.
		if err := gw.Send(&Frame{Data: pattern(500)}); err != nil {
			t.Fatal(err)
		}
		if err := gw.Send(&Frame{End: true}); err != nil {
			t.Fatal(err)
		}
		if err := gw.closeSend(); err != nil {
			t.Fatal(err)
		}
		if err := a.result(t); err != nil {
			t.Fatalf("ServeStream: %v", err)
		}
		rest, err := io.ReadAll(body) // the late writeLoop
		if err == nil {
			eofs++
			t.Logf("round %d: the body ended cleanly after %d of 1500 bytes (%d more)", i, len(data)+len(rest), len(rest))
		}
		body.Close()
	}
	if eofs > 0 {
		t.Fatalf("%d of %d rounds: a body cut short by the exchange's end read as complete (io.EOF)", eofs, rounds)
	}
}
