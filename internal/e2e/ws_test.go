package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// wsHost is the external host of the WebSocket apps.
const wsHost = "ws.test"

// wsRig publishes backend as wsHost with one agent.
func wsRig(t *testing.T, backend *httptest.Server) *testrig.Rig {
	t.Helper()
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "ws", Hosts: []string{wsHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	return rig
}

// dialWS opens a WebSocket to path through the gateway, without an Origin
// header; it is closed when the test ends.
func dialWS(ctx context.Context, t *testing.T, rig *testrig.Rig, path string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	c, res, err := websocket.Dial(ctx, "ws://"+rig.G.PublicAddr().String()+path,
		&websocket.DialOptions{Host: wsHost, HTTPClient: rig.Client()})
	if err != nil {
		return nil, res, err
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, res, nil
}

func mustDialWS(ctx context.Context, t *testing.T, rig *testrig.Rig, path string) *websocket.Conn {
	t.Helper()
	c, res, err := dialWS(ctx, t, rig, path)
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", path, err, res)
	}
	return c
}

// wsRoundTrips sends n text messages on c, each after the echo of the
// previous one arrived, and checks the echoes.
func wsRoundTrips(ctx context.Context, t *testing.T, c *websocket.Conn, n int) {
	t.Helper()
	for i := range n {
		msg := fmt.Appendf(nil, "round trip %d", i)
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			t.Fatalf("round trip %d: write: %v", i, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("round trip %d: read: %v", i, err)
		}
		if typ != websocket.MessageText || !bytes.Equal(got, msg) {
			t.Fatalf("round trip %d: got %v %q", i, typ, got)
		}
	}
}

// wsBackend is a WebSocket backend that hands every accepted connection to
// the test, which then drives the server side itself. GET /refuse answers
// 400 instead of upgrading and GET /plain is an ordinary page.
type wsBackend struct {
	srv   *httptest.Server
	conns chan wsServerConn
}

// wsServerConn is one accepted connection; its handler returns when
// release is closed.
type wsServerConn struct {
	c       *websocket.Conn
	release chan struct{}
}

func newWSBackend(t *testing.T) *wsBackend {
	b := &wsBackend{conns: make(chan wsServerConn)}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/refuse":
			http.Error(w, "no websockets here", http.StatusBadRequest)
			return
		case "/plain":
			io.WriteString(w, "plain ok")
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		sc := wsServerConn{c: c, release: make(chan struct{})}
		select {
		case b.conns <- sc:
		case <-r.Context().Done():
			return
		}
		<-sc.release
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// accept returns the server side of the next connection; it is released
// when the test ends.
func (b *wsBackend) accept(ctx context.Context, t *testing.T) *websocket.Conn {
	t.Helper()
	sc := waitRecv(ctx, t, b.conns, "the backend to accept a WebSocket")
	t.Cleanup(func() { close(sc.release) })
	return sc.c
}

// wsPair dials path through the gateway and returns both ends.
func (b *wsBackend) pair(ctx context.Context, t *testing.T, rig *testrig.Rig) (client, server *websocket.Conn) {
	t.Helper()
	client = mustDialWS(ctx, t, rig, "/ws")
	return client, b.accept(ctx, t)
}

func TestWSEchoDemoapp(t *testing.T) {
	backend := httptest.NewServer(demoapp.New())
	t.Cleanup(backend.Close)
	rig := wsRig(t, backend)
	ctx := boundedCtx(t)
	c := mustDialWS(ctx, t, rig, "/ws")
	c.SetReadLimit(1 << 20)

	big := make([]byte, 300<<10) // several tunnel chunks
	for i := range big {
		big[i] = byte(i * 13)
	}
	msgs := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello through the relay")},
		{websocket.MessageBinary, []byte{0, 1, 2, 0xfe, 0xff}},
		{websocket.MessageText, []byte("")},
		{websocket.MessageText, []byte("ünïcødé ✓")},
		{websocket.MessageBinary, big},
	}
	for i, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: read: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Fatalf("message %d: echo is %v of %d bytes, want %v of %d bytes", i, typ, len(got), m.typ, len(m.data))
		}
	}
	// Long-lived: many round trips on the same connection.
	wsRoundTrips(ctx, t, c, 200)
	// demoapp answers a close frame with the same code; Close returns nil
	// only when that answer arrived.
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// TestWSBackendHTTP2: a WebSocket to an app with backend_http2 (a backend
// that speaks HTTP/2 for requests and HTTP/1.1 for upgrades, as Go's and
// most servers do) works: the agent sends the upgrade over HTTP/1.1. It
// used to send it to its HTTP/2 client, which refused it, and the client
// got 502 backend-unreachable ("check that the backend is running").
func TestWSBackendHTTP2(t *testing.T) {
	backend := httptest.NewUnstartedServer(demoapp.New())
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	backend.Config.Protocols = &p
	backend.Start()
	t.Cleanup(backend.Close)
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "ws", Hosts: []string{wsHost}, Backend: testrig.MustURL(t, backend.URL), BackendHTTP2: true},
	}})
	rig.StartAgent(nil)
	ctx := boundedCtx(t)
	c := mustDialWS(ctx, t, rig, "/ws")
	wsRoundTrips(ctx, t, c, 20)
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// TestWSBothDirections: the backend pushes messages on its own, while the
// client sends its own, neither waiting for the other.
func TestWSBothDirections(t *testing.T) {
	b := newWSBackend(t)
	rig := wsRig(t, b.srv)
	ctx := boundedCtx(t)
	client, server := b.pair(ctx, t, rig)

	// The backend speaks first, unprompted.
	if err := server.Write(ctx, websocket.MessageText, []byte("welcome")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := client.Read(ctx); err != nil || string(got) != "welcome" {
		t.Fatalf("client read %q, %v", got, err)
	}
	// The client sends without expecting an answer.
	if err := client.Write(ctx, websocket.MessageBinary, []byte("hello backend")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := server.Read(ctx); err != nil || string(got) != "hello backend" {
		t.Fatalf("server read %q, %v", got, err)
	}

	// Both directions at once. The backend paces its pushes with ticks, so
	// its messages interleave with the client's rather than following them.
	const n = 100
	ticks := make(chan int)
	send := func(c *websocket.Conn, prefix string, next func() (int, bool)) error {
		for {
			i, ok := next()
			if !ok {
				return nil
			}
			if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "%s %d", prefix, i)); err != nil {
				return fmt.Errorf("%s %d: write: %w", prefix, i, err)
			}
		}
	}
	recv := func(c *websocket.Conn, prefix string, each func(int)) error {
		for i := range n {
			_, got, err := c.Read(ctx)
			if err != nil {
				return fmt.Errorf("%s %d: read: %w", prefix, i, err)
			}
			if want := fmt.Sprintf("%s %d", prefix, i); string(got) != want {
				return fmt.Errorf("read %q, want %q", got, want)
			}
			each(i)
		}
		return nil
	}
	var g errgroup.Group
	g.Go(func() error {
		return send(server, "push", func() (int, bool) { i, ok := <-ticks; return i, ok })
	})
	i := 0
	g.Go(func() error {
		return send(client, "up", func() (int, bool) { i++; return i - 1, i <= n })
	})
	g.Go(func() error { return recv(server, "up", func(int) {}) })
	// The client's reader drives the backend's schedule: the next push is
	// due once the previous one arrived.
	ticks <- 0
	g.Go(func() error {
		defer close(ticks)
		return recv(client, "push", func(k int) {
			if k+1 < n {
				ticks <- k + 1
			}
		})
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// A clean close still works after all that.
	go server.Read(ctx)
	if err := client.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// wsCloseOf reports a clean close's code and reason, or -1 for an error
// that was no close frame.
func wsCloseOf(err error) (websocket.StatusCode, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

func TestWSCloseFromClient(t *testing.T) {
	b := newWSBackend(t)
	rig := wsRig(t, b.srv)
	ctx := boundedCtx(t)
	client, server := b.pair(ctx, t, rig)
	got := make(chan error, 1)
	go func() {
		_, _, err := server.Read(ctx)
		got <- err
	}()
	// Close returns nil once the backend's answering close frame arrived.
	if err := client.Close(4000, "client bye"); err != nil {
		t.Fatalf("close: %v", err)
	}
	err := waitRecv(ctx, t, got, "the backend to see the close")
	if code, reason := wsCloseOf(err); code != 4000 || reason != "client bye" {
		t.Fatalf("backend read ended with %v, want close 4000 \"client bye\"", err)
	}
}

func TestWSCloseFromBackend(t *testing.T) {
	b := newWSBackend(t)
	rig := wsRig(t, b.srv)
	ctx := boundedCtx(t)
	client, server := b.pair(ctx, t, rig)
	closed := make(chan error, 1)
	go func() { closed <- server.Close(4001, "server bye") }()
	_, _, err := client.Read(ctx)
	if code, reason := wsCloseOf(err); code != 4001 || reason != "server bye" {
		t.Fatalf("client read ended with %v, want close 4001 \"server bye\"", err)
	}
	// The client's answering close frame reached the backend.
	if err := waitRecv(ctx, t, closed, "the backend's close to complete"); err != nil {
		t.Fatalf("backend close: %v", err)
	}
}

// TestWSAbruptClose: when one end drops its TCP connection without a close
// frame, the other end first reads everything sent before the drop, and
// then its read fails (and does not hang).
func TestWSAbruptClose(t *testing.T) {
	b := newWSBackend(t)
	rig := wsRig(t, b.srv)
	cases := map[string]func(client, server *websocket.Conn) (dropped, other *websocket.Conn){
		"client":  func(c, s *websocket.Conn) (*websocket.Conn, *websocket.Conn) { return c, s },
		"backend": func(c, s *websocket.Conn) (*websocket.Conn, *websocket.Conn) { return s, c },
	}
	const burst = 64
	for name, pick := range cases {
		t.Run(name+" drops", func(t *testing.T) {
			ctx := boundedCtx(t)
			client, server := b.pair(ctx, t, rig)
			// Prove the connection works both ways before dropping it.
			for _, p := range [][2]*websocket.Conn{{client, server}, {server, client}} {
				if err := p[0].Write(ctx, websocket.MessageText, []byte("alive")); err != nil {
					t.Fatal(err)
				}
				if _, got, err := p[1].Read(ctx); err != nil || string(got) != "alive" {
					t.Fatalf("read %q, %v", got, err)
				}
			}
			dropped, other := pick(client, server)
			type result struct {
				n   int // burst messages read intact
				err error
			}
			got := make(chan result, 1)
			go func() {
				for i := range burst {
					_, msg, err := other.Read(ctx)
					if err != nil || !bytes.Equal(msg, patternBytes(i, 16<<10)) {
						got <- result{i, err}
						return
					}
				}
				_, _, err := other.Read(ctx)
				got <- result{burst, err}
			}()
			// A burst right before the drop: it must not be lost with it.
			for i := range burst {
				if err := dropped.Write(ctx, websocket.MessageBinary, patternBytes(i, 16<<10)); err != nil {
					t.Fatal(err)
				}
			}
			dropped.CloseNow() // no close frame: the TCP connection just ends
			r := waitRecv(ctx, t, got, "the other end's read to fail")
			if r.n != burst {
				t.Fatalf("only %d of %d messages sent before the drop arrived (%v)", r.n, burst, r.err)
			}
			if code, _ := wsCloseOf(r.err); r.err == nil || code != -1 || ctx.Err() != nil {
				t.Fatalf("read ended with %v; want a broken connection (test context: %v)", r.err, context.Cause(ctx))
			}
		})
	}
}

// TestWSClientReset: a client whose TCP connection ends with a reset (RST,
// not FIN) makes the relay abort the exchange, and the backend's read fails.
func TestWSClientReset(t *testing.T) {
	b := newWSBackend(t)
	rig := wsRig(t, b.srv)
	ctx := boundedCtx(t)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", rig.G.PublicAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A handshake by hand, so that the test owns the TCP connection.
	req, _ := http.NewRequest("GET", "http://"+wsHost+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", res.Status)
	}
	server := b.accept(ctx, t)
	got := make(chan error, 1)
	go func() {
		_, _, err := server.Read(ctx)
		got <- err
	}()
	if err := conn.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	conn.Close() // with linger 0, the kernel sends RST
	err = waitRecv(ctx, t, got, "the backend's read to fail")
	if code, _ := wsCloseOf(err); err == nil || code != -1 || ctx.Err() != nil {
		t.Fatalf("backend read ended with %v (test context: %v)", err, context.Cause(ctx))
	}
}

// TestWSUpgradeRefused: a backend that answers a WebSocket handshake with
// 400 gives the client that 400, and the relay keeps working.
func TestWSUpgradeRefused(t *testing.T) {
	b := newWSBackend(t)
	rig := wsRig(t, b.srv)
	ctx := boundedCtx(t)
	hc := rig.Client()
	for i := range 5 {
		_, res, err := dialWS(ctx, t, rig, "/refuse")
		if err == nil {
			t.Fatal("the handshake succeeded")
		}
		if res == nil || res.StatusCode != http.StatusBadRequest {
			t.Fatalf("attempt %d: %v, response %v; want 400", i, err, res)
		}
		// The same with a plain client, to see the backend's body.
		req, _ := http.NewRequestWithContext(ctx, "GET", rig.URL+"/refuse", nil)
		req.Host = wsHost
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		res, body := fetch(t, hc, req)
		if res.StatusCode != http.StatusBadRequest || strings.TrimSpace(body) != "no websockets here" {
			t.Fatalf("attempt %d: %d %q", i, res.StatusCode, body)
		}
	}
	// Ordinary requests and a real WebSocket still go through, on the same
	// tunnel session.
	for i := range 20 {
		req, _ := http.NewRequestWithContext(ctx, "GET", rig.URL+"/plain", nil)
		req.Host = wsHost
		if res, body := fetch(t, hc, req); res.StatusCode != http.StatusOK || body != "plain ok" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	client, server := b.pair(ctx, t, rig)
	if err := client.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := server.Read(ctx); err != nil || string(got) != "still here" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if n := rig.G.Registry().Count(testrig.Group); n != 1 {
		t.Fatalf("%d sessions, want the agent's one", n)
	}
}

// fetch does req and returns the response with its whole body.
func fetch(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}
