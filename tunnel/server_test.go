package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/encoding/protowire"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// testBackend is the agent's backend client in unit tests. By default it
// echoes the request body with a known length.
type testBackend struct {
	calls    atomic.Int32 // requests that reached the backend
	complete atomic.Int32 // requests whose body was read to its end
	// respond, if set, builds the response from the request and its body.
	respond func(req *http.Request, body []byte) (*http.Response, error)
}

func (b *testBackend) RoundTrip(req *http.Request) (*http.Response, error) {
	b.calls.Add(1)
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	b.complete.Add(1)
	if b.respond != nil {
		return b.respond(req, body)
	}
	return bodyResponse(req, 200, body, int64(len(body))), nil
}

// bodyResponse is a backend response with body; length is its
// ContentLength (-1: unknown).
func bodyResponse(req *http.Request, status int, body []byte, length int64) *http.Response {
	return &http.Response{
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"X-Method": {req.Method}},
		ContentLength: length,
		Body:          io.NopCloser(bytes.NewReader(body)),
		Request:       req,
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// testAgent is ServeStream running on the agent end of a pipe.
type testAgent struct {
	logs   *observer.ObservedLogs
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startAgent serves ag with rt as every request's backend until the test
// ends.
func startAgent(t testing.TB, ag *pipeEnd, rt http.RoundTripper) *testAgent {
	t.Helper()
	return startAgentOn(t, ag, ag, rt)
}

// startAgentOn is startAgent serving st, a wrapper of ag.
func startAgentOn(t testing.TB, ag *pipeEnd, st Stream, rt http.RoundTripper) *testAgent {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	srv := &Server{
		Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return rt, nil },
		Log:     zap.New(core),
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &testAgent{logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- srv.ServeStream(ctx, st) }()
	t.Cleanup(func() {
		cancel()
		ag.p.close()
		a.result(t)
	})
	return a
}

// result waits for ServeStream to return and returns its error.
func (a *testAgent) result(t testing.TB) error {
	t.Helper()
	a.once.Do(func() {
		select {
		case a.err = <-a.done:
		case <-time.After(hangGuard):
			t.Fatal("ServeStream did not return")
		}
	})
	return a.err
}

// warnings returns the agent's warn-level log entries with message msg.
func (a *testAgent) warnings(msg string) []observer.LoggedEntry {
	return a.logs.FilterLevelExact(zapcore.WarnLevel).FilterMessage(msg).All()
}

// testHead is a valid request head; End and data are up to the caller.
func testHead(method, path string) *tunnelv1.RequestHead {
	return &tunnelv1.RequestHead{
		Method: method, Scheme: "http", Authority: "backend:80", Path: path, Host: "backend",
		ContentLength: -1, App: "app", RequestId: "rid",
	}
}

// sendAll sends frames on st; it stops quietly at the first failure (the
// peer may reset the stream on any of them).
func sendAll(st Stream, frames ...*Frame) {
	for _, f := range frames {
		if st.Send(f) != nil {
			return
		}
	}
}

// unknownFrame is a frame from a newer peer: it carries only a field this
// version does not know.
func unknownFrame(t testing.TB) *Frame {
	t.Helper()
	b := protowire.AppendTag(nil, 99, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("from a future version"))
	f, err := DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("the test frame lost its unknown field")
	}
	return f
}

// wantResponse reads a whole one-frame response and checks it.
func wantResponse(t testing.TB, gw Stream, status int32, body string) {
	t.Helper()
	f := recvFrame(t, gw)
	if f.Response.GetStatus() != status || string(f.Data) != body || !f.End {
		t.Fatalf("response frame: %v, want status %d, body %q and end", f, status, body)
	}
}

func TestServeStreamSkipsUnknownAndEmptyFrames(t *testing.T) {
	gw, ag := newPipe(8)
	be := &testBackend{}
	a := startAgent(t, ag, be)
	unknown := unknownFrame(t)

	// Before any exchange, inside a request body, and between exchanges.
	sendAll(gw, &Frame{}, unknown,
		&Frame{Request: testHead("POST", "/one")}, &Frame{}, &Frame{Data: []byte("ab")}, unknown,
		&Frame{Data: []byte("cd")}, &Frame{End: true})
	wantResponse(t, gw, 200, "abcd")
	ag.wantFinish(t, true)
	sendAll(gw, unknown, &Frame{}, &Frame{Request: testHead("GET", "/two"), End: true})
	wantResponse(t, gw, 200, "")
	ag.wantFinish(t, true)

	if err := gw.closeSend(); err != nil {
		t.Fatal(err)
	}
	if err := a.result(t); err != nil {
		t.Fatalf("ServeStream after a clean end: %v", err)
	}
	if n := be.complete.Load(); n != 2 {
		t.Fatalf("backend served %d requests, want 2", n)
	}
	if w := a.logs.FilterLevelExact(zapcore.WarnLevel).All(); len(w) != 0 {
		t.Fatalf("warnings for frames that must be skipped: %v", w)
	}
}

func TestServeStreamResetsOnProtocolError(t *testing.T) {
	reqEnded := []*Frame{{Request: testHead("GET", "/"), End: true}}
	cases := []struct {
		name     string
		prelude  []*Frame // a valid start
		answered bool     // the prelude is a whole exchange: read its response first
		bad      []*Frame
		want     string
	}{
		{name: "data with no exchange", bad: []*Frame{{Data: []byte("x")}}, want: "body frame outside an exchange"},
		{name: "end with no exchange", bad: []*Frame{{End: true}}, want: "body frame outside an exchange"},
		{name: "trailers with no exchange", bad: []*Frame{{Trailers: []*tunnelv1.Header{{Name: "A", Values: []string{"1"}}}}},
			want: "body frame outside an exchange"},
		{name: "data after the request ended", prelude: reqEnded, answered: true,
			bad: []*Frame{{Data: []byte("x")}}, want: "body frame outside an exchange"},
		{name: "second end", prelude: reqEnded, answered: true,
			bad: []*Frame{{End: true}}, want: "body frame outside an exchange"},
		{name: "new head before the request ended",
			prelude: []*Frame{{Request: testHead("POST", "/")}, {Data: []byte("partial")}},
			bad:     []*Frame{{Request: testHead("GET", "/"), End: true}},
			want:    "new request head before the previous request ended"},
		{name: "response head from the gateway", bad: []*Frame{{Response: &tunnelv1.ResponseHead{Status: 200}, End: true}},
			want: "the gateway sent a response frame"},
		{name: "error from the gateway", bad: []*Frame{{Error: &tunnelv1.Error{Code: "x"}}},
			want: "the gateway sent a response frame"},
		{name: "response head inside a request body", prelude: []*Frame{{Request: testHead("POST", "/")}},
			bad: []*Frame{{Response: &tunnelv1.ResponseHead{Status: 200}}}, want: "the gateway sent a response frame"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(8)
			be := &testBackend{}
			a := startAgent(t, ag, be)
			sendAll(gw, tc.prelude...)
			wantComplete := int32(0)
			if tc.answered {
				wantResponse(t, gw, 200, "")
				ag.wantFinish(t, true)
				wantComplete = 1
			}
			sendAll(gw, tc.bad...)

			err := a.result(t)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ServeStream = %v, want ErrMalformed: %s", err, tc.want)
			}
			ag.wantFinish(t, false)
			ag.noCleanFinish(t)
			w := a.warnings("tunnel protocol error; resetting the stream")
			if len(w) != 1 || !strings.Contains(w[0].ContextMap()["error"].(string), tc.want) {
				t.Fatalf("warnings: %v", a.logs.All())
			}
			// An unfinished request never reaches the backend whole: it
			// sees the reset as a failed body read.
			if n := be.complete.Load(); n != wantComplete {
				t.Fatalf("backend completed %d requests, want %d", n, wantComplete)
			}
			if _, err := gw.Recv(); err == nil {
				// The only frame the agent may have sent is a response to
				// the answered prelude, which was read above.
				t.Fatal("the stream is still usable after a protocol error")
			}
		})
	}
}

