package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/store"
)

// pingStore is a store whose Ping fails while down is set.
type pingStore struct {
	Store
	down atomic.Bool
}

func (s *pingStore) Ping(ctx context.Context) error {
	if s.down.Load() {
		return errors.New("dial tcp 10.9.8.7:5432: connect: connection refused")
	}
	return s.Store.Ping(ctx)
}

// TestReadyzLogsStoreOutageOnce: /readyz logs that the store does not
// answer when that starts, and that it answers again when it does, not at
// every probe (a load balancer probes every few seconds: a line each).
func TestReadyzLogsStoreOutageOnce(t *testing.T) {
	mem, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	core, logs := observer.New(zap.InfoLevel)
	ps := &pingStore{Store: mem}
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: ps, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	g.serving.Store(true)
	probe := func() int {
		w := httptest.NewRecorder()
		g.readyz(w, httptest.NewRequest("GET", "/readyz", nil))
		return w.Code
	}
	ps.down.Store(true)
	for range 3 {
		if c := probe(); c != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with the store down: %d", c)
		}
	}
	ps.down.Store(false)
	for range 2 {
		if c := probe(); c != http.StatusOK {
			t.Fatalf("/readyz with the store back: %d", c)
		}
	}
	if n := logs.FilterMessageSnippet("readiness: the store does not answer").Len(); n != 1 {
		t.Fatalf("%d lines for 3 probes of one outage, want 1", n)
	}
	if n := logs.FilterMessage("readiness: the store answers again").Len(); n != 1 {
		t.Fatalf("%d 'answers again' lines, want 1", n)
	}
}
