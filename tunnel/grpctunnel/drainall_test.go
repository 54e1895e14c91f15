package grpctunnel_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// TestDrainAll: DrainAll reaches a connected agent (Drained closes while
// the session goes on serving), a session registered before DrainAll but
// not welcomed yet gets its welcome first and the Drain after it, and new
// sessions are refused from then on with tunnel.ErrShuttingDown, so that
// an agent replacing its session goes to another replica. Without the fix
// the agent never learns of the Drain (no Drained), the late session's
// Dial fails on a Drain in place of its welcome, and the gateway takes new
// sessions until it closes them.
func TestDrainAll(t *testing.T) {
	var n atomic.Int32
	ts := startServer(t, func(s *grpctunnel.Server) {
		next := s.OnSession
		s.OnSession = func(ss tunnel.Session) {
			if n.Add(1) == 2 {
				s.DrainAll("test: gateway shutting down") // between registration and welcome
			}
			next(ss)
		}
	})
	first := ts.startAgent(rtFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("unused") }))
	ts.session()

	late, err := ts.dial(goodToken, nil)
	if err != nil {
		t.Fatalf("the session registered before DrainAll: %v", err)
	}
	ts.session()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lateDone := make(chan error, 1)
	go func() { lateDone <- late.Serve(ctx, &tunnel.Server{}, nil) }()
	for what, cs := range map[string]*grpctunnel.ClientSession{"connected": first.cs, "late": late} {
		select {
		case <-cs.Drained():
		case <-time.After(hangGuard):
			t.Fatalf("the %s session never got the Drain", what)
		}
	}
	select {
	case err := <-first.done:
		t.Fatalf("the drained session ended at the Drain: %v", err)
	default:
	}

	_, err = ts.dial(goodToken, nil)
	if !errors.Is(err, tunnel.ErrShuttingDown) {
		t.Fatalf("a session after DrainAll: %v; want tunnel.ErrShuttingDown", err)
	}
	ts.noSession()
	cancel()
	<-lateDone
}
