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
	"net/url"
	"sync"
	"testing"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// relaySession is a tunnel.Session whose streams behave as the test says.
type relaySession struct {
	name    string
	openErr error // OpenStream fails with it
	sendErr error // the stream's first Send fails with it
	opened  int   // streams handed out
	mu      sync.Mutex
	sent    []*tunnel.Frame
	done    chan struct{}
	drain   chan struct{}
}

func newRelaySession(name string) *relaySession {
	return &relaySession{name: name, done: make(chan struct{}), drain: make(chan struct{})}
}

func (s *relaySession) OpenStream(ctx context.Context) (tunnel.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openErr != nil {
		return nil, s.openErr
	}
	s.opened++
	return &relayStream{s: s}, nil
}
func (s *relaySession) Info() tunnel.SessionInfo {
	return tunnel.SessionInfo{ID: s.name, AgentName: s.name, Group: "g"}
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
	return &tunnel.Frame{
		Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: -1},
		Data:     []byte("from " + st.s.name),
		End:      true,
	}, nil
}

func (st *relayStream) Finish(bool) { st.finished = true }

func relayGateway(t *testing.T, sessions ...*relaySession) (*relay, *exchangeState) {
	t.Helper()
	g := &Gateway{registry: NewRegistry()}
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
