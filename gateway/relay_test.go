package gateway

import (
	"strings"

	"context"
	"errors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/protobuf/proto"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// relaySession is a tunnel.Session whose streams behave as the test says.
type relaySession struct {
	name    string
	agent   string // the AgentID it reports; "" makes it an agent of its own
	openErr error  // OpenStream fails with it
	sendErr error  // the stream's first Send fails with it
	recvErr error  // the stream's Recv fails with it: it broke after the request went out
	busy    bool   // OpenStream waits for its context: every stream is taken
	opened  int    // streams handed out
	mu      sync.Mutex
	sent    []*tunnel.Frame
	done    chan struct{}
	drain   chan struct{}
	// beforeRecv, when set, runs at the start of every Recv, on the
	// exchange's goroutine: what happens just before the stream breaks.
	beforeRecv func()
}

func newRelaySession(name string) *relaySession {
	return &relaySession{name: name, done: make(chan struct{}), drain: make(chan struct{})}
}

func (s *relaySession) OpenStream(ctx context.Context) (tunnel.Stream, error) {
	if s.busy {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openErr != nil {
		return nil, s.openErr
	}
	s.opened++
	return &relayStream{s: s}, nil
}
func (s *relaySession) Info() tunnel.SessionInfo {
	return tunnel.SessionInfo{ID: s.name, AgentName: s.name, AgentID: s.agent, Group: "g"}
}
func (s *relaySession) Draining() <-chan struct{} { return s.drain }
func (s *relaySession) Done() <-chan struct{}     { return s.done }
func (s *relaySession) Close(error)               {}

// relayStream answers every request with 200 "from <session>".
type relayStream struct {
	s        *relaySession
	finished bool
}

func (st *relayStream) Send(f *tunnel.Frame) error {
	if st.s.sendErr != nil {
		return st.s.sendErr
	}
	st.s.mu.Lock()
	st.s.sent = append(st.s.sent, proto.Clone(f).(*tunnel.Frame)) // the sender may clear f once Send returned
	st.s.mu.Unlock()
	return nil
}

func (st *relayStream) Recv() (*tunnel.Frame, error) {
	if st.s.beforeRecv != nil {
		st.s.beforeRecv()
	}
	if st.s.recvErr != nil {
		return nil, st.s.recvErr
	}
	return &tunnel.Frame{
		Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: -1},
		Data:     []byte("from " + st.s.name),
		End:      true,
	}, nil
}

func (st *relayStream) Finish(bool) { st.finished = true }

func relayGateway(t *testing.T, sessions ...*relaySession) (*relay, *exchangeState) {
	t.Helper()
	g := &Gateway{registry: NewRegistry(), log: zap.NewNop()}
	for _, s := range sessions {
		g.registry.Add(s)
	}
	route := &Route{App: "a", Group: "g", Backend: &url.URL{Scheme: "http", Host: "backend:80"}}
	return &relay{g: g}, &exchangeState{route: route, requestID: "rid"}
}

func relayRequest(t *testing.T, st *exchangeState, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = stringsNewReader(body)
	}
	req, err := http.NewRequestWithContext(context.WithValue(context.Background(), stateKey{}, st),
		"POST", "http://backend:80/x", r)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body)) // small and known: sent with the head
	return req
}

func relayBody(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRelayRetriesWhenNothingWasSent: a session that fails before any
// request byte left the gateway is skipped, and the exchange (with its
// body) goes to another session.
func TestRelayRetriesWhenNothingWasSent(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  func(*relaySession)
	}{
		{"open fails", func(s *relaySession) { s.openErr = errors.New("session closed") }},
		{"head send fails", func(s *relaySession) { s.sendErr = errors.New("connection reset") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad, good := newRelaySession("bad"), newRelaySession("good")
			tc.bad(bad)
			rt, st := relayGateway(t, bad, good)
			// Repeat so that the random pick starts on the bad session too.
			for i := 0; i < 20; i++ {
				res, err := rt.RoundTrip(relayRequest(t, st, "payload"))
				if err != nil {
					t.Fatalf("round trip %d: %v", i, err)
				}
				if got := relayBody(t, res); got != "from good" {
					t.Fatalf("round trip %d answered %q", i, got)
				}
			}
			good.mu.Lock()
			defer good.mu.Unlock()
			for _, f := range good.sent {
				if string(f.Data) != "payload" {
					t.Fatalf("the retried request lost its body: %q", f.Data)
				}
			}
			if len(good.sent) != 20 {
				t.Fatalf("good session got %d requests, want 20", len(good.sent))
			}
			for _, e := range rt.g.registry.Sessions() {
				if e.InFlight != 0 {
					t.Fatalf("session %s still counts %d exchanges in flight", e.ID, e.InFlight)
				}
			}
		})
	}
}