func TestServeStreamRefusesMalformedHeads(t *testing.T) {
	for name, edit := range malformedHeads() {
		for _, streamed := range []bool{false, true} {
			tname := name
			if streamed {
				tname += "/streamed body"
			}
			t.Run(tname, func(t *testing.T) {
				gw, ag := newPipe(8)
				be := &testBackend{}
				a := startAgent(t, ag, be)
				head := validHead()
				edit(head)
				if streamed {
					if head.ContentLength >= 0 {
						head.ContentLength = -1
					}
					sendAll(gw, &Frame{Request: head, Data: []byte("ab")}, &Frame{Data: []byte("cd")})
				} else {
					sendAll(gw, &Frame{Request: head, Data: []byte("hello"), End: true})
				}
				f := recvFrame(t, gw)
				if f.Error.GetCode() != "tunnel-failed" || f.Response != nil || len(f.Data) != 0 {
					t.Fatalf("agent answered %v, want a tunnel-failed error", f)
				}
				if streamed {
					// The rest of the body is dropped, not an error.
					sendAll(gw, &Frame{Data: []byte("ef")}, &Frame{End: true})
				}
				// Like RoundTrip, the gateway resets after an error.
				gw.Finish(false)
				if err := a.result(t); !errors.Is(err, errPipeReset) {
					t.Fatalf("ServeStream = %v, want the reset", err)
				}
				ag.noCleanFinish(t)
				if n := be.calls.Load(); n != 0 {
					t.Fatalf("the backend got %d requests", n)
				}
				if w := a.warnings("malformed request from the gateway"); len(w) != 1 {
					t.Fatalf("warnings: %v", a.logs.All())
				}
			})
		}
	}
}

