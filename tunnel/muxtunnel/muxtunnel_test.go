package muxtunnel_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	goodToken = "good-Secret-7f3a9c51"
	group     = "default"
	hangGuard = 10 * time.Second
)

// pair is a gateway (muxtunnel.Server on the server end of a yamux
// connection over net.Pipe) and the raw client end.
type pair struct {
	srv      *muxtunnel.Server
	client   muxtunnel.Conn
	sessions chan tunnel.Session
	served   chan error // ServeConn's result
}

func newPair(t *testing.T, edit func(*muxtunnel.Server)) *pair {
	t.Helper()
	sc, cc := yamuxPipe(t)
	p := &pair{client: cc, sessions: make(chan tunnel.Session, 4), served: make(chan error, 1)}
	p.srv = &muxtunnel.Server{
		Authenticate: func(_ *tls.ConnectionState, tok string) (tunnel.Identity, error) {
			if tok != goodToken {
				return tunnel.Identity{}, errors.New("unknown agent")
			}
			return tunnel.Identity{Group: group, ConnectorID: "c1"}, nil
		},
		OnSession:    func(s tunnel.Session) { p.sessions <- s },
		HelloTimeout: 2 * time.Second,
	}
	if edit != nil {
		edit(p.srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { p.served <- p.srv.ServeConn(ctx, sc, "yamux") }()
	t.Cleanup(func() {
		cancel()
		cc.Close("")
		select {
		case <-p.served:
		case <-time.After(hangGuard):
			t.Error("ServeConn did not return")
		}
	})
	return p
}

// yamuxPipe is a yamux connection over net.Pipe: the server end and the
// client end.
func yamuxPipe(t *testing.T) (server, client muxtunnel.Conn) {
	t.Helper()
	a, b := net.Pipe()
	sc, err := yamuxtunnel.ServerConn(a, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := yamuxtunnel.ClientConn(b, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return sc, cc
}

func (p *pair) served1(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.served:
		p.served <- err
		return err
	case <-time.After(hangGuard):
		t.Fatal("ServeConn did not return")
		return nil
	}
}

func writeRaw(t *testing.T, w io.Writer, m proto.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		t.Fatal(err)
	}
}

func readRaw(t *testing.T, r io.Reader, m proto.Message) {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
}

// rawHello opens the control stream by hand and returns it after the
// welcome.
func rawHello(t *testing.T, p *pair) muxtunnel.RawStream {
	t.Helper()
	ctrl, w := rawWelcome(t, p)
	if w == nil {
		t.Fatal("no welcome")
	}
	return ctrl
}

// rawWelcome opens the control stream by hand, says hello, and returns the
// stream and the welcome (nil if the answer was another message).
func rawWelcome(t *testing.T, p *pair) (muxtunnel.RawStream, *tunnelv1.Welcome) {
	t.Helper()
	ctrl, err := p.client.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	writeRaw(t, ctrl, &tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{Token: goodToken, Name: "raw", Transport: "yamux"}})
	var m tunnelv1.ControlResponse
	readRaw(t, ctrl, &m)
	return ctrl, m.GetWelcome()
}

func session(t *testing.T, p *pair) tunnel.Session {
	t.Helper()
	select {
	case s := <-p.sessions:
		return s
	case <-time.After(hangGuard):
		t.Fatal("no session")
		return nil
	}
}

// TestExchange: a whole HTTP exchange through a session, opened by the
// gateway on a fresh stream, with the session reporting its transport and
// the agent's hello (its name, its number of connections).
func TestExchange(t *testing.T) {
	p := newPair(t, nil)
	cs, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{
		Token: goodToken, Transport: "yamux", Hello: &tunnelv1.Hello{Name: "agent-1", Connections: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cs.Group() != group || cs.SessionID() == "" {
		t.Fatalf("group %q session %q", cs.Group(), cs.SessionID())
	}
	backend := &tunnel.Server{Backend: func(req *http.Request, _ *tunnelv1.RequestHead) (http.RoundTripper, error) {
		return tunneltest.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
			body, _ := io.ReadAll(req.Body)
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: int64(len(body)) + 3,
				Body: io.NopCloser(strings.NewReader("re:" + string(body)))}, nil
		}), nil
	}}
	drain := make(chan struct{})
	served := make(chan error, 1)
	go func() { served <- cs.Serve(context.Background(), backend, drain) }()
	s := session(t, p)
	if s.Info().Transport != "yamux" || s.Info().AgentName != "agent-1" || s.Info().ConnectorID != "c1" ||
		s.Info().Connections != 3 {
		t.Fatalf("info %+v", s.Info())
	}
	for i := range 3 {
		st, err := s.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", "http://backend.test/x", strings.NewReader("hello"))
		res, err := tunnel.RoundTrip(st, req, nil)
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "re:hello" {
			t.Fatalf("body %q", b)
		}
	}
	// Drain: the gateway closes the session once idle; Serve returns nil.
	close(drain)
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after drain: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("drain did not end the session")
	}
	select {
	case <-s.Done():
	case <-time.After(hangGuard):
		t.Fatal("the gateway kept a drained session")
	}
}

