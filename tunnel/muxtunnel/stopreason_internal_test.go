package muxtunnel

import (
	"testing"
	"time"
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
