package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/watchctx"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// doneCounter counts Options.Done calls.
type doneCounter struct {
	n     atomic.Int32
	first chan struct{} // closed by the first call; made by opts
}

func (d *doneCounter) opts() *Options {
	d.first = make(chan struct{})
	return &Options{App: "app", RequestID: "rid", Done: func() {
		if d.n.Add(1) == 1 {
			close(d.first)
		}
	}}
}

// wantOnce checks that Done was called exactly once, waiting for the first
// call: the exchange calls it right after it gives its stream back (Finish),
// which a test may see first.
func (d *doneCounter) wantOnce(t testing.TB) {
	t.Helper()
	if d.first != nil {
		select {
		case <-d.first:
		case <-time.After(hangGuard):
		}
	}
	if n := d.n.Load(); n != 1 {
		t.Fatalf("Done called %d times, want once", n)
	}
}

func newRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// wantEcho round-trips req over st and wants body back (the test backends
// echo the request body).
func wantEcho(t testing.TB, st Stream, req *http.Request, body []byte) {
	t.Helper()
	res, err := RoundTrip(st, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); !bytes.Equal(got, body) {
		t.Fatalf("echo: %d bytes, want %d", len(got), len(body))
	}
}

// readAll reads and closes res.Body.
func readAll(t testing.TB, res *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return b
}

func TestSmallExchangeIsOneFrameEachWay(t *testing.T) {
	big := pattern(CoalesceLimit)
	cases := []struct {
		name     string
		method   string
		body     []byte
		respond  func(req *http.Request, body []byte) (*http.Response, error) // nil: echo
		wantBody []byte
	}{
		{name: "GET", method: "GET", respond: func(req *http.Request, _ []byte) (*http.Response, error) {
			return bodyResponse(req, 200, []byte("hello world"), 11), nil
		}, wantBody: []byte("hello world")},
		{name: "small POST", method: "POST", body: []byte("hello"), wantBody: []byte("hello")},
		{name: "POST of CoalesceLimit bytes", method: "POST", body: big, wantBody: big},
		{name: "empty 200", method: "GET", respond: func(req *http.Request, _ []byte) (*http.Response, error) {
			return bodyResponse(req, 200, nil, 0), nil
		}},
		{name: "HEAD", method: "HEAD", respond: func(req *http.Request, _ []byte) (*http.Response, error) {
			res := bodyResponse(req, 200, nil, 1234)
			res.Body = http.NoBody
			return res, nil
		}},
		{name: "204", method: "DELETE", respond: func(req *http.Request, _ []byte) (*http.Response, error) {
			res := bodyResponse(req, 204, nil, 0)
			res.Body = http.NoBody
			return res, nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(8)
			startAgent(t, ag, &testBackend{respond: tc.respond})
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			var done doneCounter
			res, err := RoundTrip(gw.lease(), newRequest(t, tc.method, "http://backend:80/x?y=1", body), done.opts())
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); !bytes.Equal(got, tc.wantBody) {
				t.Fatalf("body: %d bytes, want %d", len(got), len(tc.wantBody))
			}
			gw.wantFinish(t, true)
			ag.wantFinish(t, true)
			done.wantOnce(t)

			out, in := gw.frames(), ag.frames()
			if len(out) != 1 || len(in) != 1 {
				t.Fatalf("%d frames to the agent and %d back, want 1 each", len(out), len(in))
			}
			if out[0].Request.GetMethod() != tc.method || !out[0].End || !bytes.Equal(out[0].Data, tc.body) {
				t.Fatalf("request frame: head=%v end=%v data=%d bytes", out[0].Request, out[0].End, len(out[0].Data))
			}
			if in[0].Response == nil || !in[0].End || !bytes.Equal(in[0].Data, tc.wantBody) {
				t.Fatalf("response frame: head=%v end=%v data=%d bytes", in[0].Response, in[0].End, len(in[0].Data))
			}
		})
	}
}

