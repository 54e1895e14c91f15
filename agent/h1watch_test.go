package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/watchctx"
)

// TestH1SyncWatchesContextLazily: exchanges that end at once never register
// with their context and keep their connection; one that waits for its
// head watches it after h1WatchDelay, and its cancellation interrupts it.
func TestH1SyncWatchesContextLazily(t *testing.T) {
	skipWithoutIdleCheck(t)
	addr, accepted := rawBackend(t, func(c net.Conn) {
		reqs := newRawRequests(c)
		for {
			if _, err := reqs.next(); err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	})
	s := newTestH1Sync(t)
	ctx := watchctx.New()
	for i := range 6 {
		var rctx context.Context = ctx
		if i == 0 {
			rctx = t.Context() // the dial watches its context
		}
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr+"/", nil)
		res, err := s.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(res.Body); err != nil || string(b) != "ok" {
			t.Fatalf("body %q, %v", b, err)
		}
		res.Body.Close()
	}
	select {
	case <-ctx.Watched:
		t.Fatal("an exchange that ended at once watched its context")
	default:
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("6 exchanges took %d connections, want 1", n)
	}

	b, started := blockingBackend(t)
	slow := watchctx.New()
	req, _ := http.NewRequestWithContext(slow, http.MethodGet, b.URL+"/head", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := s.RoundTrip(req)
		errc <- err
	}()
	<-started
	select {
	case <-slow.Watched:
	case <-time.After(10 * time.Second):
		t.Fatal("an exchange waiting for its head never watched its context")
	}
	slow.Cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// TestH1WatchAllocs: a watch that ends within h1WatchDelay allocates
// nothing, not even the context's Done channel.
func TestH1WatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./agent/)")
	}
	c := &h1Conn{}
	c.watch.c = c
	base := testing.AllocsPerRun(100, func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = ctx
	})
	got := testing.AllocsPerRun(100, func() {
		ctx, cancel := context.WithCancel(context.Background())
		c.watch.start(ctx)
		if !c.watch.stop() {
			t.Fatal("stop reported an interrupt")
		}
		cancel()
	})
	if got > base {
		t.Fatalf("start and stop: %v allocations, want 0", got-base)
	}
}
