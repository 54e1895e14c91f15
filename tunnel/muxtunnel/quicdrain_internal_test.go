package muxtunnel

import (
	"context"
	"crypto/tls"
	"sync"
	"testing"
	"time"
)

// endConn is a Conn that records its Close.
type endConn struct {
	closed chan string // gets Close's reason, once
	done   chan struct{}
	once   sync.Once
}

func newEndConn() *endConn {
	return &endConn{closed: make(chan string, 1), done: make(chan struct{})}
}

func (c *endConn) OpenStream(context.Context) (RawStream, error) { panic("not in this test") }
func (c *endConn) AcceptStream(ctx context.Context) (RawStream, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (c *endConn) Close(reason string) {
	c.once.Do(func() {
		c.closed <- reason
		close(c.done)
	})
}
func (c *endConn) Done() <-chan struct{}          { return c.done }
func (c *endConn) RemoteAddr() string             { return "test" }
func (c *endConn) TLSState() *tls.ConnectionState { return nil }

func (c *endConn) waitClosed(t *testing.T, what string) string {
	t.Helper()
	select {
	case r := <-c.closed:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the connection was never closed", what)
		return ""
	}
}

// TestCloseWhileDrainIsStuck: the Drain of an agent that takes no data
// blocks its write; Close then closes the connection at once (which ends
// the write), as before the drained sessions' orderly end (endConn), and
// does not leave it to a ServeConn that may be the one blocked.
func TestCloseWhileDrainIsStuck(t *testing.T) {
	stuck := &stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}
	c := newEndConn()
	ss := &session{srv: &Server{}, conn: c, ctrl: stuck, done: make(chan struct{})}
	ss.greeted = true
	ss.welcomed.Store(true)
	sent := make(chan error, 1)
	go func() { sent <- ss.SendDrain("test") }()
	select {
	case <-stuck.writes:
	case <-time.After(10 * time.Second):
		t.Fatal("the Drain was never written")
	}
	ss.Close(nil)
	c.waitClosed(t, "Close during a blocked Drain")
	stuck.close() // as the real connection's close does
	<-sent
}

// TestDrainedEndWaitsBounded: a drained session's end gives the agent its
// stream's end and waits for it to close the connection; an agent that
// never does is closed after drainEndWait, with the session's reason.
func TestDrainedEndWaitsBounded(t *testing.T) {
	defer func(d time.Duration) { drainEndWait = d }(drainEndWait)
	drainEndWait = 20 * time.Millisecond
	ok := &okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}}
	c := newEndConn()
	ss := &session{srv: &Server{}, conn: c, ctrl: ok, done: make(chan struct{})}
	ss.greeted = true
	ss.welcomed.Store(true)
	if err := ss.SendDrain("test"); err != nil {
		t.Fatal(err)
	}
	ss.Close(ErrSessionClosed)
	select {
	case r := <-c.closed:
		t.Fatalf("Close closed a drained session's connection at once (%q): the agent may not have read the Drain", r)
	default:
	}
	ended := make(chan struct{})
	go func() {
		ss.endConn("gateway stopped")
		close(ended)
	}()
	if r := c.waitClosed(t, "endConn of an agent that never closes"); r != ErrSessionClosed.Error() {
		t.Errorf("closed with %q; want the session's reason %q", r, ErrSessionClosed.Error())
	}
	<-ended
	select {
	case <-ok.closed:
	default:
		t.Error("the control stream was not ended (CloseWrite) before the connection")
	}
}
