package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// stallAgent is ServeStream on ag with rt as every request's backend and
// stall as the Server's BodyStallTimeout; it ends with the test.
func stallAgent(t *testing.T, ag *pipeEnd, rt http.RoundTripper, stall time.Duration) {
	t.Helper()
	core, _ := observer.New(zap.DebugLevel)
	srv := &Server{
		Backend:          func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return rt, nil },
		Log:              zap.New(core),
		BodyStallTimeout: stall,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeStream(ctx, ag) }()
	t.Cleanup(func() {
		cancel()
		ag.p.close()
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Error("ServeStream did not return")
		}
	})
}

// fillBody sends the head of a POST and seven 1 KiB body frames: they fill
// the pipe (2), the body's queue (4) and the read loop's hands (1), so the
// read loop then waits for the backend to take one.
func fillBody(t *testing.T, gw *pipeEnd) {
	t.Helper()
	if err := gw.Send(&Frame{Request: testHead("POST", "/upload")}); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := gw.Send(&Frame{Data: pattern(1024)}); err != nil {
			t.Fatalf("send body frame %d: %v", i, err)
		}
	}
}

// TestBackendThatStopsReadingBodyIsCut: a backend that neither reads a
// request body nor answers held the exchange for as long as it liked: the
// stream's read loop waits for it to take the queued chunks and cannot see
// the gateway give up (its reset is behind that wait), so the backend's
// request, its connection, the queued chunks and the stream's goroutines
// stayed after the gateway had answered 504 (a probe: 100 uploads to such a
// backend left 552 goroutines and 169 MiB on the agent, 1,000 took it to
// 868 MiB). The agent now cuts the exchange after BodyStallTimeout without
// progress: the backend's request is cancelled with a *BodyStallError, and a
// gateway still waiting gets an error frame saying so.
func TestBackendThatStopsReadingBodyIsCut(t *testing.T) {
	for _, gatewayGaveUp := range []bool{false, true} {
		name := "gateway waiting"
		if gatewayGaveUp {
			name = "gateway gave up"
		}
		t.Run(name, func(t *testing.T) {
			gw, ag := newPipe(2)
			cause := make(chan error, 1)
			stallAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
				<-req.Context().Done() // never reads the body
				cause <- context.Cause(req.Context())
				return nil, req.Context().Err()
			}), 50*time.Millisecond)
			fillBody(t, gw)
			if gatewayGaveUp {
				gw.Finish(false) // as after the app's timeout
			}
			select {
			case err := <-cause:
				var stall *BodyStallError
				if !errors.As(err, &stall) || stall.After != 50*time.Millisecond {
					t.Fatalf("the backend's request was cancelled with %v, want a BodyStallError after 50ms", err)
				}
			case <-time.After(hangGuard):
				t.Fatal("the backend's request was not cancelled: a backend that stops reading the request body " +
					"holds the exchange for ever")
			}
			if gatewayGaveUp {
				return
			}
			// The gateway, still waiting, learns why (the body frames
			// it sent are gone; the next frame it gets is the error).
			f := recvFrame(t, gw)
			if f.Error == nil || !strings.Contains(f.Error.GetMessage(), "read none of the request body for 50ms") {
				t.Fatalf("the gateway got %v, want an error frame about the body the backend did not read", f)
			}
		})
	}
}

// TestSlowBackendReaderNotCut: the stall limit counts from the backend's
// last progress, not from the start of the body: a backend that takes a
// chunk every 40 ms, for longer in all than the 250 ms limit, gets the
// whole body.
func TestSlowBackendReaderNotCut(t *testing.T) {
	gw, ag := newPipe(2)
	rt, got := slowBackend(40 * time.Millisecond)
	stallAgent(t, ag, rt, 250*time.Millisecond)
	fillBody(t, gw)
	for i := range 5 { // 12 KiB in all: about 480 ms of reading
		if err := gw.Send(&Frame{Data: pattern(1024), End: i == 4}); err != nil {
			t.Fatalf("send body frame %d: %v", 7+i, err)
		}
	}
	select {
	case r := <-got:
		if r.err != nil || r.n != 12*1024 {
			t.Fatalf("the slow backend read %d bytes (%v), want all %d: it was cut while it read", r.n, r.err, 12*1024)
		}
	case <-time.After(hangGuard):
		t.Fatal("the backend never finished reading")
	}
}

// streamingBody yields first, then blocks until ctx ends and fails with its
// cause, as net/http's response body does when the request is cancelled.
type streamingBody struct {
	ctx   context.Context
	first []byte
	cause chan<- error
}

func (b *streamingBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	<-b.ctx.Done()
	select {
	case b.cause <- context.Cause(b.ctx):
	default:
	}
	return 0, context.Cause(b.ctx)
}

func (b *streamingBody) Close() error { return nil }

// gatewayOutcome reads gw until an error frame, an end, or a reset, and
// reports which (or "nothing" after wait).
func gatewayOutcome(gw *pipeEnd, wait time.Duration) (string, []*Frame) {
	type res struct {
		f   *Frame
		err error
	}
	var got []*Frame
	ch := make(chan res, 1)
	deadline := time.After(wait)
	for {
		go func() { f, err := gw.Recv(); ch <- res{f, err} }()
		select {
		case r := <-ch:
			if r.err != nil {
				return "reset or closed: " + r.err.Error(), got
			}
			got = append(got, r.f)
			if r.f.Error != nil {
				return "error frame: " + r.f.Error.GetCode() + ": " + r.f.Error.GetMessage(), got
			}
			if r.f.End {
				return "end", got
			}
		case <-deadline:
			return "nothing", got
		}
	}
}