// TestRelayNoConnector: no session in the group → no-connector; every
// session failing → an error, never a hang.
func TestRelayNoConnector(t *testing.T) {
	rt, st := relayGateway(t)
	_, err := rt.RoundTrip(relayRequest(t, st, ""))
	if e := ErrorFor(err); e == nil || e.Code != CodeNoConnector {
		t.Fatalf("empty group: %v, want no-connector", err)
	}
	a, b := newRelaySession("a"), newRelaySession("b")
	a.sendErr, b.sendErr = errors.New("reset"), errors.New("reset")
	rt, st = relayGateway(t, a, b)
	_, err = rt.RoundTrip(relayRequest(t, st, ""))
	if err == nil || !errors.Is(err, tunnel.ErrNotSent) {
		t.Fatalf("every session failing: %v", err)
	}
	if e := ErrorFor(err); e.Code != CodeTunnelFailed {
		t.Fatalf("every session failing: code %s, want tunnel-failed", e.Code)
	}
}

// endingSession is the group's last session, which drains (or ends) while
// an exchange waits in OpenStream for a stream: OpenStream fails as the
// transports do then, and nothing of the request was sent.
type endingSession struct {
	*relaySession
	end func(*endingSession)
}

func (s *endingSession) OpenStream(ctx context.Context) (tunnel.Stream, error) {
	s.end(s)
	return nil, s.openErr
}

// TestRelayLastAgentLeavesWhileQueued: when the group's last agent drains
// or goes away while an exchange waits for one of its streams, the client
// gets 503 no-connector naming the group (nothing was sent), not 502
// tunnel-failed.
func TestRelayLastAgentLeavesWhileQueued(t *testing.T) {
	for _, tc := range []struct {
		name    string
		end     func(*endingSession)
		wantMsg string
	}{
		{"drains", func(s *endingSession) {
			s.openErr = errors.New("tunnel session is draining")
			close(s.drain)
		}, "shutting down"},
		{"ends", func(s *endingSession) {
			s.openErr = errors.New("tunnel session closed")
			close(s.done)
		}, "is connected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &endingSession{relaySession: newRelaySession("last"), end: tc.end}
			g := &Gateway{registry: NewRegistry()}
			g.registry.Add(s)
			rt := &relay{g: g}
			st := &exchangeState{route: &Route{App: "a", Group: "g"}, requestID: "rid"}
			_, err := rt.RoundTrip(relayRequest(t, st, ""))
			e := ErrorFor(err)
			if e.Code != CodeNoConnector || e.Status != http.StatusServiceUnavailable {
				t.Fatalf("got %v (code %s, status %d); want %s 503 naming group g", err, e.Code, e.Status, CodeNoConnector)
			}
			if !strings.Contains(e.Msg, `"g"`) || !strings.Contains(e.Msg, tc.wantMsg) {
				t.Errorf("message %q; want it to name group \"g\" and say %q", e.Msg, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), "tunnel session") {
				t.Errorf("the error %q lost the session's error for the log", err)
			}
		})
	}
}