func TestServeStreamBackendFailure(t *testing.T) {
	gw, ag := newPipe(8)
	be := rtFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("connection refused") })
	a := startAgent(t, ag, be)
	sendAll(gw, &Frame{Request: testHead("GET", "/"), End: true})
	f := recvFrame(t, gw)
	if f.Error.GetCode() != "backend-unreachable" || !strings.Contains(f.Error.GetMessage(), "connection refused") {
		t.Fatalf("agent answered %v", f)
	}
	gw.Finish(false)
	a.result(t)
	ag.noCleanFinish(t)
	if w := a.warnings("exchange failed"); len(w) != 1 || w[0].ContextMap()["code"] != "backend-unreachable" {
		t.Fatalf("warnings: %v", a.logs.All())
	}
}

func TestServeStreamEnds(t *testing.T) {
	t.Run("clean end from the gateway", func(t *testing.T) {
		gw, ag := newPipe(8)
		a := startAgent(t, ag, &testBackend{})
		gw.closeSend()
		if err := a.result(t); err != nil {
			t.Fatalf("ServeStream = %v, want nil", err)
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		_, ag := newPipe(8)
		a := startAgent(t, ag, &testBackend{})
		// A transport ends the stream when its context ends.
		a.cancel()
		ag.p.close()
		if err := a.result(t); err != nil {
			t.Fatalf("ServeStream = %v, want nil", err)
		}
	})
	t.Run("reset in the middle of a request body", func(t *testing.T) {
		gw, ag := newPipe(8)
		seen := make(chan error, 1)
		be := rtFunc(func(req *http.Request) (*http.Response, error) {
			_, err := io.ReadAll(req.Body)
			seen <- err
			return nil, err
		})
		a := startAgent(t, ag, be)
		sendAll(gw, &Frame{Request: testHead("PUT", "/"), Data: []byte("half")})
		gw.Finish(false)
		if err := a.result(t); !errors.Is(err, errPipeReset) {
			t.Fatalf("ServeStream = %v", err)
		}
		// ServeStream waits for the exchange, so the backend has returned.
		select {
		case err := <-seen:
			if err == nil {
				t.Fatal("the backend read a whole body from a reset stream")
			}
		default:
			// The reset won the race with the backend call: it never ran.
		}
	})
}

// TestServeStreamBodilessInline covers the exchanges that ServeStream
// serves in its own goroutine (no request body): a reset while the backend
// is still busy aborts the exchange once the watcher runs (after
// watchDelay), and the watcher hands a head it received back to the loop,
// which serves it after the slow exchange.
func TestServeStreamBodilessInline(t *testing.T) {
	t.Run("reset aborts the exchange", func(t *testing.T) {
		gw, ag := newPipe(8)
		entered := make(chan struct{})
		be := rtFunc(func(req *http.Request) (*http.Response, error) {
			close(entered)
			<-req.Context().Done() // only the reset ends this
			return nil, context.Cause(req.Context())
		})
		a := startAgent(t, ag, be)
		sendAll(gw, &Frame{Request: testHead("GET", "/"), End: true})
		<-entered
		gw.Finish(false)
		if err := a.result(t); !errors.Is(err, errPipeReset) {
			t.Fatalf("ServeStream = %v, want the reset", err)
		}
	})
	t.Run("the watcher hands the next head back", func(t *testing.T) {
		gw, ag := newPipe(8)
		st := &recvNotify{Stream: ag, recvd: make(chan struct{}, 8)}
		be := rtFunc(func(req *http.Request) (*http.Response, error) {
			if req.URL.Path == "/slow" {
				// Wait until the watcher received the next head: the
				// loop's own Recv was the first.
				for range 2 {
					select {
					case <-st.recvd:
					case <-time.After(hangGuard):
						return nil, errors.New("the watcher never received")
					}
				}
			}
			return bodyResponse(req, 200, []byte(req.URL.Path), int64(len(req.URL.Path))), nil
		})
		a := startAgentOn(t, ag, st, be)
		// A gateway sends the next head only after the response; this one
		// breaks that rule so that the watcher, not the loop, receives it.
		sendAll(gw, &Frame{Request: testHead("GET", "/slow"), End: true},
			&Frame{Request: testHead("GET", "/next"), End: true})
		wantResponse(t, gw, 200, "/slow")
		wantResponse(t, gw, 200, "/next")
		gw.closeSend()
		if err := a.result(t); err != nil {
			t.Fatalf("ServeStream = %v", err)
		}
	})
}

// recvNotify is a Stream that signals every Recv that returned.
type recvNotify struct {
	Stream
	recvd chan struct{}
}

func (s *recvNotify) Recv() (*Frame, error) {
	f, err := s.Stream.Recv()
	s.recvd <- struct{}{}
	return f, err
}

// TestServeStreamChunksLargeResponses checks the agent's side of chunking
// with a response of unknown length.
func TestServeStreamChunksLargeResponses(t *testing.T) {
	gw, ag := newPipe(4)
	body := pattern(5*ChunkSize + 123)
	be := &testBackend{respond: func(req *http.Request, _ []byte) (*http.Response, error) {
		return bodyResponse(req, 200, body, -1), nil
	}}
	startAgent(t, ag, be)
	sendAll(gw, &Frame{Request: testHead("GET", "/"), End: true})
	head := recvFrame(t, gw)
	if head.Response.GetStatus() != 200 || len(head.Data) != 0 || head.End {
		t.Fatalf("first frame: %v", head)
	}
	var got []byte
	for range len(body) + 1 { // bounded: each frame carries a byte or ends
		f := recvFrame(t, gw)
		if len(f.Data) > ChunkSize {
			t.Fatalf("frame with %d bytes of data, over ChunkSize", len(f.Data))
		}
		got = append(got, f.Data...)
		if f.End {
			break
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("body: %d bytes, want %d", len(got), len(body))
	}
	ag.wantFinish(t, true)
}

// pattern returns n deterministic bytes that are not all alike.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// TestServeStreamDoneWithDataBeforeNextRecv: ServeStream keeps no frame's
// data past its next Recv (it queues copies), so the agent's transport may
// reuse its receive buffers (see Stream).
func TestServeStreamDoneWithDataBeforeNextRecv(t *testing.T) {
	for _, size := range []int{100, CoalesceLimit + 1, 9*ChunkSize + 7} {
		t.Run(sizeName(size), func(t *testing.T) {
			gw, ag := newPipe(4)
			srv := &Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) {
				return &testBackend{}, nil // echoes the body
			}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.ServeStream(ctx, &poisonStream{Stream: ag}) }()
			t.Cleanup(func() {
				cancel()
				ag.p.close()
				<-done
			})
			body := pattern(size)
			req := newRequest(t, "POST", "http://backend:80/", bytes.NewReader(body))
			res, err := RoundTrip(gw.lease(), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); !bytes.Equal(got, body) {
				t.Fatalf("the backend got a body of %d bytes that differs from the one sent (%d bytes)", len(got), len(body))
			}
		})
	}
}

