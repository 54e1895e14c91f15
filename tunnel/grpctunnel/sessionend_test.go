package grpctunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/shortskip"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// heldBackend answers a request for /head never (until the request ends)
// and one for /body with a head and "first", then nothing more; entered
// says that the agent's backend has the request.
func heldBackend(entered chan<- struct{}) rtFunc {
	return func(req *http.Request) (*http.Response, error) {
		entered <- struct{}{}
		if req.URL.Path == "/head" {
			<-req.Context().Done()
			return nil, req.Context().Err()
		}
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write([]byte("first"))
			<-req.Context().Done()
			pw.CloseWithError(req.Context().Err())
		}()
		return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
			ContentLength: -1, Body: pr, Request: req}, nil
	}
}

// dialKillable connects an agent serving rt and returns its TCP
// connection, which the test may close as a killed agent process's
// kernel does.
func (ts *testServer) dialKillable(rt http.RoundTripper) (*testAgent, net.Conn) {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	var mu sync.Mutex
	var conn net.Conn
	cs, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{
		Addr: ts.addr, TLS: ts.tls, Token: goodToken, MinIdle: 2,
		Hello: &tunnelv1.Hello{Name: "test-agent", Version: "v-test", AgentId: "agent-reason", Platform: "test/os"},
		DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && conn == nil {
				conn = c
			}
			return c, err
		},
	})
	if err != nil {
		ts.t.Fatalf("dial: %v", err)
	}
	a := ts.serveAgent(cs, rt)
	mu.Lock()
	defer mu.Unlock()
	return a, conn
}