// checkChunked checks frames that carry a head and then a body of want in
// chunks of at most ChunkSize, ending with end.
func checkChunked(t testing.TB, side string, frames []*Frame, want []byte) {
	t.Helper()
	if len(frames) < 2 || len(frames[0].Data) != 0 || frames[0].End {
		t.Fatalf("%s: the head of a large body must travel alone (%d frames)", side, len(frames))
	}
	var got []byte
	for i, f := range frames[1:] {
		if len(f.Data) > ChunkSize {
			t.Fatalf("%s: frame %d has %d bytes of data, over ChunkSize", side, i+1, len(f.Data))
		}
		if f.Request != nil || f.Response != nil {
			t.Fatalf("%s: frame %d has a second head", side, i+1)
		}
		if f.End != (i == len(frames)-2) {
			t.Fatalf("%s: end on frame %d of %d", side, i+1, len(frames))
		}
		got = append(got, f.Data...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d body bytes, want %d", side, len(got), len(want))
	}
}

func TestLargeBodiesAreChunked(t *testing.T) {
	cases := []struct {
		name        string
		size        int
		knownLength bool // request and response say their length
	}{
		{"known length", CoalesceLimit + 1, true},
		{"unknown length", 9*ChunkSize + 7, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(2)
			body := pattern(tc.size)
			be := &testBackend{respond: func(req *http.Request, b []byte) (*http.Response, error) {
				if !tc.knownLength {
					return bodyResponse(req, 200, b, -1), nil
				}
				return bodyResponse(req, 200, b, int64(len(b))), nil
			}}
			startAgent(t, ag, be)
			req := newRequest(t, "PUT", "http://backend:80/", bytes.NewReader(body))
			if !tc.knownLength {
				req.ContentLength = -1
			}
			wantEcho(t, gw.lease(), req, body)
			gw.wantFinish(t, true)
			ag.wantFinish(t, true)
			checkChunked(t, "gateway", gw.frames(), body)
			checkChunked(t, "agent", ag.frames(), body)
		})
	}
}

// fakeAgent reads the request head on ag and answers with frames, as a
// broken or hostile agent might.
func fakeAgent(t testing.TB, ag *pipeEnd, frames ...*Frame) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := ag.Recv(); err != nil {
			return
		}
		sendAll(ag, frames...)
	}()
	t.Cleanup(func() {
		ag.p.close()
		<-done
	})
}

func TestRoundTripRejectsMalformedResponses(t *testing.T) {
	head := func(status int32) *Frame { return &Frame{Response: &tunnelv1.ResponseHead{Status: status}} }
	ended := func(f *Frame) *Frame { f.End = true; return f }
	badHeader := []*tunnelv1.Header{{Name: "X-A", Values: []string{"v\r\nSet-Cookie: evil=1"}}}
	cases := []struct {
		name    string
		upgrade bool // the request asks for a protocol switch
		frames  []*Frame
		inBody  bool // the error surfaces while reading the body
	}{
		{name: "status 0", frames: []*Frame{ended(head(0))}},
		{name: "status 99", frames: []*Frame{ended(head(99))}},
		{name: "status 1000", frames: []*Frame{ended(head(1000))}},
		// net/http would write an informational head and then a 200 of
		// its own for the body; no agent relays a 1xx but 101.
		{name: "status 100", frames: []*Frame{ended(head(100))}},
		{name: "status 103", frames: []*Frame{head(103), {Data: []byte("ab"), End: true}}},
		{name: "negative content length", frames: []*Frame{{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: -5}, End: true}}},
		{name: "header name with CRLF", frames: []*Frame{{Response: &tunnelv1.ResponseHead{Status: 200,
			Headers: []*tunnelv1.Header{{Name: "X\r\nY", Values: []string{"1"}}}}, End: true}}},
		{name: "header value with CRLF", frames: []*Frame{{Response: &tunnelv1.ResponseHead{Status: 200, Headers: badHeader}, End: true}}},
		{name: "invalid trailer name", frames: []*Frame{{Response: &tunnelv1.ResponseHead{Status: 200, TrailerNames: []string{"a:b"}}}}},
		{name: "invalid trailers with the head", frames: []*Frame{{Response: &tunnelv1.ResponseHead{Status: 200}, End: true, Trailers: badHeader}}},
		{name: "data before the head", frames: []*Frame{{Data: []byte("x")}}},
		{name: "end before the head", frames: []*Frame{{End: true}}},
		{name: "empty frame before the head", frames: []*Frame{{}}},
		{name: "request head from the agent", frames: []*Frame{{Request: testHead("GET", "/"), End: true}}},
		{name: "101 to a plain request", frames: []*Frame{head(101)}},
		{name: "101 with end to an upgrade", upgrade: true, frames: []*Frame{ended(head(101))}},
		{name: "second head in the body", frames: []*Frame{head(200), {Data: []byte("ab")}, head(200)}, inBody: true},
		{name: "request head in the body", frames: []*Frame{head(200), {Request: testHead("GET", "/")}}, inBody: true},
		{name: "invalid trailers at the end", frames: []*Frame{head(200), {Data: []byte("ab")}, {End: true, Trailers: badHeader}}, inBody: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(8)
			fakeAgent(t, ag, tc.frames...)
			req := newRequest(t, "GET", "http://backend:80/", nil)
			if tc.upgrade {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
			}
			var done doneCounter
			wantMalformed(t, gw, req, done.opts(), tc.inBody)
			done.wantOnce(t)
		})
	}
}

