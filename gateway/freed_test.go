package gateway

import (
	"context"
	"crypto/tls"
	"net/http"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// TestStoppedGatewayIsFreed: once Serve has returned, nothing keeps the
// gateway. The look that warns when no agent connects was a two-minute
// timer that held the stopped gateway, its sessions, metrics and
// pre-authentication until it fired: test packages that start many
// gateways held those of the last two minutes (0.5 MiB each with
// pre-authentication), which pushed the heap bounds of the big transfers
// of internal/e2e over their limit when run twice.
func TestStoppedGatewayIsFreed(t *testing.T) {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	freed := make(chan struct{})
	func() {
		g, err := New(Config{PublicAddr: "127.0.0.1:0", TunnelAddr: "127.0.0.1:0",
			TunnelTLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Log: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		// A cleanup, not a finalizer: the gateway refers to itself (method
		// values), and a finalizer never runs on such a cycle.
		runtime.AddCleanup(g, func(c chan struct{}) { close(c) }, freed)
		if err := g.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Serve(ctx) }()
		// An answer from the public listener (bound since Listen, served
		// once Serve has scheduled its looks) shows Serve got that far.
		res, err := http.Get("http://" + g.PublicAddr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		http.DefaultClient.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
	}()
	deadline := time.After(10 * time.Second)
	for {
		runtime.GC()
		select {
		case <-freed:
			return
		case <-deadline:
			t.Fatal("the stopped gateway is still held after 10 s of collections: something (a timer, a goroutine, " +
				"a package variable) keeps a reference to it")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