// TestRelayRetriesRepeatableAfterBreak: a stream that breaks after the
// request went out and before the response head (the agent's connection
// lost) is sent again over another session when the request is safe to
// repeat (a GET without a body), never over the session that broke it;
// a POST gets the error.
func TestRelayRetriesRepeatableAfterBreak(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			broken, good := newRelaySession("broken"), newRelaySession("good")
			broken.recvErr = errors.New("connection lost")
			rt, st := relayGateway(t, broken, good)
			for i := range 20 { // the random pick starts on the broken session too
				req := relayRequest(t, st, "")
				req.Method = method
				res, err := rt.RoundTrip(req)
				switch {
				case method == "GET" && err != nil:
					t.Fatalf("GET %d: %v; want the answer of the good session", i, err)
				case method == "GET":
					if got := relayBody(t, res); got != "from good" {
						t.Fatalf("GET %d answered %q", i, got)
					}
				case err == nil:
					relayBody(t, res)
				case !errors.Is(err, tunnel.ErrNoResponse):
					t.Fatalf("POST %d: %v; want ErrNoResponse", i, err)
				}
			}
			if method == "POST" && len(broken.sent) == 0 {
				t.Fatal("the broken session never got a POST: the test proves nothing")
			}
			// Only the broken session left: a GET is not sent to it again.
			rt, st = relayGateway(t, broken)
			req := relayRequest(t, st, "")
			req.Method = "GET"
			before := broken.opened
			if _, err := rt.RoundTrip(req); !errors.Is(err, tunnel.ErrNoResponse) {
				t.Fatalf("GET with only the broken session: %v; want ErrNoResponse", err)
			}
			if n := broken.opened - before; n != 1 {
				t.Fatalf("the broken session was tried %d times for one GET; want once", n)
			}
		})
	}
}

// TestRelayRetryAvoidsTheBrokenAgent: an agent's sessions share its fate
// (one host, one network path), so a GET whose exchange broke on one of
// them is not sent to the agent's other session, nor again to the one that
// broke after another session refused a stream; what the client gets when
// nothing answers is the break, not a later error.
func TestRelayRetryAvoidsTheBrokenAgent(t *testing.T) {
	get := func(st *exchangeState) *http.Request {
		req := relayRequest(t, st, "")
		req.Method = "GET"
		return req
	}
	t.Run("two sessions of a lost agent", func(t *testing.T) {
		a1, a2, good := newRelaySession("a1"), newRelaySession("a2"), newRelaySession("good")
		a1.agent, a2.agent = "agent-a", "agent-a"
		a1.recvErr, a2.recvErr = errors.New("connection lost"), errors.New("connection lost")
		rt, st := relayGateway(t, a1, a2, good)
		for i := range 40 {
			before := a1.opened + a2.opened
			res, err := rt.RoundTrip(get(st))
			if err != nil {
				t.Fatalf("GET %d: %v; want the answer of the other agent", i, err)
			}
			if got := relayBody(t, res); got != "from good" {
				t.Fatalf("GET %d answered %q", i, got)
			}
			if n := a1.opened + a2.opened - before; n > 1 {
				t.Fatalf("GET %d went to the lost agent %d times", i, n)
			}
		}
	})
	t.Run("broken, refusing, then nothing", func(t *testing.T) {
		brk, refusing := newRelaySession("broken"), newRelaySession("refusing")
		brk.recvErr = errors.New("connection lost")
		refusing.openErr = errors.New("tunnel session is draining")
		rt, st := relayGateway(t, brk, refusing)
		for i := range 40 {
			before := brk.opened
			_, err := rt.RoundTrip(get(st))
			if n := brk.opened - before; n > 1 {
				t.Fatalf("GET %d went over the broken session %d times", i, n)
			}
			if n := brk.opened - before; n == 1 && !errors.Is(err, tunnel.ErrNoResponse) {
				t.Fatalf("GET %d: %v; want the break (ErrNoResponse)", i, err)
			}
		}
	})
}

