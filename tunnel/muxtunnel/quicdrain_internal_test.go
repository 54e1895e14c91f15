package muxtunnel

import (
	"context"
	"crypto/tls"
	"errors"
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

// TestDrainedEndWaitsBounded: a drained session's end as the gateway
// stops (Close without a reason) gives the agent its stream's end and
// waits for it to close the connection; an agent that never does is closed
// after drainEndWait, with the reason ServeConn gives.
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
	ss.Close(nil)
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
	if r := c.waitClosed(t, "endConn of an agent that never closes"); r != "gateway stopped" {
		t.Errorf("closed with %q; want %q", r, "gateway stopped")
	}
	<-ended
	select {
	case <-ok.closed:
	default:
		t.Error("the control stream was not ended (CloseWrite) before the connection")
	}
}

// drainedSession is a welcomed session on c whose agent was sent a Drain
// that it took.
func drainedSession(t *testing.T, c Conn, ctrl RawStream) *session {
	t.Helper()
	ss := &session{srv: &Server{}, conn: c, ctrl: ctrl, done: make(chan struct{})}
	ss.greeted = true
	ss.welcomed.Store(true)
	if err := ss.SendDrain("test"); err != nil {
		t.Fatal(err)
	}
	return ss
}

// TestDrainedSessionClosedWithReasonCutAtOnce: a Close with a reason (a
// revocation, a certificate that expired or was retired, an agent the
// liveness watch found dead) closes a drained session's connection before
// it returns, as for any session: its exchanges end now, and the agent
// gets no more time on them. Before, the drained session's connection was
// left to endConn, which let the agent run its exchanges until it closed
// the connection itself, for drainEndWait, and over yamux for as long as
// the agent took nothing (the end of the control stream waits to be
// written behind it, up to yamux's 5-minute write timeout).
func TestDrainedSessionClosedWithReasonCutAtOnce(t *testing.T) {
	for _, reason := range []error{
		errors.New("revoked: connector c1 was revoked"),
		errAgentSilent,
		errAgentDrained,
	} {
		ok := &okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}}
		c := newEndConn()
		ss := drainedSession(t, c, ok)
		ss.Close(reason)
		select {
		case r := <-c.closed:
			if r != reason.Error() {
				t.Errorf("closed with %q; want %q", r, reason.Error())
			}
		default:
			t.Errorf("Close(%q) of a drained session left its connection open", reason)
		}
		ss.endConn("closed by the gateway") // what ServeConn does next: nothing left to wait for
	}
}

// blockedEndStream is a control stream whose CloseWrite waits until the
// connection closes, as yamux's does while the agent takes nothing: its
// FIN waits to be written behind what is queued, up to yamux's 5-minute
// write timeout, or until the session closes.
type blockedEndStream struct {
	okStream
	conn *endConn
}

func (s *blockedEndStream) CloseWrite() error {
	<-s.conn.done
	return nil
}

// TestDrainedEndBoundedWhenTheEndWaits: the end of a drained session as the
// gateway stops waits at most drainEndWait even when ending the control
// stream itself waits (yamux, an agent that takes nothing): the connection
// is closed then. Before, endConn waited in CloseWrite first, and started
// its drainEndWait only after: a lone gateway's stop (its Serve waits for
// every yamux session) waited up to 5 minutes for such an agent.
func TestDrainedEndBoundedWhenTheEndWaits(t *testing.T) {
	defer func(d time.Duration) { drainEndWait = d }(drainEndWait)
	drainEndWait = 20 * time.Millisecond
	c := newEndConn()
	st := &blockedEndStream{okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}}, c}
	ss := drainedSession(t, c, st)
	ss.Close(nil)
	ended := make(chan struct{})
	go func() {
		ss.endConn("gateway stopped")
		close(ended)
	}()
	if r := c.waitClosed(t, "endConn whose CloseWrite waits"); r != "gateway stopped" {
		t.Errorf("closed with %q; want %q", r, "gateway stopped")
	}
	<-ended
}
