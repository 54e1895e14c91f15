package tunnel

import (
	"context"
	"errors"
	"io"
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
	got := make(chan int, 1)
	stallAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
		n, buf := 0, make([]byte, 1024)
		for {
			time.Sleep(40 * time.Millisecond) // a slow backend
			k, err := io.ReadFull(req.Body, buf)
			n += k
			if err != nil {
				got <- n
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return bodyResponse(req, 200, []byte("done"), 4), nil
				}
				return nil, err
			}
		}
	}), 250*time.Millisecond)
	fillBody(t, gw)
	for i := range 5 { // 12 KiB in all: about 480 ms of reading
		if err := gw.Send(&Frame{Data: pattern(1024), End: i == 4}); err != nil {
			t.Fatalf("send body frame %d: %v", 7+i, err)
		}
	}
	select {
	case n := <-got:
		if n != 12*1024 {
			t.Fatalf("the slow backend read %d bytes, want all %d: it was cut while it read", n, 12*1024)
		}
	case <-time.After(hangGuard):
		t.Fatal("the backend never finished reading")
	}
}