func TestWrongToken(t *testing.T) {
	for _, tok := range []string{"wrong-Secret-b2e1d0aa", ""} {
		p := newPair(t, nil)
		_, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: tok, Transport: "yamux"})
		if !errors.Is(err, muxtunnel.ErrUnauthenticated) || !strings.Contains(err.Error(), "unknown agent") {
			t.Fatalf("token %q: %v; want ErrUnauthenticated with advice", tok, err)
		}
		if err := p.served1(t); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
			t.Fatalf("ServeConn: %v", err)
		}
	}
}

// TestBadHello: a client that does not speak the protocol gets a clear
// error, within the hello timeout, without the gateway buffering more than
// one bounded message.
func TestBadHello(t *testing.T) {
	cases := []struct {
		name  string
		send  func(t *testing.T, p *pair)
		wants string
	}{
		{"no control stream", func(*testing.T, *pair) {}, "no control stream in time"},
		{"silent control stream", func(t *testing.T, p *pair) {
			if _, err := p.client.OpenStream(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, "read hello"},
		{"huge length", func(t *testing.T, p *pair) {
			st, _ := p.client.OpenStream(context.Background())
			st.Write([]byte{0xff, 0xff, 0xff, 0xff})
		}, "exceeds"},
		{"not protobuf", func(t *testing.T, p *pair) {
			st, _ := p.client.OpenStream(context.Background())
			st.Write([]byte{0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff})
		}, "malformed"},
		{"HTTP instead", func(t *testing.T, p *pair) {
			st, _ := p.client.OpenStream(context.Background())
			st.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		}, "exceeds"},
		{"drain first", func(t *testing.T, p *pair) {
			st, _ := p.client.OpenStream(context.Background())
			// Unchecked like the writes above: the gateway may read the
			// message and close the connection before the write returns.
			b, err := proto.Marshal(&tunnelv1.ControlRequest{Drain: &tunnelv1.Drain{}})
			if err != nil {
				t.Fatal(err)
			}
			st.Write(append([]byte{0, 0, 0, byte(len(b))}, b...))
		}, "not a hello"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, func(s *muxtunnel.Server) { s.HelloTimeout = 200 * time.Millisecond })
			tc.send(t, p)
			if err := p.served1(t); err == nil || !strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("ServeConn: %v; want %q", err, tc.wants)
			}
		})
	}
}

// TestAgentOpensMoreStreamsThanAllowed: after the control stream only the
// gateway opens streams; an agent that opens one loses its session.
func TestAgentOpensMoreStreamsThanAllowed(t *testing.T) {
	p := newPair(t, nil)
	rawHello(t, p)
	s := session(t, p)
	// Unchecked: the gateway may end the session as soon as it sees the
	// stream, before the open returns.
	_, _ = p.client.OpenStream(context.Background())
	select {
	case <-s.Done():
	case <-time.After(hangGuard):
		t.Fatal("the session survived an agent-opened stream")
	}
	if _, err := s.OpenStream(context.Background()); !errors.Is(err, muxtunnel.ErrSessionClosed) {
		t.Fatalf("OpenStream on the closed session: %v", err)
	}
}