// wantMalformed relays req over gw with o and wants the exchange to fail
// with ErrMalformed and reset the stream: in RoundTrip, or, with inBody,
// while the response body is read.
func wantMalformed(t testing.TB, gw *pipeEnd, req *http.Request, o *Options, inBody bool) {
	t.Helper()
	res, err := RoundTrip(gw.lease(), req, o)
	if inBody {
		if err != nil {
			t.Fatalf("RoundTrip: %v; the head was valid", err)
		}
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	} else if res != nil {
		t.Fatalf("RoundTrip returned a response: %v", res.Status)
	}
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("error = %v, want ErrMalformed", err)
	}
	gw.wantFinish(t, false)
}

func TestRoundTripAgentErrorResetsStream(t *testing.T) {
	xerr := &Frame{Error: &tunnelv1.Error{Code: "backend-unreachable", Message: "refused"}}
	t.Run("instead of the head", func(t *testing.T) {
		gw, ag := newPipe(8)
		fakeAgent(t, ag, xerr)
		var done doneCounter
		_, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/", nil), done.opts())
		var xe *ExchangeError
		if !errors.As(err, &xe) || xe.Code != "backend-unreachable" || xe.Message != "refused" {
			t.Fatalf("RoundTrip = %v, want the agent's error", err)
		}
		gw.wantFinish(t, false)
		done.wantOnce(t)
	})
	t.Run("in the middle of the body", func(t *testing.T) {
		gw, ag := newPipe(8)
		fakeAgent(t, ag, &Frame{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: -1}, Data: []byte("part")}, xerr)
		res, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/", nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		var xe *ExchangeError
		if string(b) != "part" || !errors.As(err, &xe) {
			t.Fatalf("body %q, %v; want the agent's error after the first part", b, err)
		}
		gw.wantFinish(t, false)
	})
	t.Run("from a real agent", func(t *testing.T) {
		gw, ag := newPipe(8)
		a := startAgent(t, ag, rtFunc(func(*http.Request) (*http.Response, error) {
			return nil, errors.New("dial tcp: connection refused")
		}))
		_, err := RoundTrip(gw.lease(), newRequest(t, "POST", "http://backend:80/", strings.NewReader("x")), nil)
		var xe *ExchangeError
		if !errors.As(err, &xe) || xe.Code != "backend-unreachable" {
			t.Fatalf("RoundTrip = %v", err)
		}
		gw.wantFinish(t, false)
		if err := a.result(t); !errors.Is(err, errPipeReset) {
			t.Fatalf("ServeStream = %v, want the gateway's reset", err)
		}
		ag.noCleanFinish(t)
	})
}

// TestRoundTripResetsWhenResponseEndsBeforeRequestBody: a backend that
// answers without reading the whole request body leaves the stream with
// unread data, so it cannot carry another exchange.
func TestRoundTripResetsWhenResponseEndsBeforeRequestBody(t *testing.T) {
	gw, ag := newPipe(8)
	a := startAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
		return bodyResponse(req, 413, []byte("too big"), 7), nil
	}))
	pr, pw := io.Pipe()
	defer pw.Close()
	req := newRequest(t, "POST", "http://backend:80/upload", pr)
	req.ContentLength = -1
	var done doneCounter
	res, err := RoundTrip(gw.lease(), req, done.opts())
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, res); res.StatusCode != 413 || string(b) != "too big" {
		t.Fatalf("got %d %q", res.StatusCode, b)
	}
	gw.wantFinish(t, false)
	done.wantOnce(t)
	if err := a.result(t); !errors.Is(err, errPipeReset) {
		t.Fatalf("ServeStream = %v", err)
	}
	ag.noCleanFinish(t)
	// The body copier gives up once the client side ends.
	pw.CloseWithError(errors.New("client gone"))
}

