package grpctunnel_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/selfsigned"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// hangGuard bounds every wait so that a broken test fails instead of
// hanging. No assertion depends on it.
const hangGuard = 10 * time.Second

// Distinctive tokens, so that a scan of the logs cannot miss them.
const (
	goodToken  = "good-Secret-7f3a9c51"
	wrongToken = "wrong-Secret-b2e1d0aa"
	// revokedToken stands for the credential of a revoked connector.
	revokedToken = "revoked-Secret-41d2c3e9"
	group        = "default"
)

// testServer is a gateway tunnel listener on loopback: a real gRPC server
// with TLS from internal/selfsigned.
type testServer struct {
	t        testing.TB
	srv      *grpctunnel.Server
	addr     string
	tls      *tls.Config // what agents use to verify the server
	logs     *observer.ObservedLogs
	sessions chan tunnel.Session // every accepted session, in order
}

func startServer(t testing.TB, edit func(*grpctunnel.Server)) *testServer {
	t.Helper()
	return startServerOn(t, edit, nil)
}

// startServerOn is startServer with the listener wrapped by wrap (if not
// nil), to watch the gateway's connections below TLS.
func startServerOn(t testing.TB, edit func(*grpctunnel.Server), wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	core, logs := observer.New(zap.DebugLevel)
	ts := &testServer{
		t:        t,
		tls:      &tls.Config{RootCAs: roots, ServerName: "localhost"},
		logs:     logs,
		sessions: make(chan tunnel.Session, 64),
	}
	ts.srv = &grpctunnel.Server{
		Authenticate: func(state *tls.ConnectionState, token string) (tunnel.Identity, error) {
			switch {
			case state == nil || state.Version != tls.VersionTLS13 && state.Version != tls.VersionTLS12:
				return tunnel.Identity{}, errors.New("no TLS state")
			case token == goodToken:
				return tunnel.Identity{ConnectorID: "conn-1", Group: group}, nil
			case token == revokedToken:
				return tunnel.Identity{}, fmt.Errorf("%w: connector conn-2 was revoked", tunnel.ErrRevoked)
			case token == "":
				return tunnel.Identity{}, errors.New("missing token")
			}
			return tunnel.Identity{}, errors.New("wrong token")
		},
		OnSession: func(s tunnel.Session) { ts.sessions <- s },
		Log:       zap.New(core),
		NewWatch:  newWatch,
	}
	if edit != nil {
		edit(ts.srv)
	}
	opts := append(grpctunnel.ServerOptions(ts.srv.MaxStreams, 0),
		// As the gateway does: the server knows each session's connection
		// (its liveness watch).
		grpc.Creds(ts.srv.Credentials(grpctunnel.ServerCredentials(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))),
		grpc.WaitForHandlers(true))
	gs := grpc.NewServer(opts...)
	ts.srv.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})
	return ts
}

// newWatch is the liveness watch the gateway gives its gRPC sessions.
func newWatch(s grpctunnel.WatchedSession, c grpctunnel.ProbingPeer, log *zap.Logger) grpctunnel.Watch {
	return muxtunnel.NewWatch(s, c, log)
}

// session waits for the next accepted session.
func (ts *testServer) session() tunnel.Session {
	ts.t.Helper()
	select {
	case s := <-ts.sessions:
		return s
	case <-time.After(hangGuard):
		ts.t.Fatal("no session was accepted")
		return nil
	}
}

// noSession fails the test if a session was accepted.
func (ts *testServer) noSession() {
	ts.t.Helper()
	select {
	case s := <-ts.sessions:
		ts.t.Fatalf("a session was accepted: %+v", s.Info())
	default:
	}
}

// entries returns the server's log entries at level with message msg.
func (ts *testServer) entries(level zapcore.Level, msg string) []observer.LoggedEntry {
	return ts.logs.FilterLevelExact(level).FilterMessage(msg).All()
}