// TestGarbageOnExchangeStream: an agent answering with garbage fails that
// exchange with a malformed-frame error; the session carries the next one.
func TestGarbageOnExchangeStream(t *testing.T) {
	p := newPair(t, nil)
	rawHello(t, p)
	s := session(t, p)
	for _, garbage := range [][]byte{
		{0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff}, // not protobuf
		{0x7f, 0xff, 0xff, 0xff},             // a 2 GiB frame: refused before any allocation
		{0, 0, 0, 10, 1, 2},                  // cut off inside a frame
	} {
		st, err := s.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			req, _ := http.NewRequest("GET", "http://backend.test/", nil)
			res, err := tunnel.RoundTrip(st, req, nil)
			if err == nil {
				res.Body.Close()
			}
			got <- err
		}()
		raw, err := p.client.AcceptStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var f tunnelv1.Frame
		readRaw(t, raw, &f)
		if f.GetRequest() == nil {
			t.Fatalf("first frame %v", &f)
		}
		raw.Write(garbage)
		if len(garbage) < 8 {
			raw.CloseWrite()
		}
		select {
		case err := <-got:
			if err == nil {
				t.Fatalf("garbage %x accepted", garbage)
			}
			t.Logf("garbage %x: %v", garbage, err)
		case <-time.After(hangGuard):
			t.Fatalf("garbage %x: exchange hangs", garbage)
		}
		raw.Reset()
	}
	select {
	case <-s.Done():
		t.Fatal("garbage on one stream ended the session")
	default:
	}
}

// TestRevoked: a refusal wrapping tunnel.ErrRevoked reaches the agent as
// tunnel.ErrRevoked, so that it stops instead of retrying.
func TestRevoked(t *testing.T) {
	p := newPair(t, func(s *muxtunnel.Server) {
		s.Authenticate = func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{}, fmt.Errorf("%w: connector c1 was revoked", tunnel.ErrRevoked)
		}
	})
	_, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Transport: "yamux"})
	if !errors.Is(err, tunnel.ErrRevoked) || !strings.Contains(err.Error(), "connector c1 was revoked") {
		t.Fatalf("Handshake: %v; want tunnel.ErrRevoked", err)
	}
}

// TestRegisteredBeforeWelcome: once the agent has its welcome, the gateway
// has already registered the session, so it is routable when the agent
// reports that it is connected.
func TestRegisteredBeforeWelcome(t *testing.T) {
	p := newPair(t, nil)
	rawHello(t, p)
	select {
	case <-p.sessions:
	default:
		t.Fatal("the agent was welcomed before the gateway registered its session")
	}
}

// TestStreamGoroutineReused: exchanges one after another are all served by
// the same agent goroutine, which waits for the next stream in between.
func TestStreamGoroutineReused(t *testing.T) {
	p := newPair(t, nil)
	cs, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if err != nil {
		t.Fatal(err)
	}
	idle := make(chan struct{}, 1)
	muxtunnel.SetOnIdle(cs, func() { idle <- struct{}{} })
	backend := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) {
		return tunneltest.RoundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 204, Header: http.Header{}, Body: http.NoBody}, nil
		}), nil
	}}
	stop := serveAgent(t, cs, backend)
	s := session(t, p)
	const n = 10
	for i := range n {
		if err := getThrough(s); err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		select {
		case <-idle: // the goroutine is free before the next stream comes
		case <-time.After(hangGuard):
			t.Fatalf("exchange %d: the stream goroutine did not become idle", i)
		}
	}
	if got := muxtunnel.StreamGoroutinesStarted(cs); got != 1 {
		t.Fatalf("%d stream goroutines served %d exchanges one after another, want 1", got, n)
	}
	stop()
}

// serveAgent serves cs with backend until the returned stop, which closes
// the session and waits for Serve to return.
func serveAgent(t *testing.T, cs *muxtunnel.ClientSession, backend *tunnel.Server) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- cs.Serve(ctx, backend, nil) }()
	return func() {
		t.Helper()
		cancel()
		cs.Close()
		select {
		case <-served:
		case <-time.After(hangGuard):
			t.Fatal("Serve did not return")
		}
	}
}

// getThrough relays one GET over a new stream of s and expects 204.
func getThrough(s tunnel.Session) error {
	st, err := s.OpenStream(context.Background())
	if err != nil {
		return err
	}
	req, _ := http.NewRequest("GET", "http://backend.test/", nil)
	res, err := tunnel.RoundTrip(st, req, nil)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != 204 {
		return fmt.Errorf("status %d, want 204", res.StatusCode)
	}
	return nil
}

