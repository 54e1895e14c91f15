package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/store"
)

// startShutdownGateway starts a gateway with an admin listener on an
// in-memory store; cfg adds to the defaults (its Log, when set, is used). It returns the gateway, the
// cancel that starts its shutdown and the channel of Serve's result.
func startShutdownGateway(t *testing.T, cfg Config) (*Gateway, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	db, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.PublicAddr, cfg.TunnelAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TunnelTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg.Store, cfg.AgentMoveWait = db, -1
	if cfg.Log == nil {
		cfg.Log = zaptest.NewLogger(t)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	if code, err := getStatus(g.AdminAddr().String(), "/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz before the shutdown: %d, %v; want 200", code, err)
	}
	return g, cancel, served
}

// getStatus GETs path on addr on a new connection and returns the status.
func getStatus(addr, path string) (int, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

// TestShutdownAdminAnswersNotReady: while a gateway shuts down (here held
// by a WebSocket still open, after its public listener has closed), the
// admin listener still answers: /readyz 503, /healthz 200 (the process is
// alive, only not ready), /metrics 200; it closes once Serve returns. The
// gateway used to close the admin listener first, so every probe during
// the stop got "connection refused" instead of the README's 503.
func TestShutdownAdminAnswersNotReady(t *testing.T) {
	g, cancel, served := startShutdownGateway(t, Config{ShutdownGrace: time.Minute})
	admin, public := g.AdminAddr().String(), g.publicLn.Addr().String()
	g.upgrades.Add(1) // a WebSocket in flight: the shutdown waits for it
	cancel()
	// Wait until the public listener is closed: the shutdown is then
	// past its start, waiting for the WebSocket.
	for {
		c, err := net.Dial("tcp", public)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	for _, probe := range []struct {
		path string
		want int
	}{{"/readyz", http.StatusServiceUnavailable}, {"/healthz", http.StatusOK}, {"/metrics", http.StatusOK}} {
		code, err := getStatus(admin, probe.path)
		if err != nil || code != probe.want {
			t.Errorf("%s during the shutdown: %d, %v; want %d", probe.path, code, err, probe.want)
		}
	}
	g.upgrades.Done()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if c, err := net.Dial("tcp", admin); err == nil {
		c.Close()
		t.Errorf("the admin listener still accepts after Serve returned")
	}
}

// TestShutdownDelayKeepsPublicListener: with a ShutdownDelay, a gateway
// that shuts down answers /readyz 503 at once, yet its public listener
// still accepts and answers for the delay (a load balancer's health check
// notices before connections are refused), with keep-alive off; once the
// delay is over it stops as without one.
func TestShutdownDelayKeepsPublicListener(t *testing.T) {
	fake := clock.NewFake(time.Now())
	g, cancel, served := startShutdownGateway(t, Config{ShutdownDelay: time.Hour, Clock: fake})
	admin, public := g.AdminAddr().String(), g.publicLn.Addr().String()
	cancel()
	for {
		code, err := getStatus(admin, "/readyz")
		if err != nil {
			t.Fatalf("/readyz during the shutdown delay: %v", err)
		}
		if code == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The public listener still serves: a request to no app gets the
	// gateway's answer, not a refused connection.
	res, err := http.Get("http://" + public + "/")
	if err != nil {
		t.Fatalf("public listener during the shutdown delay: %v", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if !res.Close {
		t.Errorf("a response during the shutdown delay keeps the connection alive; want Connection: close")
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned during the shutdown delay: %v", err)
	default:
	}
	fake.Advance(time.Hour)
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if c, err := net.Dial("tcp", public); err == nil {
		c.Close()
		t.Errorf("the public listener still accepts after Serve returned")
	}
}