// dial connects an agent session with token.
func (ts *testServer) dial(token string, log *zap.Logger) (*grpctunnel.ClientSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	return grpctunnel.Dial(ctx, grpctunnel.DialConfig{
		Addr: ts.addr, TLS: ts.tls, Token: token, MinIdle: 2, Log: log,
		Hello: &tunnelv1.Hello{Name: "test-agent", Version: "v-test", AgentId: "agent-1", Platform: "test/os"},
	})
}

// testAgent is a real agent session serving a backend.
type testAgent struct {
	cs    *grpctunnel.ClientSession
	drain chan struct{}
	done  chan error
}

// startAgent dials with the good token and serves rt until the test ends.
func (ts *testServer) startAgent(rt http.RoundTripper) *testAgent {
	ts.t.Helper()
	cs, err := ts.dial(goodToken, nil)
	if err != nil {
		ts.t.Fatalf("dial: %v", err)
	}
	return ts.serveAgent(cs, rt)
}

// serveAgent serves rt on cs until the test ends.
func (ts *testServer) serveAgent(cs *grpctunnel.ClientSession, rt http.RoundTripper) *testAgent {
	ts.t.Helper()
	a := &testAgent{cs: cs, drain: make(chan struct{}), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return rt, nil }}
	go func() { a.done <- cs.Serve(ctx, srv, a.drain) }()
	ts.t.Cleanup(func() {
		cancel()
		a.wait(ts.t)
	})
	return a
}

// wait returns Serve's result.
func (a *testAgent) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-a.done:
		a.done <- err // keep it for later calls
		return err
	case <-time.After(hangGuard):
		t.Fatal("the agent session did not end")
		return nil
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// helloBackend answers every request with "hello <path>".
var helloBackend = rtFunc(func(req *http.Request) (*http.Response, error) {
	body := "hello " + req.URL.Path
	return &http.Response{
		StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
		ContentLength: int64(len(body)), Body: io.NopCloser(strings.NewReader(body)), Request: req,
	}, nil
})

// exchange relays one GET over s and checks the answer of helloBackend.
func exchange(t testing.TB, s tunnel.Session, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	st, err := s.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://backend:80"+path, nil)
	res, err := tunnel.RoundTrip(st, req, nil)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 || string(b) != "hello "+path {
		t.Fatalf("got %d %q, %v", res.StatusCode, b, err)
	}
}

// rawClient is a gRPC connection that speaks the tunnel service by hand,
// as a broken or hostile agent might.
func (ts *testServer) rawClient() tunnelv1.TunnelServiceClient {
	ts.t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(ts.tls)))
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { cc.Close() })
	return tunnelv1.NewTunnelServiceClient(cc)
}

type controlStream = grpc.BidiStreamingClient[tunnelv1.ControlRequest, tunnelv1.ControlResponse]
type exchangeStream = grpc.BidiStreamingClient[tunnelv1.Frame, tunnelv1.Frame]

// streamCtx is a context for one raw stream, cancelled when the test ends;
// md are metadata pairs.
func streamCtx(t testing.TB, md ...string) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	return ctx
}

// rawSession opens a Control stream with the good token and returns it,
// the welcome, and the gateway's side of the session.
func (ts *testServer) rawSession(c tunnelv1.TunnelServiceClient) (controlStream, *tunnelv1.Welcome, tunnel.Session) {
	ts.t.Helper()
	ctrl, err := c.Control(streamCtx(ts.t, "authorization", "Bearer "+goodToken))
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := ctrl.Send(&tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{ProtocolVersion: 1, Name: "raw"}}); err != nil {
		ts.t.Fatal(err)
	}
	m, err := ctrl.Recv()
	if err != nil || m.GetWelcome() == nil {
		ts.t.Fatalf("no welcome: %v %v", m, err)
	}
	return ctrl, m.GetWelcome(), ts.session()
}