// TestStreamErrorNamesSessionEnd: an exchange in flight on a gRPC session
// that ends (the gateway closes it for a reason, as its liveness watch
// does; the agent's process dies) fails with an error that says why the
// session ended, whether it waited for its response head or read its
// body, and still marks the kind the gateway acts on (ErrNoResponse: a
// GET is sent again over another agent). Before, both said only "rpc
// error: code = Canceled desc = context canceled", which the gateway
// logged as the reason the response body broke off.
func TestStreamErrorNamesSessionEnd(t *testing.T) {
	revoked := errors.New("its connector was revoked")
	for _, tc := range []struct {
		name string
		path string
		end  func(s tunnel.Session, agent net.Conn)
		want string
	}{
		{"head, closed by the gateway", "/head", func(s tunnel.Session, _ net.Conn) { s.Close(revoked) }, revoked.Error()},
		{"body, closed by the gateway", "/body", func(s tunnel.Session, _ net.Conn) { s.Close(revoked) }, revoked.Error()},
		{"head, agent gone", "/head", func(_ tunnel.Session, c net.Conn) { c.Close() }, "closed by the agent"},
		{"body, agent gone", "/body", func(_ tunnel.Session, c net.Conn) { c.Close() }, "closed by the agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, nil)
			entered := make(chan struct{}, 1)
			a, agent := ts.dialKillable(heldBackend(entered))
			s := ts.session()
			st := openStream(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://backend:80"+tc.path, nil)
			type result struct {
				res *http.Response
				err error
			}
			head := make(chan result, 1)
			go func() {
				res, err := tunnel.RoundTrip(st, req, nil)
				head <- result{res, err}
			}()
			<-entered
			var err error
			if tc.path == "/head" {
				tc.end(s, agent)
				r := <-head
				if r.err == nil {
					r.res.Body.Close()
					t.Fatal("the exchange got its head after its session ended")
				}
				err = r.err
				if !errors.Is(err, tunnel.ErrNoResponse) {
					t.Errorf("the error does not mark the exchange as unanswered (tunnel.ErrNoResponse): %v", err)
				}
			} else {
				r := <-head
				if r.err != nil {
					t.Fatalf("RoundTrip: %v", r.err)
				}
				defer r.res.Body.Close()
				b := make([]byte, len("first"))
				if _, err := io.ReadFull(r.res.Body, b); err != nil {
					t.Fatalf("the body's first piece: %v", err)
				}
				tc.end(s, agent)
				_, err = io.ReadAll(r.res.Body)
				if err == nil {
					t.Fatal("the body ended cleanly after its session ended")
				}
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "context canceled") {
				t.Fatalf("the exchange failed with %q; want the session's end reason %q in it", err, tc.want)
			}
			if tc.want == revoked.Error() {
				if !errors.Is(err, revoked) {
					t.Errorf("errors.Is(err, the session's reason) is false: %v", err)
				}
				// The agent learns why too.
				if aerr := a.wait(t); aerr == nil || !strings.Contains(aerr.Error(), tc.want) {
					t.Errorf("the agent's session ended with %v; want the reason %q in it", aerr, tc.want)
				}
			}
			if errors.Is(err, context.Canceled) {
				t.Errorf("the error passes for the client's cancellation (the gateway does not log those): %v", err)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}

// countingWatch is the gateway's watch, counting its Opening calls.
type countingWatch struct {
	grpctunnel.Watch
	openings *atomic.Int32
}

func (w countingWatch) Opening() {
	w.openings.Add(1)
	w.Watch.Opening()
}

// TestWaitForStreamArmsWatch: an exchange that finds every idle stream of
// a gRPC session taken (a burst) waits for the agent to open one; when
// the agent's path died, none comes, and the wait arms the liveness watch
// as an exchange on a pooled stream does (Opening), so that the session
// is set aside within about a second (the registry picks another agent).
// Before, the wait armed nothing: a burst whose exchanges were answered
// left the watch idle, and the session stayed picked until the keepalive
// ended it (16 s with the defaults).
func TestWaitForStreamArmsWatch(t *testing.T) {
	shortskip.Long(t, "waits about a second for the watch to set a silent session aside")
	var openings atomic.Int32
	ts := startServer(t, func(s *grpctunnel.Server) {
		s.NewWatch = func(ws grpctunnel.WatchedSession, c grpctunnel.ProbingPeer, log *zap.Logger) grpctunnel.Watch {
			return countingWatch{newWatch(ws, c, log), &openings}
		}
	})
	var path *tunneltest.FreezeConn
	ts.dialWith(grpctunnel.MinKeepalive, func(c net.Conn) net.Conn { path = tunneltest.NewFreezeConn(t, c); return path })
	s := ts.session()
	eventually(t, "the agent's idle streams", func() bool { return ts.srv.Stats().StreamsOpened == 2 }) // MinIdle
	heard := s.(interface{ Heard() (uint64, bool) })
	before, _ := heard.Heard()
	// The burst: every idle stream taken (nothing sent on them yet, so
	// the agent opens no more). The watch they armed asks the agent,
	// which answers.
	for range 2 {
		st := openStream(t, s)
		t.Cleanup(func() { st.Finish(false) })
	}
	if w := ts.srv.Stats().StreamWaits; w != 0 {
		t.Fatalf("%d exchanges of the burst waited for a stream; want none", w)
	}
	eventually(t, "the agent's answer to the burst's probe", func() bool { n, _ := heard.Heard(); return n != before })
	path.Freeze()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waited := make(chan error, 1)
	go func() {
		st, err := s.OpenStream(ctx)
		if err == nil {
			st.Finish(false)
		}
		waited <- err
	}()
	eventually(t, "the exchange to wait for a stream", func() bool { return ts.srv.Stats().StreamWaits == 1 })
	eventually(t, "the wait to arm the liveness watch (Opening)", func() bool { return openings.Load() == 3 })
	eventually(t, "the session whose agent opens no stream to be set aside", func() bool { return silent(s) })
	select {
	case err := <-waited:
		t.Fatalf("the wait for a stream ended: %v", err)
	default:
	}
}

// TestGivenUpWaitArmsNoWatch: an exchange given up before it waits for a
// stream (its context ended) or refused (the session is draining) arms
// no watch: nothing will be sent.
func TestGivenUpWaitArmsNoWatch(t *testing.T) {
	var openings atomic.Int32
	ts := startServer(t, func(s *grpctunnel.Server) {
		s.NewWatch = func(ws grpctunnel.WatchedSession, c grpctunnel.ProbingPeer, log *zap.Logger) grpctunnel.Watch {
			return countingWatch{newWatch(ws, c, log), &openings}
		}
	})
	_, conn := ts.dialKillable(helloBackend)
	defer conn.Close()
	s := ts.session()
	eventually(t, "the agent's idle streams", func() bool { return ts.srv.Stats().StreamsOpened == 2 }) // MinIdle
	for range 2 {
		st := openStream(t, s)
		t.Cleanup(func() { st.Finish(false) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.OpenStream(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("OpenStream with its context ended: %v", err)
	}
	s.Close(errors.New("test"))
	if _, err := s.OpenStream(context.Background()); !errors.Is(err, grpctunnel.ErrSessionClosed) {
		t.Fatalf("OpenStream on a closed session: %v", err)
	}
	if n := openings.Load(); n != 2 {
		t.Fatalf("%d Opening calls; want the burst's 2 only", n)
	}
}

// TestStreamErrorNamesGatewayStop: an exchange in flight when the gateway
// stops (DrainAll, then its gRPC server stops) fails with "gateway
// stopped", the session's end reason, instead of "context canceled"; the
// agent's session ends saying that the gateway drained it, and why.
func TestStreamErrorNamesGatewayStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failed := make(chan error, 1)
	agentDone := make(chan error, 1)
	t.Run("serve", func(t *testing.T) {
		ts := startServer(t, nil)
		cs, err := ts.dial(goodToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		entered := make(chan struct{}, 1)
		backend := heldBackend(entered)
		srv := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return backend, nil }}
		go func() { agentDone <- cs.Serve(ctx, srv, nil) }()
		st := openStream(t, ts.session())
		go func() {
			req, _ := http.NewRequest("GET", "http://backend:80/head", nil)
			res, err := tunnel.RoundTrip(st, req, nil)
			if err == nil {
				res.Body.Close()
			}
			failed <- err
		}()
		<-entered
		ts.srv.DrainAll("gateway shutting down")
		select {
		case <-cs.Drained(): // the gateway stops after its agents heard
		case <-time.After(hangGuard):
			t.Fatal("the agent did not hear the gateway's drain")
		}
		// The subtest's cleanup stops the gRPC server, as the gateway's
		// shutdown does, with the exchange in flight.
	})
	select {
	case err := <-failed:
		if err == nil || !strings.Contains(err.Error(), "gateway stopped") || !errors.Is(err, tunnel.ErrNoResponse) {
			t.Fatalf("the exchange in flight failed with %v; want the session's end reason %q, as ErrNoResponse", err, "gateway stopped")
		}
		t.Logf("%v", err)
	case <-time.After(hangGuard):
		t.Fatal("the exchange in flight did not fail when the gateway stopped")
	}
	// The agent says why too: the gateway's drain came before its
	// connection ended (it said only "error reading from server: EOF").
	select {
	case err := <-agentDone:
		if err == nil || !strings.Contains(err.Error(), "after the gateway's drain (gateway shutting down)") {
			t.Errorf("the agent's session ended with %v; want the gateway's drain reason in it", err)
		}
		t.Logf("agent: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("the agent session did not end")
	}
}