// TestRelayRetryWaitsWithinTheTimeout: a GET breaks, and the other agent's
// streams are all taken: the retry waits for one at most what is left of
// the app's timeout, and the answer is the break, not 503 overloaded
// after a full stream wait.
func TestRelayRetryWaitsWithinTheTimeout(t *testing.T) {
	brk, busy := newRelaySession("broken"), newRelaySession("busy")
	brk.recvErr, busy.busy = errors.New("connection lost"), true
	rt, st := relayGateway(t, brk)
	// Once the GET reached the first agent, the other one joins, every
	// stream taken, and the first one's connection breaks: on the
	// exchange's goroutine, so that the break comes well within the
	// timeout. It came from the test's goroutine, which polled for the
	// stream: a goroutine that ran 200 ms late under load made the answer
	// the head timeout, not the break.
	brk.beforeRecv = func() { rt.g.registry.Add(busy) }
	st.route.Timeout = 200 * time.Millisecond
	req := relayRequest(t, st, "")
	req.Method = "GET"
	if _, err := rt.RoundTrip(req); !errors.Is(err, tunnel.ErrNoResponse) {
		t.Fatalf("GET whose retry found no free stream: %v; want the break (ErrNoResponse)", err)
	}
}

func stringsNewReader(s string) io.Reader { return &stringReader{s: s} }

// stringReader is a reader without a Len method, so that net/http does not
// treat the body as replayable on its own.
type stringReader struct{ s string }

func (r *stringReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}

// TestStdLogAtWarn: net/http's error lines reach the log as warnings, and a
// gateway logging at error level drops them without complaint.
func TestStdLogAtWarn(t *testing.T) {
	for _, tc := range []struct {
		level zapcore.Level
		kept  bool
	}{{zap.DebugLevel, true}, {zap.WarnLevel, true}, {zap.ErrorLevel, false}} {
		var out strings.Builder
		core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&out), tc.level)
		stdLogAtWarn(zap.New(core, zap.ErrorOutput(zapcore.AddSync(&out)))).Print("http: TLS handshake error")
		got := out.String()
		if strings.Contains(got, "handshake") != tc.kept || (tc.kept && !strings.Contains(got, `"level":"warn"`)) {
			t.Errorf("level %v: log output %q", tc.level, got)
		}
	}
}

// TestRelayRetryRebuildsHeader: a relayed request lets go of its header map
// once its head is sent (a long poll waits without it); when the stream
// breaks before the response head and the request is sent again over
// another agent, the second head carries the same headers as the first.
// A bodiless POST is repeated for its Idempotency-Key, which is read before
// the map goes.
func TestRelayRetryRebuildsHeader(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			broken, good := newRelaySession("broken"), newRelaySession("good")
			broken.recvErr = errors.New("connection lost")
			rt, st := relayGateway(t, broken, good)
			h := newProxyHandler(rt.g)
			h.relay = rt
			retried := 0
			for i := range 30 { // the random pick starts on the broken session too
				*st = exchangeState{route: st.route, requestID: "rid"}
				r := httptest.NewRequest(method, "http://app.test/poll", nil)
				r.RemoteAddr = "192.0.2.7:5555"
				r.Header.Set("X-Poll", "1")
				r.Header.Set("Idempotency-Key", "k1")
				r.Header.Set("Connection", "X-Hop")
				r.Header.Set("X-Hop", "dropped")
				out, ob := h.outRequest(r, st)
				heldHeader := -1
				broken.beforeRecv = func() {
					heldHeader = len(out.Header)
				}
				before := len(broken.sent)
				res, err := rt.roundTrip(out, st, ob)
				if err != nil {
					t.Fatalf("%s %d: %v; want the good session's answer", method, i, err)
				}
				if got := relayBody(t, res); got != "from good" {
					t.Fatalf("%s %d answered %q", method, i, got)
				}
				if len(broken.sent) == before {
					continue
				}
				retried++
				if heldHeader != 0 {
					t.Errorf("%s %d: the request held a header map of %d fields while it waited for its answer", method, i, heldHeader)
				}
				first := wireHeader(broken.sent[len(broken.sent)-1].Request.GetHeaders())
				second := wireHeader(good.sent[len(good.sent)-1].Request.GetHeaders())
				if first.Get("X-Poll") != "1" || first.Get("X-Forwarded-For") != "192.0.2.7" ||
					first.Get(RequestIDHeader) != "rid" || first.Get("X-Hop") != "" {
					t.Fatalf("%s %d: the first head had %v", method, i, first)
				}
				if !reflect.DeepEqual(first, second) {
					t.Fatalf("%s %d: sent again with\n%v\nwant the first head's\n%v", method, i, second, first)
				}
			}
			if retried == 0 {
				t.Fatal("no request went to the broken session first: the test proves nothing")
			}
		})
	}
}

