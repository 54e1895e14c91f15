package muxtunnel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// connect opens one more agent connection to p's server and returns its
// client end.
func (p *pair) connect(t *testing.T) muxtunnel.Conn {
	t.Helper()
	sc, cc := yamuxPipe(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.srv.ServeConn(ctx, sc, "yamux") }()
	t.Cleanup(func() {
		cancel()
		cc.Close("")
		<-served
	})
	return cc
}

// TestDrainAll: a session registered before DrainAll but not welcomed yet
// gets its welcome first and the Drain after it (Drained closes while it
// goes on serving), and new sessions are refused from then on with
// tunnel.ErrShuttingDown, so that an agent replacing its session goes to
// another replica. Without the fix the handshake fails on a Drain in place
// of its welcome, the agent never learns of the Drain, and the gateway
// takes new sessions until it closes them.
func TestDrainAll(t *testing.T) {
	var srv *muxtunnel.Server
	p := newPair(t, func(s *muxtunnel.Server) {
		srv = s
		next := s.OnSession
		s.OnSession = func(ss tunnel.Session) {
			srv.DrainAll("test: gateway shutting down") // between registration and welcome
			next(ss)
		}
	})
	cs, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if err != nil {
		t.Fatalf("the session registered before DrainAll: %v", err)
	}
	session(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	drain, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- cs.Serve(ctx, &tunnel.Server{}, drain) }()
	select {
	case <-cs.Drained():
	case <-time.After(hangGuard):
		t.Fatal("the session never got the Drain")
	}
	select {
	case err := <-done:
		t.Fatalf("the drained session ended at the Drain: %v", err)
	default:
	}

	_, err = muxtunnel.Handshake(context.Background(), p.connect(t), muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if !errors.Is(err, tunnel.ErrShuttingDown) {
		t.Fatalf("a session after DrainAll: %v; want tunnel.ErrShuttingDown", err)
	}
	select {
	case s := <-p.sessions:
		t.Fatalf("a session was registered after DrainAll: %+v", s.Info())
	default:
	}
	close(drain)
	cancel()
	<-done
}