// rawExchange opens an Exchange stream carrying md.
func rawExchange(t testing.TB, c tunnelv1.TunnelServiceClient, md ...string) exchangeStream {
	t.Helper()
	st, err := c.Exchange(streamCtx(t, md...))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sessionMD(w *tunnelv1.Welcome) []string { return []string{"sallyport-session", w.GetSessionId()} }

// openStream takes a pooled stream of s.
func openStream(t testing.TB, s tunnel.Session) tunnel.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	st, err := s.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	return st
}

// wantCode receives on a raw stream and checks the gRPC status it ends with.
func wantCode(t testing.TB, recv func() error, want codes.Code) {
	t.Helper()
	err := recv()
	if status.Code(err) != want {
		t.Fatalf("stream ended with %v, want %v", err, want)
	}
}

// pingPong checks that gw (the gateway's end) and raw (the agent's end)
// still carry frames both ways.
func pingPong(t testing.TB, gw tunnel.Stream, raw exchangeStream, tag string) {
	t.Helper()
	if err := gw.Send(&tunnel.Frame{Data: []byte("ping " + tag)}); err != nil {
		t.Fatalf("%s: gateway send: %v", tag, err)
	}
	f, err := raw.Recv()
	if err != nil || string(f.GetData()) != "ping "+tag {
		t.Fatalf("%s: agent recv: %v %v", tag, f, err)
	}
	if err := raw.Send(&tunnel.Frame{Data: []byte("pong " + tag)}); err != nil {
		t.Fatalf("%s: agent send: %v", tag, err)
	}
	if f, err = gw.Recv(); err != nil || string(f.GetData()) != "pong "+tag {
		t.Fatalf("%s: gateway recv: %v %v", tag, f, err)
	}
}

func TestAuthentication(t *testing.T) {
	ts := startServer(t, nil)
	for _, tc := range []struct{ name, token, reason string }{
		{"wrong token", wrongToken, "wrong token"},
		{"missing token", "", "missing token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ts.entries(zapcore.WarnLevel, "agent refused: unauthenticated"))
			_, err := ts.dial(tc.token, nil)
			if !errors.Is(err, grpctunnel.ErrUnauthenticated) {
				t.Fatalf("Dial = %v, want ErrUnauthenticated", err)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatalf("the error repeats the token: %v", err)
			}
			w := ts.entries(zapcore.WarnLevel, "agent refused: unauthenticated")
			if len(w) != before+1 {
				t.Fatalf("%d refusal log lines, want %d", len(w), before+1)
			}
			fields := w[len(w)-1].ContextMap()
			host, _, err := net.SplitHostPort(fmt.Sprint(fields["remote"]))
			if err != nil || host != "127.0.0.1" || fields["reason"] != tc.reason {
				t.Fatalf("log fields %v: want the remote address and reason %q", fields, tc.reason)
			}
			ts.noSession()
		})
	}
	t.Run("revoked", func(t *testing.T) {
		_, err := ts.dial(revokedToken, nil)
		if !errors.Is(err, tunnel.ErrRevoked) || !strings.Contains(err.Error(), "conn-2 was revoked") {
			t.Fatalf("Dial = %v, want tunnel.ErrRevoked with the gateway's reason", err)
		}
		if len(ts.entries(zapcore.WarnLevel, "agent refused: revoked")) != 1 {
			t.Fatal("no log line for the revoked agent")
		}
		ts.noSession()
	})
	t.Run("no credential at all", func(t *testing.T) {
		c := ts.rawClient()
		for _, md := range [][]string{nil, {"authorization", "Basic " + goodToken}, {"authorization", goodToken}} {
			ctrl, err := c.Control(streamCtx(t, md...))
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, func() error { _, err := ctrl.Recv(); return err }, codes.Unauthenticated)
		}
		ts.noSession()
	})
	t.Run("good token", func(t *testing.T) {
		cs, err := ts.dial(goodToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := ts.session()
		info := s.Info()
		if cs.Group() != group || info.Group != group || info.ID != cs.SessionID() || info.AgentName != "test-agent" ||
			info.AgentID != "agent-1" || info.Transport != "grpc" || !strings.HasPrefix(info.RemoteAddr, "127.0.0.1:") ||
			info.ConnectorID != "conn-1" || info.Started.IsZero() {
			t.Fatalf("session info %+v, agent sees group %q", info, cs.Group())
		}
		// Dial alone holds the session open; ending Serve at once closes it.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		cs.Serve(ctx, &tunnel.Server{}, nil)
		select {
		case <-s.Done():
		case <-time.After(hangGuard):
			t.Fatal("the session did not end with the agent")
		}
	})
}