func TestStreamReuse(t *testing.T) {
	gw, ag := newPipe(4)
	be := &testBackend{}
	a := startAgent(t, ag, be)
	bodies := [][]byte{nil, []byte("small"), pattern(3*ChunkSize + 1), nil}
	for i, body := range bodies {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req := newRequest(t, "POST", "http://backend:80/", r)
		if i == 2 {
			req.ContentLength = -1 // streamed
		}
		res, err := RoundTrip(gw.lease(), req, nil)
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		if got := readAll(t, res); !bytes.Equal(got, body) {
			t.Fatalf("exchange %d: %d bytes, want %d", i, len(got), len(body))
		}
		if clean := gw.nextFinish(t); !clean {
			t.Fatalf("exchange %d: the gateway reset the stream", i)
		}
		ag.wantFinish(t, true)
	}
	if n := be.complete.Load(); n != int32(len(bodies)) {
		t.Fatalf("backend served %d requests, want %d", n, len(bodies))
	}
	if err := gw.closeSend(); err != nil {
		t.Fatal(err)
	}
	if err := a.result(t); err != nil {
		t.Fatalf("ServeStream after reuse: %v", err)
	}
}

func TestRoundTripCancelResetsStream(t *testing.T) {
	gw, ag := newPipe(8)
	arrived := make(chan struct{})
	backendErr := make(chan error, 1)
	startAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
		close(arrived)
		<-req.Context().Done()
		backendErr <- req.Context().Err()
		return nil, req.Context().Err()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := newRequest(t, "GET", "http://backend:80/slow", nil).WithContext(ctx)
	go func() {
		<-arrived
		cancel()
	}()
	var done doneCounter
	_, err := RoundTrip(gw.lease(), req, done.opts())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip = %v, want context.Canceled", err)
	}
	gw.wantFinish(t, false)
	done.wantOnce(t)
	select {
	case err := <-backendErr:
		if err == nil {
			t.Fatal("the backend request was not cancelled")
		}
	case <-time.After(hangGuard):
		t.Fatal("the backend never saw the cancellation")
	}
}

func TestRoundTripHeadTimeout(t *testing.T) {
	gw, ag := newPipe(8)
	fakeAgent(t, ag) // reads the request, never answers
	o := &Options{HeadTimeout: 20 * time.Millisecond}
	_, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/", nil), o)
	if !errors.Is(err, ErrHeadTimeout) || errors.Is(err, ErrNoResponse) {
		t.Fatalf("RoundTrip = %v, want ErrHeadTimeout (and not ErrNoResponse: the backend may still be at it)", err)
	}
	gw.wantFinish(t, false)
}

// TestRoundTripNoResponse: a stream that breaks after the request went out
// and before the response head (the agent's connection lost) is
// ErrNoResponse, which the gateway may retry for a request safe to
// repeat; an answer of the agent's, even an error, is not.
func TestRoundTripNoResponse(t *testing.T) {
	t.Run("stream broke", func(t *testing.T) {
		gw, ag := newPipe(8)
		go func() {
			if _, err := ag.Recv(); err == nil {
				ag.p.close() // the transport resets the stream
			}
		}()
		_, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/", nil), nil)
		if !errors.Is(err, ErrNoResponse) || errors.Is(err, ErrNotSent) {
			t.Fatalf("RoundTrip = %v, want ErrNoResponse", err)
		}
	})
	t.Run("agent's error", func(t *testing.T) {
		gw, ag := newPipe(8)
		fakeAgent(t, ag, &Frame{Error: &tunnelv1.Error{Code: "backend-unreachable", Message: "refused"}, End: true})
		_, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/", nil), nil)
		var ee *ExchangeError
		if !errors.As(err, &ee) || errors.Is(err, ErrNoResponse) {
			t.Fatalf("RoundTrip = %v, want the agent's error and not ErrNoResponse", err)
		}
	})
}

