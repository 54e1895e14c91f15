package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// expectRequest is a PUT of body with "Expect: 100-continue".
func expectRequest(t testing.TB, body []byte) (*http.Request, *countingReader) {
	t.Helper()
	hb := &countingReader{r: bytes.NewReader(body)}
	req := newRequest(t, "PUT", "http://backend:80/upload", hb)
	req.ContentLength = int64(len(body))
	req.Header.Set("Expect", "100-continue")
	return req, hb
}

// heldOptions are the gateway's options for an agent that honours
// expect_continue.
func heldOptions(d *doneCounter) *Options {
	o := d.opts()
	o.ExpectContinue = true
	return o
}

// sentGoAhead reports whether any of frames is a go-ahead.
func sentGoAhead(frames []*Frame) bool {
	for _, f := range frames {
		if f.SendBody {
			return true
		}
	}
	return false
}

// TestExpectContinueGatewayWaitsForGoAhead: the gateway sends the head of
// a request with Expect: 100-continue with expect_continue and nothing
// else, reads no byte of the body until the agent's go-ahead, then sends
// it whole; the stream ends cleanly.
func TestExpectContinueGatewayWaitsForGoAhead(t *testing.T) {
	for _, size := range []int{5, 3*ChunkSize + 7} { // small enough to coalesce; chunked
		gw, ag := newPipe(8)
		want := pattern(size)
		req, body := expectRequest(t, want)
		var done doneCounter
		type result struct {
			res *http.Response
			err error
		}
		rt := make(chan result, 1)
		go func() {
			res, err := RoundTrip(gw.lease(), req, heldOptions(&done))
			rt <- result{res, err}
		}()
		head := recvFrame(t, ag)
		if !head.GetRequest().GetExpectContinue() || len(head.Data) > 0 || head.End {
			t.Fatalf("head frame %v: want expect_continue without body or end", head)
		}
		if n := body.reads.Load(); n != 0 {
			t.Fatalf("the body was read %d times before the agent asked for it", n)
		}
		if err := ag.Send(&Frame{SendBody: true}); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for {
			f := recvFrame(t, ag)
			got = append(got, f.Data...)
			if f.End {
				break
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("the agent received %d body bytes, want %d", len(got), len(want))
		}
		if err := ag.Send(&Frame{Response: &tunnelv1.ResponseHead{Status: 201}, End: true}); err != nil {
			t.Fatal(err)
		}
		r := <-rt
		if r.err != nil || r.res.StatusCode != 201 {
			t.Fatalf("RoundTrip = %v, %v", r.res, r.err)
		}
		readAll(t, r.res)
		gw.wantFinish(t, true)
		done.wantOnce(t)
	}
}

// TestExpectContinueRefused: a backend that answers without reading the
// body (417, 401, 413) is relayed without the gateway reading a byte of the
// client's body; the agent sends no go-ahead, the body is closed, and the
// stream, whose request side never ended, is reset.
func TestExpectContinueRefused(t *testing.T) {
	for _, status := range []int{http.StatusExpectationFailed, http.StatusUnauthorized, http.StatusRequestEntityTooLarge} {
		gw, ag := newPipe(8)
		a := startAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
			return bodyResponse(req, status, []byte("no"), 2), nil
		}))
		req, body := expectRequest(t, pattern(4*ChunkSize))
		var done doneCounter
		res, err := RoundTrip(gw.lease(), req, heldOptions(&done))
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, res); res.StatusCode != status || string(b) != "no" {
			t.Fatalf("got %d %q, want %d", res.StatusCode, b, status)
		}
		if n := body.reads.Load(); n != 0 || !body.closed.Load() {
			t.Fatalf("body read %d times, closed %v; want unread and closed", n, body.closed.Load())
		}
		gw.wantFinish(t, false)
		done.wantOnce(t)
		if err := a.result(t); !errors.Is(err, errPipeReset) {
			t.Fatalf("ServeStream = %v, want the gateway's reset", err)
		}
		if sentGoAhead(ag.frames()) {
			t.Fatal("the agent asked for a body its backend did not read")
		}
	}
}