// TestTokenNeverLogged runs the whole life of sessions, good and refused,
// with debug logs on both ends and looks for the tokens in every entry.
func TestTokenNeverLogged(t *testing.T) {
	ts := startServer(t, nil)
	agentCore, agentLogs := observer.New(zap.DebugLevel)
	agentLog := zap.New(agentCore)
	if _, err := ts.dial(wrongToken, agentLog); err == nil {
		t.Fatal("the wrong token was accepted")
	}
	if _, err := ts.dial(strings.ToUpper(goodToken), agentLog); err == nil {
		t.Fatal("a token differing in case was accepted")
	}
	cs, err := ts.dial(goodToken, agentLog)
	if err != nil {
		t.Fatal(err)
	}
	drain := make(chan struct{})
	done := make(chan error, 1)
	srv := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return helloBackend, nil }, Log: agentLog}
	go func() { done <- cs.Serve(context.Background(), srv, drain) }()
	s := ts.session()
	exchange(t, s, "/x")
	close(drain)
	if err := <-done; err != nil {
		t.Fatalf("Serve after drain: %v", err)
	}
	<-s.Done()

	entries := append(ts.logs.All(), agentLogs.All()...)
	if len(ts.logs.All()) < 4 {
		t.Fatalf("only %d gateway log entries; the scan would prove little", len(ts.logs.All()))
	}
	for _, e := range entries {
		text := e.Message + " " + e.LoggerName + " " + e.Stack + " " + fmt.Sprint(e.ContextMap())
		for _, tok := range []string{goodToken, wrongToken, strings.ToUpper(goodToken), "Secret"} {
			if strings.Contains(text, tok) {
				t.Fatalf("log entry shows a token: %s", text)
			}
		}
	}
}

func TestExchangeStreamNeedsItsSession(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.rawClient()
	_, welcome, s := ts.rawSession(a)
	b := ts.rawClient() // another connection, same credentials
	_, _, _ = ts.rawSession(b)

	recv := func(st exchangeStream) func() error { return func() error { _, err := st.Recv(); return err } }
	wantCode(t, recv(rawExchange(t, a)), codes.Unauthenticated)
	wantCode(t, recv(rawExchange(t, a, "sallyport-session", "0123456789abcdef0123456789abcdef")), codes.Unauthenticated)
	wantCode(t, recv(rawExchange(t, a, "sallyport-session", welcome.GetSessionId(), "sallyport-session", "x")), codes.Unauthenticated)
	wantCode(t, recv(rawExchange(t, b, sessionMD(welcome)...)), codes.Unauthenticated)

	// The right connection with the right id is pooled and carries frames.
	raw := rawExchange(t, a, sessionMD(welcome)...)
	pingPong(t, openStream(t, s), raw, "a")
}