func TestRoundTripNotSent(t *testing.T) {
	t.Run("small body stays replayable", func(t *testing.T) {
		gw, _ := newPipe(8)
		gw.p.close()
		var done doneCounter
		req := newRequest(t, "POST", "http://backend:80/", strings.NewReader("hello"))
		_, err := RoundTrip(gw.lease(), req, done.opts())
		if !errors.Is(err, ErrNotSent) {
			t.Fatalf("RoundTrip = %v, want ErrNotSent", err)
		}
		if b, err := io.ReadAll(req.Body); err != nil || string(b) != "hello" {
			t.Fatalf("body after a failed send: %q, %v", b, err)
		}
		gw.wantFinish(t, false)
		done.wantOnce(t)
	})
	t.Run("streamed body is untouched", func(t *testing.T) {
		gw, _ := newPipe(8)
		gw.p.close()
		body := &countingReader{r: strings.NewReader("hello")}
		req := newRequest(t, "POST", "http://backend:80/", body)
		req.ContentLength = -1
		_, err := RoundTrip(gw.lease(), req, nil)
		if !errors.Is(err, ErrNotSent) || body.reads.Load() != 0 {
			t.Fatalf("RoundTrip = %v after %d body reads", err, body.reads.Load())
		}
	})
	t.Run("broken small body", func(t *testing.T) {
		gw, _ := newPipe(8)
		req := newRequest(t, "POST", "http://backend:80/", io.LimitReader(strings.NewReader("hel"), 3))
		req.ContentLength = 5 // the client promised more than it sent
		_, err := RoundTrip(gw.lease(), req, nil)
		var be *ClientBodyError
		if !errors.Is(err, ErrNotSent) || !errors.As(err, &be) {
			t.Fatalf("RoundTrip = %v, want a ClientBodyError before sending", err)
		}
		gw.wantFinish(t, false)
		if n := len(gw.frames()); n != 0 {
			t.Fatalf("%d frames sent for a broken body", n)
		}
	})
}

// countingReader is a request body that records its reads and Close.
type countingReader struct {
	r      io.Reader
	reads  atomic.Int32
	closed atomic.Bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.r.Read(p)
}

func (c *countingReader) Close() error {
	c.closed.Store(true)
	return nil
}

func TestRoundTripUpgrade(t *testing.T) {
	gw, ag := newPipe(8)
	ping := pattern(2*ChunkSize + 1) // written at once, sent in chunks
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- func() error {
			f, err := ag.Recv()
			if err != nil {
				return err
			}
			if f.Request.GetContentLength() != 0 || f.End {
				return errors.New("an upgrade request must announce no body and no end")
			}
			if err := ag.Send(&Frame{Response: &tunnelv1.ResponseHead{Status: 101,
				Headers: []*tunnelv1.Header{{Name: "Upgrade", Values: []string{"websocket"}}}}}); err != nil {
				return err
			}
			var got []byte
			for len(got) < len(ping) {
				if f, err = ag.Recv(); err != nil {
					return err
				}
				if len(f.Data) == 0 || len(f.Data) > ChunkSize {
					return fmt.Errorf("upgraded data frame of %d bytes", len(f.Data))
				}
				got = append(got, f.Data...)
			}
			if !bytes.Equal(got, ping) {
				return errors.New("the upgraded bytes changed on the way")
			}
			return ag.Send(&Frame{Data: []byte("pong"), End: true})
		}()
	}()
	req := newRequest(t, "GET", "http://backend:80/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	res, err := RoundTrip(gw.lease(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, ok := res.Body.(io.ReadWriteCloser)
	if res.StatusCode != 101 || !ok {
		t.Fatalf("got %d, writable body %v", res.StatusCode, ok)
	}
	if n, err := conn.Write(ping); err != nil || n != len(ping) {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(conn); err != nil || string(b) != "pong" {
		t.Fatalf("read %q, %v", b, err)
	}
	if err := <-agentDone; err != nil {
		t.Fatal(err)
	}
	conn.Close()
	gw.wantFinish(t, false) // upgraded streams are never reused
}

// poisonStream overwrites the data of the frame it returned last when Recv
// is called again, as a transport that reuses its receive buffers does.
type poisonStream struct {
	Stream
	prev *Frame
}

func (s *poisonStream) Recv() (*Frame, error) {
	if s.prev != nil {
		for i := range s.prev.Data {
			s.prev.Data[i] = 0xEE
		}
	}
	f, err := s.Stream.Recv()
	s.prev = f
	return f, err
}

// TestRoundTripDoneWithDataBeforeNextRecv: RoundTrip has copied all of a
// frame's data out before its next Recv, which is what lets the gateway's
// gRPC transport reuse its receive buffers (see Stream).
func TestRoundTripDoneWithDataBeforeNextRecv(t *testing.T) {
	for _, size := range []int{100, CoalesceLimit + 1, 9*ChunkSize + 7} {
		t.Run(sizeName(size), func(t *testing.T) {
			gw, ag := newPipe(4)
			body := pattern(size)
			startAgent(t, ag, &testBackend{respond: func(req *http.Request, _ []byte) (*http.Response, error) {
				return bodyResponse(req, 200, body, -1), nil
			}})
			res, err := RoundTrip(&poisonStream{Stream: gw.lease()}, newRequest(t, "GET", "http://backend:80/", nil), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); !bytes.Equal(got, body) {
				t.Fatalf("body of %d bytes differs from what the backend sent (%d bytes)", len(got), len(body))
			}
		})
	}
}

// TestRoundTripWatchesContextLazily: a bodiless exchange whose head comes
// at once never registers with the request's context; one whose head is
// late does (after watchDelay), and its cancellation then resets the
// stream.
func TestRoundTripWatchesContextLazily(t *testing.T) {
	gw, ag := newPipe(8)
	release := make(chan struct{})
	startAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Path == "/slow" {
			select {
			case <-release:
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
		}
		return bodyResponse(req, 200, []byte("ok"), 2), nil
	}))
	defer close(release)
	ctx := watchctx.New()
	var done doneCounter
	res, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/fast", nil).WithContext(ctx), done.opts())
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	select {
	case <-ctx.Watched:
		t.Fatal("a fast exchange watched its context")
	default:
	}

	errc := make(chan error, 1)
	go func() {
		_, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/slow", nil).WithContext(ctx), nil)
		errc <- err
	}()
	select {
	case <-ctx.Watched: // the head timer registers the watch after watchDelay
	case <-time.After(hangGuard):
		t.Fatal("a late exchange never watched its context")
	}
	ctx.Cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("late head: RoundTrip = %v, want context.Canceled", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("cancelling a late exchange did not end it")
	}
}

