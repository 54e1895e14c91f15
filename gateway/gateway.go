// Package gateway is the public side of Sallyport: it accepts users' HTTP
// requests, routes them to apps, and relays each exchange over a tunnel
// session of an agent in the app's connector group. It also runs the tunnel
// listener that agents dial out to.
package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sallyport/sallyport/gateway/preauth"
	keysv1 "github.com/sallyport/sallyport/proto/sallyport/keys/v1"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// Token is an agent credential and the connector group it grants.
type Token struct {
	Token string
	Group string
}

// Config is everything a gateway needs. Fields say what their zero means.
type Config struct {
	// PublicAddr is the user-facing listener (":8080" when empty).
	PublicAddr string
	// PublicTLS, when set, serves HTTP/1.1 and h2 over TLS; nil serves
	// plain HTTP/1.1 and h2c.
	PublicTLS *tls.Config
	// TunnelAddr is where agents connect (":8443" when empty).
	TunnelAddr string
	// TunnelTLS is the tunnel listener's TLS config. Required.
	TunnelTLS *tls.Config
	// Tokens are the agent credentials.
	Tokens []Token
	// Routes are the published apps.
	Routes []Route
	// ShutdownGrace bounds how long in-flight exchanges may run after
	// shutdown starts (0 → 30s).
	ShutdownGrace time.Duration
	// ReadHeaderTimeout bounds reading a request head (0 → 10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections (0 → 120s).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request head (0 → 64 KiB); larger gets 431.
	MaxHeaderBytes int
	// MaxStreamsPerSession caps an agent session's streams (0 → 10000).
	MaxStreamsPerSession int
	// StreamWait bounds how long an exchange waits for a free stream when
	// every stream of the chosen session is busy (0 → 10s); then 503
	// overloaded.
	StreamWait time.Duration
	// Preauth signs users in for routes with a Preauth policy. Nil: no
	// route may have one.
	Preauth *preauth.Service
	// Log receives the gateway's logs. Nil → no logs.
	Log *zap.Logger
}

func (c *Config) shutdownGrace() time.Duration { return orDefault(c.ShutdownGrace, 30*time.Second) }
func (c *Config) readHeaderTimeout() time.Duration {
	return orDefault(c.ReadHeaderTimeout, 10*time.Second)
}
func (c *Config) idleTimeout() time.Duration { return orDefault(c.IdleTimeout, 120*time.Second) }
func (c *Config) streamWait() time.Duration  { return orDefault(c.StreamWait, 10*time.Second) }
func (c *Config) maxHeaderBytes() int {
	if c.MaxHeaderBytes <= 0 {
		return 64 << 10
	}
	return c.MaxHeaderBytes
}

// stdLogAtWarn adapts log for net/http's ErrorLog: its lines (TLS handshake
// errors, malformed requests, panics in handlers) are warnings.
func stdLogAtWarn(log *zap.Logger) *stdlog.Logger {
	l, err := zap.NewStdLogAt(log, zap.WarnLevel)
	if err != nil { // only for an invalid level
		return zap.NewStdLog(log)
	}
	return l
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Gateway is a running gateway.
type Gateway struct {
	cfg      Config
	log      *zap.Logger
	router   *Router
	registry *Registry
	tunnel   *grpctunnel.Server
	grpc     *grpc.Server
	public   *http.Server
	handler  *proxyHandler
	tokens   []tokenHash

	mu       sync.Mutex
	publicLn net.Listener // set by Listen
	tunnelLn net.Listener // set by Listen
}

// tokenHash is a token's SHA-256: comparing fixed-size digests in constant
// time leaks neither the token nor its length.
type tokenHash struct {
	sum   [32]byte
	group string
}

// New checks cfg and builds a gateway; Listen and Serve start it.
func New(cfg Config) (*Gateway, error) {
	if cfg.TunnelTLS == nil {
		return nil, errors.New("gateway: the tunnel listener needs a TLS config")
	}
	if err := checkPreauth(&cfg); err != nil {
		return nil, err
	}
	router, err := NewRouter(cfg.Routes)
	if err != nil {
		return nil, fmt.Errorf("gateway: apps: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	g := &Gateway{cfg: cfg, log: log, router: router, registry: NewRegistry()}
	for _, t := range cfg.Tokens {
		if t.Token == "" || t.Group == "" {
			return nil, errors.New("gateway: a tunnel token needs a token and a group")
		}
		g.tokens = append(g.tokens, tokenHash{sum: sha256.Sum256([]byte(t.Token)), group: t.Group})
	}
	g.tunnel = &grpctunnel.Server{
		Authenticate: g.authenticate,
		OnSession:    g.registry.Add,
		Log:          log.Named("tunnel"),
		MaxStreams:   cfg.MaxStreamsPerSession,
	}
	tlsCfg := cfg.TunnelTLS.Clone()
	if tlsCfg.MinVersion < tls.VersionTLS12 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	opts := append(grpctunnel.ServerOptions(cfg.MaxStreamsPerSession), grpc.Creds(credentials.NewTLS(tlsCfg)))
	g.grpc = grpc.NewServer(opts...)
	g.tunnel.Register(g.grpc)
	keysv1.RegisterKeysServiceServer(g.grpc, &keysServer{g: g})

	g.handler = newProxyHandler(g)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if cfg.PublicTLS != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	g.public = &http.Server{
		Handler:           g.handler,
		TLSConfig:         cfg.PublicTLS,
		ReadHeaderTimeout: cfg.readHeaderTimeout(),
		IdleTimeout:       cfg.idleTimeout(),
		MaxHeaderBytes:    cfg.maxHeaderBytes(),
		Protocols:         &protocols,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:      250,
			MaxReceiveBufferPerStream: 1 << 20,
		},
		ErrorLog: stdLogAtWarn(log.Named("http")),
	}
	return g, nil
}

// authenticate maps a token to its group, in time independent of which
// token (if any) matches.
func (g *Gateway) authenticate(token string) (string, bool) {
	sum := sha256.Sum256([]byte(token))
	group, found := "", 0
	for _, t := range g.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			group, found = t.group, 1
		}
	}
	return group, found == 1
}