func TestMaxStreams(t *testing.T) {
	const max = 3
	ts := startServer(t, func(s *grpctunnel.Server) { s.MaxStreams = max })
	c := ts.rawClient()
	_, welcome, s := ts.rawSession(c)
	if welcome.GetMaxStreams() != max {
		t.Fatalf("welcome announces %d streams, want %d", welcome.GetMaxStreams(), max)
	}
	raws := make([]exchangeStream, max)
	leases := make([]tunnel.Stream, max)
	for i := range max {
		raws[i] = rawExchange(t, c, sessionMD(welcome)...)
		// Taking it from the pool proves the gateway counted it.
		leases[i] = openStream(t, s)
	}
	over := rawExchange(t, c, sessionMD(welcome)...)
	wantCode(t, func() error { _, err := over.Recv(); return err }, codes.ResourceExhausted)
	w := ts.entries(zapcore.WarnLevel, "agent opened more streams than allowed")
	if len(w) != 1 || w[0].ContextMap()["max_streams"] != int64(max) {
		t.Fatalf("log: %v", w)
	}

	// The session keeps working: every admitted stream carries frames (the
	// pool hands them out in order), and a reset frees a place.
	for i := range max {
		pingPong(t, leases[i], raws[i], fmt.Sprint(i))
	}
	leases[0].Finish(false)
	wantCode(t, func() error { _, err := raws[0].Recv(); return err }, codes.Aborted)
	again := rawExchange(t, c, sessionMD(welcome)...)
	pingPong(t, openStream(t, s), again, "again")
	select {
	case <-s.Done():
		t.Fatal("the session ended")
	default:
	}
}

func TestHelloTimeout(t *testing.T) {
	ts := startServer(t, func(s *grpctunnel.Server) { s.HelloTimeout = 50 * time.Millisecond })
	c := ts.rawClient()
	ctrl, err := c.Control(streamCtx(t, "authorization", "Bearer "+goodToken))
	if err != nil {
		t.Fatal(err)
	}
	// Never send hello.
	wantCode(t, func() error { _, err := ctrl.Recv(); return err }, codes.DeadlineExceeded)
	if w := ts.entries(zapcore.WarnLevel, "agent refused: no hello in time"); len(w) != 1 {
		t.Fatalf("log: %v", ts.logs.All())
	}
	ts.noSession()

	t.Run("first message is not a hello", func(t *testing.T) {
		ctrl, err := c.Control(streamCtx(t, "authorization", "Bearer "+goodToken))
		if err != nil {
			t.Fatal(err)
		}
		if err := ctrl.Send(&tunnelv1.ControlRequest{Drain: &tunnelv1.Drain{}}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, func() error { _, err := ctrl.Recv(); return err }, codes.InvalidArgument)
		ts.noSession()
	})
}

