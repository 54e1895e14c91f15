package tunnel

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// informationalLog is an InformationalWriter that records what it got.
type informationalLog struct {
	mu    sync.Mutex
	codes []int
	heads []http.Header
}

func (l *informationalLog) WriteInformational(code int, h http.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.codes = append(l.codes, code)
	l.heads = append(l.heads, h)
}

func (l *informationalLog) got() ([]int, []http.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.codes, l.heads
}

func earlyHints(code int, link string) *Frame {
	return &Frame{Informational: &tunnelv1.ResponseHead{
		Status: int32(code), Headers: []*tunnelv1.Header{{Name: "link", Values: []string{link}}},
	}}
}

// TestInformationalRelayed: informational frames before the head reach
// Options.Informational in order, with their headers, and the response
// that follows is whole; the request head asks for them only when the
// gateway takes them.
func TestInformationalRelayed(t *testing.T) {
	gw, ag := newPipe(8)
	heads := make(chan *Frame, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := ag.Recv()
		if err != nil {
			return
		}
		heads <- f
		sendAll(ag, earlyHints(102, "</p>"), earlyHints(103, "</a.css>; rel=preload"),
			&Frame{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: 2}, Data: []byte("ok"), End: true})
	}()
	t.Cleanup(func() { ag.p.close(); <-done })
	var log informationalLog
	var d doneCounter
	o := d.opts()
	o.Informational = &log
	res, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend/", nil), o)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(body) != "ok" || res.StatusCode != 200 {
		t.Fatalf("response %d %q, %v", res.StatusCode, body, err)
	}
	if !(<-heads).GetRequest().GetInformational() {
		t.Fatal("the request head did not ask for informational responses")
	}
	codes, hs := log.got()
	if len(codes) != 2 || codes[0] != 102 || codes[1] != 103 || hs[1].Get("Link") != "</a.css>; rel=preload" {
		t.Fatalf("informational responses %v %v", codes, hs)
	}
	if res.Header.Get("Link") != "" {
		t.Fatalf("the final response has the informational Link header: %v", res.Header)
	}
	d.wantOnce(t)
}

// TestInformationalMalformed: informational frames the gateway did not
// ask for, with a status that is not relayed, with other fields, past the
// limits, or after the response head (in its body) are protocol errors that
// reset the stream; nothing panics.
func TestInformationalMalformed(t *testing.T) {
	head := &Frame{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: -1}}
	hint := earlyHints(103, "</a.css>")
	flood := make([]*Frame, MaxInformational+1)
	for i := range flood {
		flood[i] = hint
	}
	big := earlyHints(103, strings.Repeat("x", 50<<10))
	for _, tc := range []struct {
		name   string
		asked  bool // the gateway takes informational responses
		frames []*Frame
		inBody bool // the error surfaces while reading the body
	}{
		{name: "not asked for", frames: []*Frame{hint, head}},
		{name: "status 100", asked: true, frames: []*Frame{earlyHints(100, "x"), head}},
		{name: "status 101", asked: true, frames: []*Frame{earlyHints(101, "x"), head}},
		{name: "status 200", asked: true, frames: []*Frame{earlyHints(200, "x"), head}},
		{name: "status 99", asked: true, frames: []*Frame{earlyHints(99, "x"), head}},
		{name: "bad header", asked: true, frames: []*Frame{{Informational: &tunnelv1.ResponseHead{
			Status: 103, Headers: []*tunnelv1.Header{{Name: "Li nk", Values: []string{"x"}}},
		}}, head}},
		{name: "with a length", asked: true, frames: []*Frame{{Informational: &tunnelv1.ResponseHead{Status: 103, ContentLength: 5}}, head}},
		{name: "with the head", asked: true, frames: []*Frame{{Informational: hint.Informational, Response: head.Response}}},
		{name: "with data", asked: true, frames: []*Frame{{Informational: hint.Informational, Data: []byte("x")}}},
		{name: "too many", asked: true, frames: append(flood, head)},
		{name: "too large", asked: true, frames: []*Frame{big, big, head}},
		{name: "after the head", asked: true, frames: []*Frame{head, hint}, inBody: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(len(tc.frames) + 1)
			fakeAgent(t, ag, tc.frames...)
			var d doneCounter
			o := d.opts()
			if tc.asked {
				o.Informational = &informationalLog{}
			}
			wantMalformed(t, gw, newRequest(t, "GET", "http://backend/", nil), o, tc.inBody)
			d.wantOnce(t)
		})
	}
	t.Run("from the gateway", func(t *testing.T) {
		gw, ag := newPipe(8)
		a := startAgent(t, ag, &testBackend{})
		sendAll(gw, &Frame{Request: testHead("PUT", "/")}, hint)
		if err := a.result(t); !errors.Is(err, ErrMalformed) {
			t.Fatalf("ServeStream = %v, want ErrMalformed", err)
		}
	})
}