// TestHeadTimerStaleRun: head timers are pooled, so a run of one that
// started before its exchange gave it back may find the next holder. That
// holder then only starts watching its request's context early: it is not
// aborted, and its timer keeps working. A run after the timer went back to
// the pool does nothing.
func TestHeadTimerStaleRun(t *testing.T) {
	gw, _ := newPipe(1)
	req, err := http.NewRequestWithContext(t.Context(), "GET", "http://backend/", nil)
	if err != nil {
		t.Fatal(err)
	}
	ex := &clientExchange{st: gw, req: req}
	ex.startHeadTimer(time.Hour)
	ht := ex.headTimer
	ht.fire() // as if a run left over from an earlier holder
	ex.watchMu.Lock()
	watching := ex.stopWatch != nil
	ex.watchMu.Unlock()
	if !watching {
		t.Error("the early run did not start watching the request's context")
	}
	if p := ex.abortErr.Load(); p != nil {
		t.Fatalf("the early run aborted the exchange: %v", *p)
	}
	ex.stopHeadTimer()
	ht.fire() // back in the pool: no holder
	if p := ex.abortErr.Load(); p != nil {
		t.Fatalf("a run after the timer was given back aborted the exchange: %v", *p)
	}
	ex.unwatch()
}

// TestRoundTripHeadSent: HeadSent sees the request once its head is on its
// way and before the response head came (a long poll may then wait long),
// and not when the head could not be sent.
func TestRoundTripHeadSent(t *testing.T) {
	t.Run("sent", func(t *testing.T) {
		gw, ag := newPipe(8)
		release := make(chan struct{})
		startAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
			<-release
			return bodyResponse(req, 200, []byte(req.Header.Get("X-Poll")), -1), nil
		}))
		sent := make(chan *http.Request, 1)
		req := newRequest(t, "GET", "http://backend:80/poll", nil)
		req.Header.Set("X-Poll", "42")
		type result struct {
			res *http.Response
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := RoundTrip(gw.lease(), req, &Options{HeadSent: func(r *http.Request) { sent <- r }})
			done <- result{res, err}
		}()
		select {
		case r := <-sent:
			if r != req {
				t.Errorf("HeadSent got %p, want the request %p", r, req)
			}
		case <-time.After(hangGuard):
			close(release)
			t.Fatal("HeadSent not called while the response was held")
		}
		close(release)
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		b, err := io.ReadAll(r.res.Body)
		r.res.Body.Close()
		if err != nil || string(b) != "42" {
			t.Fatalf("body %q, %v; want the header the agent received", b, err)
		}
		if len(sent) != 0 {
			t.Error("HeadSent called more than once")
		}
	})
	t.Run("not sent", func(t *testing.T) {
		gw, _ := newPipe(8)
		gw.p.close()
		called := false
		_, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend:80/", nil),
			&Options{HeadSent: func(*http.Request) { called = true }})
		if !errors.Is(err, ErrNotSent) || called {
			t.Fatalf("RoundTrip = %v, HeadSent called %v; want ErrNotSent without the call", err, called)
		}
	})
}
