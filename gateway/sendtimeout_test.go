package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// endlessSession is a tunnel.Session whose streams answer with a body that
// never ends: a 32 KiB frame at every Recv, after pause, until the
// exchange finishes the stream.
type endlessSession struct {
	pause    time.Duration
	finished chan struct{} // closed when the first stream is finished
	once     sync.Once
	done     chan struct{}
}

func (s *endlessSession) OpenStream(context.Context) (tunnel.Stream, error) {
	return &endlessStream{s: s, stop: make(chan struct{})}, nil
}
func (s *endlessSession) Info() tunnel.SessionInfo {
	return tunnel.SessionInfo{ID: "e", AgentName: "agent", Group: "g"}
}
func (s *endlessSession) Draining() <-chan struct{} { return s.done }
func (s *endlessSession) Done() <-chan struct{}     { return s.done }
func (s *endlessSession) Close(error)               {}

type endlessStream struct {
	s        *endlessSession
	headSent bool
	stop     chan struct{}
	once     sync.Once
}

var endlessChunk = make([]byte, 32<<10)

func (st *endlessStream) Send(*tunnel.Frame) error { return nil }
func (st *endlessStream) Recv() (*tunnel.Frame, error) {
	if !st.headSent {
		st.headSent = true
		return &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: 1 << 40,
			Headers: []*tunnelv1.Header{{Name: "Content-Type", Values: []string{"application/octet-stream"}}}}}, nil
	}
	if st.s.pause > 0 {
		select {
		case <-time.After(st.s.pause):
		case <-st.stop:
		}
	}
	select {
	case <-st.stop:
		return nil, io.ErrClosedPipe
	default:
		return &tunnel.Frame{Data: endlessChunk}, nil
	}
}
func (st *endlessStream) Finish(bool) {
	st.once.Do(func() { close(st.stop) })
	st.s.once.Do(func() { close(st.s.finished) })
}

// endlessGateway serves app.test, whose only session is an endlessSession,
// on a loopback HTTP/1.1 and h2c listener with the given send timeout.
func endlessGateway(t *testing.T, sendTimeout, pause time.Duration) (addr string, s *endlessSession) {
	t.Helper()
	s = &endlessSession{pause: pause, finished: make(chan struct{}), done: make(chan struct{})}
	addr, _ = serveAppGateway(t, Config{SendTimeout: sendTimeout}, s)
	return addr, s
}

// serveAppGateway serves app.test (group g), whose only session is s, with
// cfg on a loopback HTTP/1.1 and h2c listener until the test ends.
func serveAppGateway(t *testing.T, cfg Config, s tunnel.Session) (addr string, g *Gateway) {
	t.Helper()
	return serveAppGatewayLog(t, cfg, s, zap.NewNop())
}

// serveAppGatewayLog is serveAppGateway logging to log.
func serveAppGatewayLog(t *testing.T, cfg Config, s tunnel.Session, log *zap.Logger) (addr string, g *Gateway) {
	t.Helper()
	router, err := NewRouter([]Route{{App: "a", Hosts: []string{"app.test"}, Group: "g",
		Backend: &url.URL{Scheme: "http", Host: "backend:80"}}})
	if err != nil {
		t.Fatal(err)
	}
	g = &Gateway{registry: NewRegistry(), log: log, cfg: cfg}
	g.router.Store(router)
	g.registry.Add(s)
	g.handler = newProxyHandler(g)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: g.handler, Protocols: &protocols}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return ln.Addr().String(), g
}

// smallReceiveBuffer dials with a 4 KiB receive buffer, so that a client
// that does not read stops the server's writes soon.
var smallReceiveBuffer = net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
	var err error
	c.Control(func(fd uintptr) { err = setReceiveBuffer(fd, 4096) })
	return err
}}

// sendGuardWait bounds the waits of the send guard tests; no assertion
// depends on it.
const sendGuardWait = 5 * time.Second

// waitFinished waits for the exchange's stream to be finished and returns
// how long that took from start.
func waitFinished(t *testing.T, s *endlessSession, start time.Time) time.Duration {
	t.Helper()
	select {
	case <-s.finished:
		return time.Since(start)
	case <-time.After(sendGuardWait):
		t.Fatalf("the client stopped reading and the exchange still holds its tunnel stream after %v", sendGuardWait)
		return 0
	}
}

// TestSendTimeoutCutsStalledClient: a client that stops reading a download
// (HTTP/1.1: a full TCP window; HTTP/2: a stream window of 0) has its
// exchange cut after the send timeout, which releases the tunnel stream.
// Before, nothing ended such an exchange: it held its stream, up to a
// flow-control window of body and the agent's backend connection for ever.
func TestSendTimeoutCutsStalledClient(t *testing.T) {
	const timeout = 300 * time.Millisecond
	t.Run("HTTP/1.1", func(t *testing.T) {
		addr, s := endlessGateway(t, timeout, 0)
		c, err := smallReceiveBuffer.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if d := waitFinished(t, s, start); d < timeout {
			t.Fatalf("cut after %v, before the send timeout (%v)", d, timeout)
		}
	})
	t.Run("HTTP/2", func(t *testing.T) {
		addr, s := endlessGateway(t, timeout, 0)
		start := time.Now()
		reset := stalledHTTP2Streams(t, addr, []string{"/big"})
		if d := waitFinished(t, s, start); d < timeout {
			t.Fatalf("cut after %v, before the send timeout (%v)", d, timeout)
		}
		select {
		case <-reset: // the stream is reset, the connection stays
		case <-time.After(sendGuardWait):
			t.Fatal("the stalled stream was not reset")
		}
	})
}

// TestSendTimeoutSparesReadingClients: a client that reads in bursts with
// pauses shorter than the send timeout, and a backend that pauses longer
// than the send timeout between writes, are not cut: only a write or flush
// to the client that does not return within the send timeout counts. (The
// kernel wakes a blocked writer once a third of the socket's send buffer
// is free, and loopback grows that buffer to megabytes: the bursts read
// 2 MiB each.)
func TestSendTimeoutSparesReadingClients(t *testing.T) {
	// The client's pauses are a tenth of the timeout, so that a loaded
	// machine's late wake-ups cannot make them look like a stalled client.
	const timeout = time.Second
	for _, tc := range []struct {
		name  string
		pause time.Duration // between the backend's frames
		read  time.Duration // between the client's bursts
	}{
		{"pausing reader", 0, timeout / 10},
		{"pausing backend", timeout * 3 / 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, s := endlessGateway(t, timeout, tc.pause)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(sendGuardWait))
			io.WriteString(c, "GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
			br := bufio.NewReader(c)
			burst := int64(2 << 20)
			if tc.pause > 0 {
				burst = 32 << 10 // a frame per pause
			}
			for end := time.Now().Add(5 * timeout / 2); time.Now().Before(end); {
				if tc.read > 0 {
					time.Sleep(tc.read) // the client's pace, not a wait for an event
				}
				if _, err := io.CopyN(io.Discard, br, burst); err != nil {
					t.Fatalf("read: %v", err)
				}
				select {
				case <-s.finished:
					t.Fatal("the exchange was cut while the client read and the backend sent")
				default:
				}
			}
		})
	}
}