// TestBurstAfterIdleGoroutines: with a few stream goroutines idle, a burst
// of exchanges that the backend holds until all of them have arrived gets
// every one served: handing streams to idle goroutines never waits for a
// goroutine that is already busy.
func TestBurstAfterIdleGoroutines(t *testing.T) {
	p := newPair(t, nil)
	cs, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if err != nil {
		t.Fatal(err)
	}
	const warm, burst = 4, 16
	var mu sync.Mutex
	arrived, release := 0, make(chan struct{})
	holding := false
	backend := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) {
		return tunneltest.RoundTripFunc(func(*http.Request) (*http.Response, error) {
			mu.Lock()
			hold := holding
			if hold {
				arrived++
				if arrived == burst {
					close(release)
				}
			}
			mu.Unlock()
			if hold {
				select {
				case <-release:
				case <-time.After(hangGuard):
					return nil, errors.New("the burst never arrived in full")
				}
			}
			return &http.Response{StatusCode: 204, Header: http.Header{}, Body: http.NoBody}, nil
		}), nil
	}}
	stop := serveAgent(t, cs, backend)
	s := session(t, p)
	exchange := func() error { return getThrough(s) }
	// warm concurrent exchanges leave up to warm goroutines idle.
	errs := make(chan error, burst)
	for range warm {
		go func() { errs <- exchange() }()
	}
	for range warm {
		if err := <-errs; err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	mu.Lock()
	holding = true
	mu.Unlock()
	for range burst {
		go func() { errs <- exchange() }()
	}
	for i := range burst {
		if err := <-errs; err != nil {
			t.Fatalf("burst exchange %d: %v", i, err)
		}
	}
	stop()
}

// TestClosedBeforeWelcome: a session that the gateway closes as it
// registers it (one over the per-connector bound) fails the agent's
// handshake with the gateway's reason.
func TestClosedBeforeWelcome(t *testing.T) {
	p := newPair(t, func(s *muxtunnel.Server) {
		s.OnSession = func(ss tunnel.Session) { ss.Close(errors.New("connector c1 already holds 2 sessions")) }
	})
	_, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if err == nil {
		t.Fatal("the handshake succeeded on a session the gateway closed")
	}
	if !strings.Contains(err.Error(), "already holds 2 sessions") {
		t.Fatalf("handshake error %q does not carry the gateway's reason", err)
	}
	if err := p.served1(t); err == nil || !strings.Contains(err.Error(), "already holds 2 sessions") {
		t.Fatalf("ServeConn returned %v, want the reason", err)
	}
}

// TestProtocolVersion: the session's protocol version is the lower of the
// agent's (its hello) and the gateway's, so either side may be the older
// one.
func TestProtocolVersion(t *testing.T) {
	for _, tc := range tunneltest.VersionCases {
		t.Run(tc.Name, func(t *testing.T) {
			p := newPair(t, func(s *muxtunnel.Server) { s.ProtocolVersion = tc.Gateway })
			cs, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{
				Token: goodToken, Transport: "yamux", Hello: &tunnelv1.Hello{ProtocolVersion: tc.Agent},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if v := session(t, p).Info().ProtocolVersion; v != tc.Want {
				t.Fatalf("session protocol version %d, want %d", v, tc.Want)
			}
		})
	}
}

// TestExpectContinueOverMux: a request body held back for the agent's
// go-ahead (tunneltest.CheckExpectContinue) over yamux and QUIC.
func TestExpectContinueOverMux(t *testing.T) {
	for _, transport := range []string{muxtunnel.TransportYamux, muxtunnel.TransportQUIC} {
		t.Run(transport, func(t *testing.T) {
			tunneltest.CheckExpectContinue(t, loopbackSession(t, transport, tunneltest.ExpectBackend))
		})
	}
}

// TestWelcomeReplica: the Welcome says which gateway replica took the
// session and how many are alive, as the server's Replica and Replicas
// say; a server without them sends "" and 0 (unknown).
func TestWelcomeReplica(t *testing.T) {
	for _, c := range []struct {
		replica  string
		replicas func() uint32
		want     uint32
	}{{"r1", func() uint32 { return 2 }, 2}, {"", nil, 0}} {
		p := newPair(t, func(s *muxtunnel.Server) { s.Replica, s.Replicas = c.replica, c.replicas })
		if _, w := rawWelcome(t, p); w.GetReplica() != c.replica || w.GetReplicas() != c.want {
			t.Fatalf("welcome replica %q of %d, want %q of %d", w.GetReplica(), w.GetReplicas(), c.replica, c.want)
		}
	}
}