// hintingBackend is a backend client that reports informational
// responses before its answer, as net/http's clients do: to the request's
// client trace, unless it relays them itself (direct).
type hintingBackend struct {
	codes  []int
	direct bool
	err    error // what the last report returned
}

func (b *hintingBackend) RelaysInformational(*http.Request) bool { return b.direct }

func (b *hintingBackend) RoundTrip(req *http.Request) (*http.Response, error) {
	trace := httptrace.ContextClientTrace(req.Context())
	for _, code := range b.codes {
		h := http.Header{"Link": {"</a.css>; rel=preload"}}
		if b.direct {
			b.err = RelayInformational(req.Context(), code, h)
		} else if trace != nil && trace.Got1xxResponse != nil {
			b.err = trace.Got1xxResponse(code, textproto.MIMEHeader(h))
		}
		if b.err != nil {
			return nil, b.err
		}
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, ContentLength: 0, Request: req}, nil
}

// TestInformationalAgent: the agent relays 102–199 but 101 from a backend
// client of either kind when the head asks for them, drops them (and 100)
// otherwise, and fails the exchange with an InformationalLimitError at the
// limit.
func TestInformationalAgent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		asked  bool
		direct bool
		codes  []int
		want   []int // relayed
		limit  bool  // the backend's client gets an InformationalLimitError
	}{
		{name: "trace", asked: true, codes: []int{100, 102, 103}, want: []int{102, 103}},
		{name: "direct", asked: true, direct: true, codes: []int{103, 103}, want: []int{103, 103}},
		{name: "not asked", codes: []int{103}},
		{name: "not asked, direct", direct: true, codes: []int{103}},
		{name: "flood", asked: true, codes: []int{103, 103, 103, 103, 103, 103, 103, 103, 103, 103}, limit: true,
			want: []int{103, 103, 103, 103, 103, 103, 103, 103}},
		{name: "flood, direct", asked: true, direct: true, codes: []int{100, 100, 100, 100, 100, 100, 100, 100, 100}, limit: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, ag := newPipe(16)
			b := &hintingBackend{codes: tc.codes, direct: tc.direct}
			startAgent(t, ag, b)
			var log informationalLog
			o := &Options{}
			if tc.asked {
				o.Informational = &log
			}
			res, err := RoundTrip(gw.lease(), newRequest(t, "GET", "http://backend/", nil), o)
			var ee *ExchangeError
			var le *InformationalLimitError
			switch {
			case tc.limit && !errors.As(err, &ee):
				t.Fatalf("RoundTrip = %v, %v; want the agent's error", res, err)
			case tc.limit && !errors.As(b.err, &le):
				t.Fatalf("the backend's client got %v, want an InformationalLimitError", b.err)
			case tc.limit && !strings.Contains(ee.Message, "informational (1xx) responses"):
				t.Fatalf("error message %q does not say what happened", ee.Message)
			case !tc.limit && err != nil:
				t.Fatal(err)
			case !tc.limit:
				res.Body.Close()
			}
			codes, _ := log.got()
			if len(codes) != len(tc.want) {
				t.Fatalf("relayed %v, want %v", codes, tc.want)
			}
			for i := range codes {
				if codes[i] != tc.want[i] {
					t.Fatalf("relayed %v, want %v", codes, tc.want)
				}
			}
		})
	}
}

// TestRelayInformationalOutsideExchange: a context of no exchange drops
// the response.
func TestRelayInformationalOutsideExchange(t *testing.T) {
	if err := RelayInformational(context.Background(), 103, http.Header{}); err != nil {
		t.Fatal(err)
	}
}