// TestExpectContinueRealAgent: the agent asks for the body when its
// backend first reads it, before the response head, and the body arrives
// whole.
func TestExpectContinueRealAgent(t *testing.T) {
	gw, ag := newPipe(8)
	startAgent(t, ag, &testBackend{})
	want := pattern(2*ChunkSize + 3)
	req, _ := expectRequest(t, want)
	var done doneCounter
	res, err := RoundTrip(gw.lease(), req, heldOptions(&done))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); !bytes.Equal(got, want) {
		t.Fatalf("echo of %d bytes, want %d", len(got), len(want))
	}
	gw.wantFinish(t, true)
	done.wantOnce(t)
	frames := ag.frames()
	if len(frames) == 0 || !frames[0].SendBody || frames[0].Response != nil {
		t.Fatalf("the agent's first frame is %v, want the go-ahead alone", frames)
	}
	if sentGoAhead(frames[1:]) {
		t.Fatal("the agent sent a second go-ahead")
	}
}

// TestExpectContinueAgentNeverAsks: an agent that never sends the go-ahead
// nor a head fails the exchange at the head timeout, the body unread.
func TestExpectContinueAgentNeverAsks(t *testing.T) {
	gw, ag := newPipe(8)
	fakeAgent(t, ag) // reads the head, never answers
	req, body := expectRequest(t, []byte("hello"))
	var done doneCounter
	o := heldOptions(&done)
	o.HeadTimeout = 20 * time.Millisecond
	_, err := RoundTrip(gw.lease(), req, o)
	if !errors.Is(err, ErrHeadTimeout) {
		t.Fatalf("RoundTrip = %v, want ErrHeadTimeout", err)
	}
	if n := body.reads.Load(); n != 0 || !body.closed.Load() {
		t.Fatalf("body read %d times, closed %v; want unread and closed", n, body.closed.Load())
	}
	gw.wantFinish(t, false)
	done.wantOnce(t)
}

// TestExpectContinueNotHeld: the gateway holds no body back from an agent
// that does not honour expect_continue (ExpectContinue false: an older
// agent), nor without "Expect: 100-continue"; the agent sends no go-ahead
// for such a head, even when it carries the Expect header (an older
// gateway's), nor for a head with expect_continue but no Expect.
func TestExpectContinueNotHeld(t *testing.T) {
	for _, tc := range []struct {
		name   string
		expect string // the request's Expect header
		option bool   // Options.ExpectContinue
	}{
		{"older agent", "100-continue", false},
		{"no expect", "", true},
		{"other expectation", "something-else", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(8)
			startAgent(t, ag, &testBackend{})
			want := pattern(100)
			req, _ := expectRequest(t, want)
			req.Header.Del("Expect")
			if tc.expect != "" {
				req.Header.Set("Expect", tc.expect)
			}
			var done doneCounter
			o := done.opts()
			o.ExpectContinue = tc.option
			res, err := RoundTrip(gw.lease(), req, o)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); !bytes.Equal(got, want) {
				t.Fatalf("echo of %d bytes, want %d", len(got), len(want))
			}
			sent := gw.frames()
			if h := sent[0]; h.GetRequest().GetExpectContinue() || !bytes.Equal(h.Data, want) || !h.End {
				t.Fatalf("head frame %v: want the body and end with it, no expect_continue", h)
			}
			if sentGoAhead(ag.frames()) {
				t.Fatal("the agent sent a go-ahead the gateway did not ask for")
			}
			gw.wantFinish(t, true)
		})
	}
	t.Run("expect_continue without Expect", func(t *testing.T) {
		gw, ag := newPipe(8)
		startAgent(t, ag, &testBackend{})
		head := testHead("PUT", "/x")
		head.ExpectContinue = true
		sendAll(gw, &Frame{Request: head}, &Frame{Data: []byte("abc"), End: true})
		wantResponse(t, gw, 200, "abc")
		if sentGoAhead(ag.frames()) {
			t.Fatal("the agent sent a go-ahead for a request without Expect: 100-continue")
		}
	})
}

