package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	return startShutdownGatewayWith(t, cfg, nil)
}

// startShutdownGatewayWith is startShutdownGateway that calls beforeServe
// (when not nil) between Listen and Serve.
func startShutdownGatewayWith(t *testing.T, cfg Config, beforeServe func(*Gateway)) (*Gateway, context.CancelFunc, <-chan error) {
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
	if beforeServe != nil {
		beforeServe(g)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	if code, err := getStatus(g.AdminAddr().String(), "/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz before the shutdown: %d, %v; want 200", code, err)
	}
	return g, cancel, served
}

// stopWatch tells a test when a gateway's stop has reached a step, so that
// it waits on a channel instead of polling /readyz or a listener.
type stopWatch struct {
	// delaying is closed when the stop enters its ShutdownDelay: the
	// gateway writes that line once /readyz answers 503 and keep-alive
	// is off.
	delaying chan struct{}
	// publicClosed is closed when the public listener is closed.
	publicClosed chan struct{}
	served       <-chan error // Serve's result, for wait
}

// startWatchedShutdownGateway is startShutdownGateway with a stopWatch.
// cfg.Log is replaced by a test logger that feeds the watch.
func startWatchedShutdownGateway(t *testing.T, cfg Config) (*Gateway, *stopWatch, context.CancelFunc) {
	t.Helper()
	w := &stopWatch{delaying: make(chan struct{}), publicClosed: make(chan struct{})}
	var delayOnce sync.Once
	cfg.Log = zaptest.NewLogger(t, zaptest.WrapOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == shutdownDelayLine {
			delayOnce.Do(func() { close(w.delaying) })
		}
		return nil
	})))
	g, cancel, served := startShutdownGatewayWith(t, cfg, func(g *Gateway) {
		g.publicLn = &closeNotifyListener{Listener: g.publicLn, closed: w.publicClosed}
	})
	w.served = served
	return g, w, cancel
}

// wait returns once step is closed; it fails the test if Serve returns
// first (the stop skipped the step).
func (w *stopWatch) wait(t *testing.T, step <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-step:
	case err := <-w.served:
		t.Fatalf("Serve returned (%v) before %s", err, what)
	case <-time.After(stepWait):
		t.Fatalf("the stop did not reach %s within %v", what, stepWait)
	}
}

// stepWait bounds stopWatch.wait: a stop reaches each step in milliseconds.
const stepWait = 10 * time.Second

// closeNotifyListener closes closed when it is closed (once).
type closeNotifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeNotifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
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
	g, w, cancel := startWatchedShutdownGateway(t, Config{ShutdownGrace: time.Minute})
	admin := g.AdminAddr().String()
	g.upgrades.Add(1) // a WebSocket in flight: the shutdown waits for it
	cancel()
	// Once the public listener is closed the shutdown is past its start,
	// waiting for the WebSocket.
	w.wait(t, w.publicClosed, "the public listener closed")
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
	if err := <-w.served; err != nil {
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
	g, w, cancel := startWatchedShutdownGateway(t, Config{ShutdownDelay: time.Hour, Clock: fake})
	admin, public := g.AdminAddr().String(), g.publicLn.Addr().String()
	cancel()
	w.wait(t, w.delaying, "the shutdown delay")
	if code, err := getStatus(admin, "/readyz"); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the shutdown delay: %d, %v; want 503", code, err)
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
	case <-w.publicClosed:
		t.Fatal("the public listener closed during the shutdown delay")
	case err := <-w.served:
		t.Fatalf("Serve returned during the shutdown delay: %v", err)
	default:
	}
	fake.Advance(time.Hour)
	if err := <-w.served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if c, err := net.Dial("tcp", public); err == nil {
		c.Close()
		t.Errorf("the public listener still accepts after Serve returned")
	}
}