// waitingSession's OpenStream takes its slow path: it asks for the
// context's Done, as a transport does when every stream is busy, and calls
// onWait before it hands out a stream.
type waitingSession struct {
	*relaySession
	onWait func()
}

func (s *waitingSession) OpenStream(ctx context.Context) (tunnel.Stream, error) {
	_ = ctx.Done()
	if s.onWait != nil {
		s.onWait()
	}
	return s.relaySession.OpenStream(ctx)
}

// TestRelayWaitForStreamReleasesHeader: an exchange that waits for a tunnel
// stream holds no header map meanwhile (in a burst of long polls the maps
// of waiting exchanges piled up in the pool), and the head it sends once it
// has a stream carries every header.
func TestRelayWaitForStreamReleasesHeader(t *testing.T) {
	s := &waitingSession{relaySession: newRelaySession("slow")}
	rt, st := relayGateway(t)
	rt.g.registry.Add(s)
	h := newProxyHandler(rt.g)
	h.relay = rt
	r := httptest.NewRequest("GET", "http://app.test/poll", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	r.Header.Set("X-Poll", "1")
	out, ob := h.outRequest(r, st)
	waiting := -1
	s.onWait = func() { waiting = len(out.Header) }
	res, err := rt.roundTrip(out, st, ob)
	if err != nil {
		t.Fatal(err)
	}
	relayBody(t, res)
	if waiting != 0 {
		t.Errorf("the exchange held a header map of %d fields while it waited for a stream", waiting)
	}
	got := wireHeader(s.sent[0].Request.GetHeaders())
	if got.Get("X-Poll") != "1" || got.Get("X-Forwarded-For") != "192.0.2.7" || got.Get(RequestIDHeader) != "rid" ||
		got.Get("X-Forwarded-Host") != "app.test" {
		t.Errorf("the head sent after the wait had %v", got)
	}
}

// TestRelayWaitFailsThenOtherSession: a wait for a stream that ends
// without one (the session drains meanwhile) has let go of the header map;
// the exchange goes on over the group's other session with every header.
func TestRelayWaitFailsThenOtherSession(t *testing.T) {
	draining := &waitingSession{relaySession: newRelaySession("draining")}
	draining.openErr = errors.New("tunnel session is draining")
	good := newRelaySession("good")
	rt, st := relayGateway(t, good)
	rt.g.registry.Add(draining)
	h := newProxyHandler(rt.g)
	h.relay = rt
	tried := 0
	for range 30 { // the random pick starts on the draining session too
		*st = exchangeState{route: st.route, requestID: "rid"}
		r := httptest.NewRequest("GET", "http://app.test/poll", nil)
		r.RemoteAddr = "192.0.2.7:5555"
		r.Header.Set("X-Poll", "1")
		out, ob := h.outRequest(r, st)
		before := len(good.sent)
		waited := false
		draining.onWait = func() { waited = out.Header == nil }
		res, err := rt.roundTrip(out, st, ob)
		if err != nil {
			t.Fatalf("%v; want the good session's answer", err)
		}
		if got := relayBody(t, res); got != "from good" {
			t.Fatalf("answered %q", got)
		}
		if !waited {
			continue // the good session was picked first
		}
		tried++
		got := wireHeader(good.sent[before].Request.GetHeaders())
		if got.Get("X-Poll") != "1" || got.Get("X-Forwarded-For") != "192.0.2.7" || got.Get(RequestIDHeader) != "rid" {
			t.Fatalf("the head sent after the failed wait had %v", got)
		}
	}
	if tried == 0 {
		t.Fatal("the draining session was never picked first: the test proves nothing")
	}
}