func TestOversizedFrame(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.rawClient()
	_, welcome, s := ts.rawSession(c)
	big := rawExchange(t, c, sessionMD(welcome)...)
	bigLease := openStream(t, s)
	other := rawExchange(t, c, sessionMD(welcome)...)
	otherLease := openStream(t, s)

	// The raw client has no send limit of its own.
	if err := big.Send(&tunnel.Frame{Data: make([]byte, tunnel.MaxFrameSize+1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := bigLease.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("gateway recv of an oversized frame: %v, want ResourceExhausted", err)
	}
	bigLease.Finish(false) // as RoundTrip does after a receive error
	if _, err := big.Recv(); err == nil {
		t.Fatal("the stream that carried the oversized frame is still open")
	}

	// Only that stream died.
	pingPong(t, otherLease, other, "neighbour")
	select {
	case <-s.Done():
		t.Fatal("the session ended")
	default:
	}
	// The gateway does not send oversized frames either.
	err := otherLease.Send(&tunnel.Frame{Data: make([]byte, tunnel.MaxFrameSize+1)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("gateway send of an oversized frame: %v, want ResourceExhausted", err)
	}
}

// TestGarbageConnections: clients that do not speak TLS and HTTP/2 are
// disconnected, and the listener keeps serving agents.
func TestGarbageConnections(t *testing.T) {
	ts := startServer(t, nil)
	garbage := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x16\x03\x01\x00\x05hello")
	cases := map[string]func() (net.Conn, error){
		"plain TCP": func() (net.Conn, error) { return net.Dial("tcp", ts.addr) },
		"TLS with h2 then HTTP/1.1": func() (net.Conn, error) {
			cfg := ts.tls.Clone()
			cfg.NextProtos = []string{"h2"}
			return tls.Dial("tcp", ts.addr, cfg)
		},
		"TLS without ALPN": func() (net.Conn, error) { return tls.Dial("tcp", ts.addr, ts.tls) },
	}
	for name, dial := range cases {
		t.Run(name, func(t *testing.T) {
			conn, err := dial()
			if err != nil {
				// A TLS handshake the server refused is a disconnect too.
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal(err)
				}
				t.Logf("handshake refused: %v", err)
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(hangGuard))
			conn.Write(garbage) // may fail once the server hung up
			_, err = io.Copy(io.Discard, conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the server kept a garbage connection open")
			}
			t.Logf("disconnected: %v", err)
		})
	}
	ts.startAgent(helloBackend)
	exchange(t, ts.session(), "/after-garbage")
}

func TestDraining(t *testing.T) {
	t.Run("raw agent", func(t *testing.T) {
		ts := startServer(t, nil)
		c := ts.rawClient()
		ctrl, welcome, s := ts.rawSession(c)
		raws := make([]exchangeStream, 3)
		leases := make([]tunnel.Stream, 3)
		for i := range raws {
			raws[i] = rawExchange(t, c, sessionMD(welcome)...)
			leases[i] = openStream(t, s)
		}
		// Two streams idle in the pool, one busy with an exchange.
		leases[0].Finish(true)
		leases[1].Finish(true)

		if err := ctrl.Send(&tunnelv1.ControlRequest{Drain: &tunnelv1.Drain{Reason: "test"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.Draining():
		case <-time.After(hangGuard):
			t.Fatal("the session is not draining")
		}
		// Idle streams are retired cleanly.
		for i := range 2 {
			if _, err := raws[i].Recv(); err != io.EOF {
				t.Fatalf("idle stream %d: %v, want a clean end", i, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		if _, err := s.OpenStream(ctx); !errors.Is(err, grpctunnel.ErrDraining) {
			t.Fatalf("OpenStream while draining: %v, want ErrDraining", err)
		}
		// The busy exchange finishes, then its stream is retired.
		pingPong(t, leases[2], raws[2], "in flight")
		leases[2].Finish(true)
		if _, err := raws[2].Recv(); err != io.EOF {
			t.Fatalf("busy stream after its exchange: %v, want a clean end", err)
		}
		if w := ts.entries(zapcore.InfoLevel, "agent is draining"); len(w) != 1 {
			t.Fatalf("log: %v", ts.logs.All())
		}
	})
	t.Run("real agent", func(t *testing.T) {
		ts := startServer(t, nil)
		a := ts.startAgent(helloBackend)
		s := ts.session()
		exchange(t, s, "/before")
		close(a.drain)
		// Serve returns only when every stream was retired.
		if err := a.wait(t); err != nil {
			t.Fatalf("Serve after drain: %v", err)
		}
		for _, ch := range []<-chan struct{}{s.Draining(), s.Done()} {
			select {
			case <-ch:
			case <-time.After(hangGuard):
				t.Fatal("the session did not drain and end")
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		if _, err := s.OpenStream(ctx); !errors.Is(err, grpctunnel.ErrDraining) && !errors.Is(err, grpctunnel.ErrSessionClosed) {
			t.Fatalf("OpenStream after the drain: %v", err)
		}
	})
}

func TestSessionClose(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.rawClient()
	ctrl, welcome, s := ts.rawSession(c)

	// A waiter gets a stream as soon as the agent opens one.
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		st, err := s.OpenStream(ctx)
		if err == nil {
			st.Finish(true)
		}
		got <- err
	}()
	raw := rawExchange(t, c, sessionMD(welcome)...)
	if err := <-got; err != nil {
		t.Fatalf("waiting OpenStream: %v", err)
	}
	// Take the only stream, so that the next waiters really wait.
	busy := openStream(t, s)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.OpenStream(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("OpenStream with a cancelled context: %v", err)
	}
	const waiters = 3
	results := make(chan error, waiters)
	for range waiters {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			_, err := s.OpenStream(ctx)
			results <- err
		}()
	}
	s.Close(errors.New("test"))
	for range waiters {
		if err := <-results; !errors.Is(err, grpctunnel.ErrSessionClosed) {
			t.Fatalf("OpenStream waiter after Close: %v, want ErrSessionClosed", err)
		}
	}
	wantCode(t, func() error { _, err := ctrl.Recv(); return err }, codes.Unavailable)
	wantCode(t, func() error { _, err := raw.Recv(); return err }, codes.Unavailable)
	if err := busy.Send(&tunnel.Frame{}); err == nil {
		if _, err := busy.Recv(); err == nil {
			t.Fatal("a stream of a closed session still works")
		}
	}
	// The id is forgotten.
	late := rawExchange(t, c, sessionMD(welcome)...)
	wantCode(t, func() error { _, err := late.Recv(); return err }, codes.Unauthenticated)
}

func TestExchangesOverGRPC(t *testing.T) {
	ts := startServer(t, nil)
	echo := rtFunc(func(req *http.Request) (*http.Response, error) {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		return &http.Response{
			StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
			ContentLength: -1, Body: io.NopCloser(bytes.NewReader(b)), Request: req,
		}, nil
	})
	ts.startAgent(echo)
	s := ts.session()
	for i, size := range []int{0, 10, 3*tunnel.CoalesceLimit + 5} {
		body := bytes.Repeat([]byte{byte('a' + i)}, size)
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		st, err := s.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://backend:80/echo", bytes.NewReader(body))
		res, err := tunnel.RoundTrip(st, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("echo of %d bytes: got %d, %v", size, len(got), err)
		}
	}
}

// TestCleanFinishPoolsTheStream: after a clean exchange the same gRPC
// stream carries the next one, and a late Finish of the old lease cannot
// touch it.
func TestCleanFinishPoolsTheStream(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.rawClient()
	_, welcome, s := ts.rawSession(c)
	raw := rawExchange(t, c, sessionMD(welcome)...) // the only stream
	first := openStream(t, s)
	pingPong(t, first, raw, "first")
	first.Finish(true)
	second := openStream(t, s)
	first.Finish(false) // late, from the earlier exchange: ignored
	if err := first.Send(&tunnel.Frame{}); err == nil {
		t.Fatal("a finished lease still sends")
	}
	pingPong(t, second, raw, "second")
	if n := ts.srv.Stats().StreamsOpened; n != 1 {
		t.Fatalf("%d streams opened, want the one reused", n)
	}
}

// TestRegisteredBeforeWelcome: by the time Dial returns (the agent logs that
// it is connected) the gateway has already registered the session, so a
// request sent right then is routed instead of answered no-connector. The
// registration hook holds on for a while: if the welcome went out before
// it, Dial returns meanwhile.
func TestRegisteredBeforeWelcome(t *testing.T) {
	dialed := make(chan struct{})
	early := make(chan bool, 1)
	ts := startServer(t, func(s *grpctunnel.Server) {
		next := s.OnSession
		s.OnSession = func(ss tunnel.Session) {
			select {
			case <-dialed:
				early <- true
			case <-time.After(200 * time.Millisecond):
				early <- false
			}
			next(ss)
		}
	})
	cs, err := ts.dial(goodToken, nil)
	close(dialed)
	if err != nil {
		t.Fatal(err)
	}
	if <-early {
		t.Fatal("the agent was welcomed before the gateway registered its session")
	}
	if s := ts.session(); s.Info().ID != cs.SessionID() {
		t.Fatalf("registered session %s, the agent got %s", s.Info().ID, cs.SessionID())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cs.Serve(ctx, &tunnel.Server{}, nil) // ends the session
}

// TestBulkBodiesOverGRPC: many-frame request and response bodies, which
// both ends receive in gRPC's own buffers (tunnel.DataReceiver), arrive
// intact and in order, whether the backend reads the request body or lets
// it write itself (WriteBodyTo, as the agent's backend connections do),
// and the stream is clean for the next exchange.
func TestBulkBodiesOverGRPC(t *testing.T) {
	const size = 40*tunnel.ChunkSize + 7
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i*7 + i>>10)
	}
	ts := startServer(t, nil)
	ts.startAgent(rtFunc(func(req *http.Request) (*http.Response, error) {
		var got bytes.Buffer
		var err error
		if bw, ok := req.Body.(interface {
			WriteBodyTo(io.Writer, int64) (int64, error)
		}); ok && req.URL.Path == "/write" {
			_, err = bw.WriteBodyTo(&got, req.ContentLength)
		} else {
			_, err = io.Copy(&got, req.Body)
		}
		if err != nil {
			return nil, err
		}
		status := 200
		if req.Method == "POST" && !bytes.Equal(got.Bytes(), body) {
			status = 400 // the body was damaged on the way
		}
		out := body
		if req.Method == "POST" {
			out = nil
		}
		return &http.Response{
			StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
			ContentLength: int64(len(out)), Body: io.NopCloser(bytes.NewReader(out)), Request: req,
		}, nil
	}))
	s := ts.session()
	for _, tc := range []struct{ method, path string }{
		{"POST", "/read"}, {"POST", "/write"}, {"GET", "/download"}, {"POST", "/read"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		var reqBody io.Reader
		if tc.method == "POST" {
			reqBody = bytes.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(ctx, tc.method, "http://backend:80"+tc.path, reqBody)
		res, err := tunnel.RoundTrip(openStream(t, s), req, nil)
		if err != nil {
			cancel()
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s %s: status %d, %v", tc.method, tc.path, res.StatusCode, err)
		}
		if tc.method == "GET" && !bytes.Equal(got, body) {
			t.Fatalf("download: %d bytes that differ from the %d sent", len(got), len(body))
		}
	}
}

// TestClosedBeforeWelcome: a session that the gateway closes as it
// registers it (one over the per-connector bound) fails the agent's Dial
// with the gateway's reason, rather than with an anonymous "session
// closed".
func TestClosedBeforeWelcome(t *testing.T) {
	ts := startServer(t, func(s *grpctunnel.Server) {
		s.OnSession = func(ss tunnel.Session) { ss.Close(errors.New("connector conn-1 already holds 2 sessions")) }
	})
	_, err := ts.dial(goodToken, nil)
	if err == nil {
		t.Fatal("Dial succeeded on a session the gateway closed")
	}
	if !strings.Contains(err.Error(), "already holds 2 sessions") {
		t.Fatalf("Dial error %q does not carry the gateway's reason", err)
	}
}

// TestWelcomeReplica: the Welcome says which gateway replica took the
// session and how many are alive, as the server's Replica and Replicas
// say; a server without them sends "" and 0 (unknown).
func TestWelcomeReplica(t *testing.T) {
	ts := startServer(t, func(s *grpctunnel.Server) {
		s.Replica, s.Replicas = "r1", func() uint32 { return 2 }
	})
	if _, w, _ := ts.rawSession(ts.rawClient()); w.GetReplica() != "r1" || w.GetReplicas() != 2 {
		t.Fatalf("welcome replica %q of %d, want r1 of 2", w.GetReplica(), w.GetReplicas())
	}
	old := startServer(t, nil)
	if _, w, _ := old.rawSession(old.rawClient()); w.GetReplica() != "" || w.GetReplicas() != 0 {
		t.Fatalf("welcome without a replica count: replica %q of %d, want \"\" of 0", w.GetReplica(), w.GetReplicas())
	}
}
