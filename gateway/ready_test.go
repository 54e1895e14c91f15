package gateway

import (
	"context"
	"crypto/tls"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/store"
)

// stalledBeat is an in-memory store whose first heartbeat (at start-up)
// waits until release is closed.
type stalledBeat struct {
	*store.DB
	once             sync.Once
	entered, release chan struct{}
}

func (s *stalledBeat) Heartbeat(ctx context.Context, id string, now, prune time.Time) error {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.DB.Heartbeat(ctx, id, now, prune)
}

// TestReadyzNotBeforeServing: a readiness probe that reaches the admin
// listener while the gateway is still starting (here: in its first store
// heartbeat) is answered once the gateway serves, with 200, never with a
// 503 from the middle of the start-up. The admin server used to start
// serving before the start-up's store calls, and TestAdminAPI's first
// /readyz failed now and then.
func TestReadyzNotBeforeServing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := &stalledBeat{DB: db, entered: make(chan struct{}), release: make(chan struct{})}
	g, err := New(Config{
		PublicAddr: "127.0.0.1:0", TunnelAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		TunnelTLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Store: st, Log: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	<-st.entered // the start-up is in its first heartbeat

	codes := make(chan int, 1)
	go func() {
		res, err := http.Get("http://" + g.AdminAddr().String() + "/readyz")
		if err != nil {
			codes <- -1
			return
		}
		res.Body.Close()
		codes <- res.StatusCode
	}()
	early := false
	select {
	case code := <-codes:
		t.Errorf("/readyz answered %d while the gateway was still starting", code)
		early = true
	case <-time.After(300 * time.Millisecond): // waiting in the listener's backlog, as it should
	}
	close(st.release)
	if !early {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("/readyz once serving: %d, want 200", code)
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
