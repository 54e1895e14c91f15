package grpctunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/shortskip"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// dialWith connects an agent session whose TCP connection goes through
// wrap, with the agent's keepalive, and serves helloBackend on it.
func (ts *testServer) dialWith(keepalive time.Duration, wrap func(net.Conn) net.Conn) *testAgent {
	ts.t.Helper()
	return ts.serveAgent(ts.dialWrapped(keepalive, wrap), helloBackend)
}

// dialWrapped connects an agent session whose TCP connection goes through
// wrap, with the agent's keepalive (0: the default).
func (ts *testServer) dialWrapped(keepalive time.Duration, wrap func(net.Conn) net.Conn) *grpctunnel.ClientSession {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cs, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{
		Addr: ts.addr, TLS: ts.tls, Token: goodToken, MinIdle: 2, Keepalive: keepalive,
		Hello: &tunnelv1.Hello{Name: "test-agent", Version: "v-test", AgentId: "agent-live", Platform: "test/os"},
		DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return wrap(c), nil
		},
	})
	if err != nil {
		ts.t.Fatalf("dial: %v", err)
	}
	return cs
}

// silent reports whether s is set aside by its liveness watch (the
// gateway's registry asks the same).
func silent(s tunnel.Session) bool {
	l, ok := s.(interface{ Silent() bool })
	return ok && l.Silent()
}

// eventually polls cond (the watch has no event to wait on) for up to
// hangGuard.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", hangGuard, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSilentGRPCAgentSetAsideAndClosed: of two agents, one whose path
// dies silently (nothing passes either way, no FIN, no RST) is set aside
// (Silent: the registry picks the other agent) within about a second of
// the next exchange sent to it, and its session is closed after its
// keepalive (5 s, which it says in its control stream's metadata) and a
// second. The other agent is left alone. Before, gRPC sessions had no
// liveness watch: the dead one was picked, and every exchange sent there
// waited, until the gateway's keepalive ended it (25 s by default, 10 s
// with 5 s).
func TestSilentGRPCAgentSetAsideAndClosed(t *testing.T) {
	shortskip.Long(t, "waits about 6 s for the watch to close a silent session")
	ts := startServer(t, nil)
	ts.startAgent(helloBackend)
	healthy := ts.session()
	var path *tunneltest.FreezeConn
	ts.dialWith(grpctunnel.MinKeepalive, func(c net.Conn) net.Conn { path = tunneltest.NewFreezeConn(t, c); return path })
	doomed := ts.session()

	// A live agent answers the gateway's probe: not set aside.
	exchange(t, doomed, "/before")
	exchange(t, healthy, "/before")
	if silent(doomed) || silent(healthy) {
		t.Fatalf("a live agent's session was set aside (silent: doomed %v, healthy %v)", silent(doomed), silent(healthy))
	}

	path.Freeze()
	start := time.Now()
	// The next exchange sent to the dead agent: it waits for an answer
	// that never comes, until the session closes.
	st := openStream(t, doomed)
	failed := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://backend:80/lost", nil)
		res, err := tunnel.RoundTrip(st, req, nil)
		if err == nil {
			res.Body.Close()
		}
		failed <- err
	}()
	eventually(t, "the dead agent's session to be set aside", func() bool { return silent(doomed) })
	setAside := time.Since(start)
	exchange(t, healthy, "/meanwhile")
	if silent(healthy) {
		t.Fatal("the live agent's session was set aside with the dead one's")
	}
	select {
	case <-doomed.Done():
	case <-time.After(grpctunnel.MinKeepalive + hangGuard):
		t.Fatalf("the silent session was not closed %v after the exchange (set aside after %v)", time.Since(start), setAside)
	}
	closed := time.Since(start)
	select {
	case err := <-failed:
		if err == nil {
			t.Fatal("the exchange sent to the dead agent got an answer")
		}
		// It says why (it said "context canceled").
		if !strings.Contains(err.Error(), "nothing came from the agent") || !errors.Is(err, tunnel.ErrNoResponse) {
			t.Errorf("the exchange sent to the dead agent failed with %q; want the watch's reason, as ErrNoResponse", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("the exchange sent to the dead agent did not fail when its session closed")
	}
	// About a second (1 to 1.5 s); the bound only tells it from the
	// keepalive's 10 s.
	if setAside > 3*time.Second || closed < grpctunnel.MinKeepalive {
		t.Fatalf("set aside after %v (want about 1 s), closed after %v (want the agent's keepalive %v and about 1 s)",
			setAside, closed, grpctunnel.MinKeepalive)
	}
	select {
	case <-healthy.Done():
		t.Fatal("the live agent's session was closed")
	default:
	}
	exchange(t, healthy, "/after")
	t.Logf("set aside after %v, closed after %v", setAside.Round(10*time.Millisecond), closed.Round(10*time.Millisecond))
}

// TestSlowGRPCBackendNotSetAside: an exchange whose backend answers after
// 3 s, longer than the watch waits for the agent's answer, does not set its
// session aside: the agent's gRPC answered the gateway's probe (a PING) at
// once, and the response comes on the same session.
func TestSlowGRPCBackendNotSetAside(t *testing.T) {
	shortskip.Long(t, "holds a slow exchange for 3 s")
	ts := startServer(t, nil)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	ts.startAgent(rtFunc(func(req *http.Request) (*http.Response, error) {
		entered <- struct{}{}
		<-release
		return helloBackend(req)
	}))
	s := ts.session()
	done := make(chan error, 1)
	go func() {
		st, err := s.OpenStream(context.Background())
		if err != nil {
			done <- err
			return
		}
		req, _ := http.NewRequest("GET", "http://backend:80/slow", nil)
		res, err := tunnel.RoundTrip(st, req, nil)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil && string(b) != "hello /slow" {
				err = io.ErrUnexpectedEOF
			}
		}
		done <- err
	}()
	<-entered
	var once sync.Once
	hold := time.AfterFunc(3*time.Second, func() { once.Do(func() { close(release) }) })
	defer hold.Stop()
	defer once.Do(func() { close(release) })
	for {
		if silent(s) {
			t.Fatal("a live agent's session was set aside while its backend took its time")
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("the slow exchange failed: %v", err)
			}
			if silent(s) || isClosed(s) {
				t.Fatalf("after the slow exchange: silent %v, closed %v", silent(s), isClosed(s))
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func isClosed(s tunnel.Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}