// TestExpectContinueBodyReadAfterAnswer: a backend that answers first and
// reads the body afterwards gets an error, not a body that never comes, and
// no go-ahead follows the response head.
func TestExpectContinueBodyReadAfterAnswer(t *testing.T) {
	gw, ag := newPipe(8)
	readErr := make(chan error, 1)
	startAgent(t, ag, rtFunc(func(req *http.Request) (*http.Response, error) {
		res := bodyResponse(req, 200, nil, -1)
		res.Body = io.NopCloser(readerFunc(func([]byte) (int, error) {
			_, err := req.Body.Read(make([]byte, 1))
			readErr <- err
			return 0, io.EOF
		}))
		return res, nil
	}))
	req, body := expectRequest(t, []byte("late"))
	res, err := RoundTrip(gw.lease(), req, heldOptions(new(doneCounter)))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	if err := <-readErr; !errors.Is(err, errBodyAfterAnswer) {
		t.Fatalf("the backend's late read: %v, want errBodyAfterAnswer", err)
	}
	if body.reads.Load() != 0 || sentGoAhead(ag.frames()) {
		t.Fatal("a go-ahead followed the response head")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestExpectContinueMalformedGoAhead: go-aheads the gateway did not ask
// for, a second one, one with other fields and one in the response body
// are protocol errors that reset the stream; nothing panics.
func TestExpectContinueMalformedGoAhead(t *testing.T) {
	goAhead := &Frame{SendBody: true}
	head := &Frame{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: -1}}
	for _, tc := range []struct {
		name   string
		held   bool // the gateway holds the body back
		frames []*Frame
		inBody bool // the error surfaces while reading the body
	}{
		{name: "not asked for", frames: []*Frame{goAhead}},
		{name: "twice", held: true, frames: []*Frame{goAhead, goAhead}},
		{name: "with a head", held: true, frames: []*Frame{{SendBody: true, Response: head.Response, End: true}}},
		{name: "with data", held: true, frames: []*Frame{{SendBody: true, Data: []byte("x")}}},
		{name: "in the response body", held: true, frames: []*Frame{goAhead, head, goAhead}, inBody: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(8)
			fakeAgent(t, ag, tc.frames...)
			req, _ := expectRequest(t, []byte("hello"))
			var done doneCounter
			o := done.opts()
			o.ExpectContinue = tc.held
			wantMalformed(t, gw, req, o, tc.inBody)
			done.wantOnce(t)
		})
	}
	t.Run("from the gateway", func(t *testing.T) {
		gw, ag := newPipe(8)
		a := startAgent(t, ag, &testBackend{})
		sendAll(gw, &Frame{Request: testHead("PUT", "/")}, goAhead)
		if err := a.result(t); !errors.Is(err, ErrMalformed) {
			t.Fatalf("ServeStream = %v, want ErrMalformed", err)
		}
	})
}

// TestSessionVersion: a session speaks the lower of the two versions; an
// agent whose hello says none speaks version 1, and a gateway set to zero
// speaks this build's.
func TestSessionVersion(t *testing.T) {
	for _, tc := range []struct{ agent, gateway, want uint32 }{
		{0, 0, 1},
		{1, 0, 1},
		{ProtocolVersion, 0, ProtocolVersion},
		{ProtocolVersion + 1, 0, ProtocolVersion},
		{ProtocolVersion, 1, 1},
	} {
		if got := SessionVersion(tc.agent, tc.gateway); got != tc.want {
			t.Errorf("SessionVersion(%d, %d) = %d, want %d", tc.agent, tc.gateway, got, tc.want)
		}
	}
}