// Listen binds the public and tunnel listeners.
func (g *Gateway) Listen() error {
	pub, err := net.Listen("tcp", orAddr(g.cfg.PublicAddr, ":8080"))
	if err != nil {
		return fmt.Errorf("gateway: public listener: %w", err)
	}
	tun, err := net.Listen("tcp", orAddr(g.cfg.TunnelAddr, ":8443"))
	if err != nil {
		pub.Close()
		return fmt.Errorf("gateway: tunnel listener: %w", err)
	}
	g.mu.Lock()
	g.publicLn, g.tunnelLn = pub, tun
	g.mu.Unlock()
	return nil
}

func orAddr(a, def string) string {
	if a == "" {
		return def
	}
	return a
}

// PublicAddr is the bound public listener address (after Listen).
func (g *Gateway) PublicAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.publicLn.Addr()
}

// TunnelAddr is the bound tunnel listener address (after Listen).
func (g *Gateway) TunnelAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tunnelLn.Addr()
}

// Registry exposes the live sessions.
func (g *Gateway) Registry() *Registry { return g.registry }

// TunnelStats returns the tunnel listener's counters.
func (g *Gateway) TunnelStats() grpctunnel.Stats { return g.tunnel.Stats() }

// Handler is the public HTTP handler.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Serve serves both listeners until ctx is cancelled, then shuts down
// gracefully: it stops accepting, lets exchanges in flight finish for up to
// ShutdownGrace, tells agents it is going away, and closes what is left.
func (g *Gateway) Serve(ctx context.Context) error {
	g.mu.Lock()
	pub, tun := g.publicLn, g.tunnelLn
	g.mu.Unlock()
	if pub == nil || tun == nil {
		return errors.New("gateway: Serve before Listen")
	}
	errc := make(chan error, 2)
	go func() {
		var err error
		if g.cfg.PublicTLS != nil {
			err = g.public.ServeTLS(pub, "", "")
		} else {
			err = g.public.Serve(pub)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	go func() { errc <- g.grpc.Serve(tun) }()
	g.log.Info("gateway listening", zap.Stringer("public", pub.Addr()), zap.Stringer("tunnel", tun.Addr()),
		zap.Bool("public_tls", g.cfg.PublicTLS != nil), zap.Int("apps", len(g.cfg.Routes)))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	g.shutdown()
	// Both serve goroutines have returned once shutdown is done.
	for range 2 - boolInt(serveErr != nil) {
		if err := <-errc; err != nil && serveErr == nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr = err
		}
	}
	return serveErr
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (g *Gateway) shutdown() {
	grace := g.cfg.shutdownGrace()
	g.log.Info("gateway shutting down", zap.Duration("grace", grace))
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := g.public.Shutdown(ctx); err != nil {
		g.log.Warn("exchanges still running after the shutdown grace; closing them", zap.Error(err))
	}
	// Upgraded connections (WebSockets) are not tracked by Shutdown.
	g.public.Close()
	g.tunnel.DrainAll("gateway shutting down")
	stopped := make(chan struct{})
	go func() {
		g.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Second):
		// Agents hold their sessions open; end them.
		g.grpc.Stop()
		<-stopped
	}
	g.log.Info("gateway stopped")
}
