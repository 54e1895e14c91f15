package muxtunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// TestUndrainedStopSaysWhy: the gateway's stop (Close without a reason:
// CloseAll) closes the connection of a session it cannot end in order, one
// never sent a Drain or one whose Drain is stuck in a write (an agent that
// takes no data), with a reason the agent reads in the close. Before, the
// reason was empty, and a QUIC agent logged only "lost the gateway
// session … Application error 0x0 (remote)".
func TestUndrainedStopSaysWhy(t *testing.T) {
	t.Run("not drained", func(t *testing.T) {
		ok := &okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}}
		c := newEndConn()
		ss := &session{srv: &Server{}, conn: c, ctrl: ok, done: make(chan struct{})}
		ss.greeted = true
		ss.welcomed.Store(true)
		ss.Close(nil)
		if r := c.waitClosed(t, "Close of a session never drained"); r != gatewayStopped {
			t.Errorf("closed with %q; want %q", r, gatewayStopped)
		}
		ss.endConn(gatewayStopped) // what ServeConn does next
	})
	t.Run("Drain stuck", func(t *testing.T) {
		stuck := &stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}
		c := newEndConn()
		ss := &session{srv: &Server{}, conn: c, ctrl: stuck, done: make(chan struct{})}
		ss.greeted = true
		ss.welcomed.Store(true)
		sent := make(chan error, 1)
		go func() { sent <- ss.SendDrain("gateway shutting down") }()
		select {
		case <-stuck.writes:
		case <-time.After(10 * time.Second):
			t.Fatal("the Drain was never written")
		}
		ss.Close(nil)
		if r := c.waitClosed(t, "Close during a blocked Drain"); r != gatewayStopped {
			t.Errorf("closed with %q; want %q", r, gatewayStopped)
		}
		stuck.close() // as the real connection's close does
		<-sent
	})
}

// failStream is an agent's control stream that holds its hello and takes
// nothing: the gateway's writes fail.
type failStream struct{ hello *bytes.Reader }

func (s *failStream) Read(p []byte) (int, error) { return s.hello.Read(p) }
func (s *failStream) Write([]byte) (int, error) {
	return 0, errors.New("stream reset by the agent (test)")
}
func (s *failStream) CloseWrite() error               { return nil }
func (s *failStream) CloseRead()                      {}
func (s *failStream) Reset()                          {}
func (s *failStream) SetReadDeadline(time.Time) error { return nil }

// helloConn is an endConn whose first accepted stream is ctrl; the next
// wait until the connection ends.
type helloConn struct {
	*endConn
	ctrl     RawStream
	accepted atomic.Bool
}

func (c *helloConn) AcceptStream(ctx context.Context) (RawStream, error) {
	if c.accepted.CompareAndSwap(false, true) {
		return c.ctrl, nil
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, errors.New("connection closed")
	}
}

// TestWelcomeNotSentIsNoStop: a session whose welcome cannot be written
// (the agent reset its control stream) is closed with a reason that says
// so, not "gateway stopped": the gateway runs on.
func TestWelcomeNotSentIsNoStop(t *testing.T) {
	var hello bytes.Buffer
	if err := writeMsg(&hello, &tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{ProtocolVersion: 1, Name: "a"}}, maxControlSize); err != nil {
		t.Fatal(err)
	}
	c := &helloConn{endConn: newEndConn(), ctrl: &failStream{hello: bytes.NewReader(hello.Bytes())}}
	srv := &Server{Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
		return tunnel.Identity{Group: "g"}, nil
	}}
	err := srv.ServeConn(context.Background(), c, "test")
	if err == nil || !strings.Contains(err.Error(), "send welcome") {
		t.Fatalf("ServeConn: %v; want the welcome's failure", err)
	}
	if r := c.waitClosed(t, "a session whose welcome failed"); r == gatewayStopped || r == "" {
		t.Errorf("closed with %q; want why: the welcome could not be written", r)
	}
}