// TestBackendStopsReadingAfterAnswerIsCut: a backend that answers an
// upload at once with a streamed response and then stops reading the body
// is cut after BodyStallTimeout, and the gateway, relaying the response,
// is told (an error frame), so it ends the client's response; the agent's
// cut was silent there at first (a reviewer's probe: the client waited for
// ever for the rest of a half-delivered response).
func TestBackendStopsReadingAfterAnswerIsCut(t *testing.T) {
	gw, ag := newPipe(2)
	cause := make(chan error, 1)
	stallAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
		res := bodyResponse(req, 200, nil, -1)
		res.Body = &streamingBody{ctx: req.Context(), first: []byte("hello"), cause: cause}
		return res, nil
	}), 50*time.Millisecond)
	fillBody(t, gw)
	select {
	case err := <-cause:
		var stall *BodyStallError
		if !errors.As(err, &stall) {
			t.Fatalf("the backend's request was cancelled with %v, want a BodyStallError", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("the backend's request was not cancelled")
	}
	outcome, frames := gatewayOutcome(gw, hangGuard)
	if len(frames) == 0 || frames[0].Response == nil {
		t.Fatalf("the gateway got %d frames, the first not the response head", len(frames))
	}
	if !strings.Contains(outcome, "read none of the request body") {
		t.Fatalf("the agent cut the exchange after the response head; the gateway saw %q, want an error frame saying why", outcome)
	}
}

// TestUpgradeBackendStallReported: on an upgraded connection whose backend
// never reads, the stall may come before the agent's write guard; the
// gateway is told either way (it was not when the stall came first, and
// TestUpgradeBackendStopsReading failed 4 times in 18).
func TestUpgradeBackendStallReported(t *testing.T) {
	gw, ag := newPipe(2)
	backendSide, agentSide := net.Pipe() // writes block until the backend reads: it never does
	t.Cleanup(func() { backendSide.Close(); agentSide.Close() })
	stallAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 101, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}},
			Body:   agentSide, Request: req}, nil
	}), 50*time.Millisecond)
	head := testHead("GET", "/ws")
	head.Headers = append(head.Headers, &tunnelv1.Header{Name: "Upgrade", Values: []string{"websocket"}},
		&tunnelv1.Header{Name: "Connection", Values: []string{"Upgrade"}})
	if err := gw.Send(&Frame{Request: head}); err != nil {
		t.Fatal(err)
	}
	if f := recvFrame(t, gw); f.Response == nil || f.Response.GetStatus() != 101 {
		t.Fatalf("want 101, got %v", f)
	}
	go func() {
		for range 8 {
			if gw.Send(&Frame{Data: pattern(1024)}) != nil {
				return
			}
		}
	}()
	if outcome, _ := gatewayOutcome(gw, hangGuard); !strings.HasPrefix(outcome, "error frame") {
		t.Fatalf("the agent cut an upgraded exchange whose backend stopped reading; the gateway saw %q, want an error frame", outcome)
	}
}

// TestSteadySlowReaderNotCut: progress counts per byte the backend takes,
// not per queued chunk: a backend reading 1 KiB every 20 ms (50 KiB/s)
// from 16 KiB frames takes 320 ms per frame, longer than the 250 ms limit,
// and is not cut (it was, after 13,312 bytes, told it read none of the
// body).
func TestSteadySlowReaderNotCut(t *testing.T) {
	gw, ag := newPipe(2)
	rt, got := slowBackend(20 * time.Millisecond)
	stallAgent(t, ag, rt, 250*time.Millisecond)
	if err := gw.Send(&Frame{Request: testHead("POST", "/upload")}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range 6 {
			if gw.Send(&Frame{Data: pattern(16 << 10), End: i == 5}) != nil {
				return
			}
		}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("a backend reading steadily at 50 KiB/s was cut with a 250 ms limit after %d bytes: %v", r.n, r.err)
		}
	case <-time.After(hangGuard):
		t.Fatal("the backend never finished reading")
	}
}

// slowRead is what a slowBackend read: n bytes, then err (nil: the whole
// body).
type slowRead struct {
	n   int
	err error
}

// slowBackend reads a request body 1 KiB at a time, one read every every,
// and reports what it read when the body ends or fails.
func slowBackend(every time.Duration) (http.RoundTripper, <-chan slowRead) {
	got := make(chan slowRead, 1)
	return rtFunc(func(req *http.Request) (*http.Response, error) {
		n, buf := 0, make([]byte, 1024)
		for {
			time.Sleep(every) // a slow backend
			k, err := io.ReadFull(req.Body, buf)
			n += k
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				got <- slowRead{n: n}
				return bodyResponse(req, 200, []byte("done"), 4), nil
			}
			if err != nil {
				got <- slowRead{n: n, err: err}
				return nil, err
			}
		}
	}), got
}