// TestServeStreamUnaskedSwitch: a backend that answers 101 to a request
// that asked for no upgrade is the backend's fault. The agent reports it
// as a backend error with its reason and logs it; relayed, the gateway
// would refuse the 101 as a malformed frame and tell the user that the
// tunnel failed, with nothing in the agent's log.
func TestServeStreamUnaskedSwitch(t *testing.T) {
	gw, ag := newPipe(8)
	closed := make(chan struct{})
	be := rtFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: http.StatusSwitchingProtocols, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Upgrade": {"x"}, "Connection": {"Upgrade"}},
			Body:   &closeNotifier{closed: closed}, Request: req,
		}, nil
	})
	a := startAgent(t, ag, be)
	sendAll(gw, &Frame{Request: testHead("POST", "/"), Data: []byte("xyz"), End: true})
	f := recvFrame(t, gw)
	if f.Error.GetCode() != "backend-unreachable" || !strings.Contains(f.Error.GetMessage(), "switched protocols") {
		t.Fatalf("agent answered %v, want a backend-unreachable error about the switch", f)
	}
	<-closed
	gw.Finish(false)
	a.result(t)
	if w := a.warnings("exchange failed"); len(w) != 1 {
		t.Fatalf("warnings: %v", a.logs.All())
	}
}

// closeNotifier is a backend connection that reports its Close.
type closeNotifier struct {
	closed chan struct{}
	once   sync.Once
}

func (c *closeNotifier) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *closeNotifier) Write(p []byte) (int, error) { return len(p), nil }
func (c *closeNotifier) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
