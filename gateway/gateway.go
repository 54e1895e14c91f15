// Package gateway is the public side of Sallyport: it accepts users' HTTP
// requests, routes them to apps, and relays each exchange over a tunnel
// session of an agent in the app's connector group. It also runs the tunnel
// listener that agents dial out to.
package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/rawsock"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// Token is a pre-provisioned enrollment token from the gateway config and
// the connector group it grants. It may be used any number of times and
// does not expire; tokens made with the admin API may be single-use and
// expire.
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
	// TunnelAddr is where agents connect (":8443" when empty): TCP for gRPC
	// and yamux (told apart by ALPN), UDP on the same port number for QUIC.
	TunnelAddr string
	// TunnelTLS is the tunnel listener's TLS config. Required.
	TunnelTLS *tls.Config
	// Tokens are pre-provisioned enrollment tokens (see Token).
	Tokens []Token
	// Store keeps the connector CA, enrolled connectors and enrollment
	// tokens. Nil → an in-memory store: every agent enrolls again after a
	// restart. The gateway does not close a Store it was given.
	Store Store
	// CertLifetime is how long agent certificates are valid (0 → 30 days).
	CertLifetime time.Duration
	// EnrollFailures failed enrollments from one address within
	// EnrollWindow block further attempts from it until the window ends
	// (0 → 5 and 1 minute).
	EnrollFailures int
	EnrollWindow   time.Duration
	// Now is the clock for certificates, tokens, revocation times and the
	// enrollment rate limit (nil → Clock's time, or time.Now).
	Now func() time.Time
	// StoreSweep is how often the gateway checks its sessions against the
	// store for revocations and retired certificates that another replica
	// recorded (0 → 1 minute).
	StoreSweep time.Duration
	// Clock times the end of sessions at their certificate's expiry and
	// the ShutdownDelay, and tells the time when Now is nil. Nil → real
	// timers. Tests set a clock.Fake to end sessions without waiting for
	// real lifetimes.
	Clock clock.Clock
	// AdminAddr is the admin API listener (health, metrics, tokens,
	// connectors). Empty → no admin listener.
	AdminAddr string
	// AdminToken is the admin API's bearer token. Empty → every API call is
	// refused with 401; /healthz, /readyz and /metrics (which never ask for
	// it) still answer.
	AdminToken string
	// Routes are the published apps.
	Routes []Route
	// ShutdownGrace bounds how long in-flight exchanges may run after
	// shutdown starts (0 → 30s).
	ShutdownGrace time.Duration
	// AgentMoveWait bounds how long shutdown waits, once it has told the
	// agents, for them to move their sessions to another replica before it
	// closes what is left (0 → 5s; never past ShutdownGrace). Each agent
	// opens a replacement session before it lets the old one go; a lone
	// gateway, which refuses new sessions while it shuts down, would wait
	// all of it with its public listener closed. Negative: no wait, for a
	// gateway with no replica to move to (`sallyport gateway` sets it
	// unless the store is PostgreSQL). With a ReplicaStore the wait is
	// skipped too when, at shutdown, the store counts no other replica.
	AgentMoveWait time.Duration
	// ShutdownDelay keeps the gateway serving, public listener included,
	// for this long after a shutdown starts, with /readyz answering 503
	// from the start: a load balancer's health check notices before the
	// public listener stops accepting (0 → none: it stops at once). During
	// it the public listener turns keep-alive off, so each client's next
	// request goes through the balancer's choice again; the agents are told
	// only after it. ShutdownGrace starts after it. The wait is timed by
	// Clock.
	ShutdownDelay time.Duration
	// ReadHeaderTimeout bounds reading a request head (0 → 10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections (0 → 120s).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request head (0 → 64 KiB); larger gets 431.
	MaxHeaderBytes int
	// MaxConnections bounds the public listener's connections at once
	// (0 → three quarters of the open-file limit, none when it is unknown;
	// negative → none); clients beyond it wait until one closes.
	MaxConnections int
	// SendTimeout cuts a relayed exchange when one write of its response
	// to the client does not return within it (0 → 5 minutes): a client that
	// stopped reading. Waits for the backend do not count.
	SendTimeout time.Duration
	// MaxStalledExchanges bounds the relayed exchanges whose write to the
	// client has blocked for a second or more (a client that stopped
	// reading), gateway wide; beyond it, the one blocked longest is cut
	// as SendTimeout cuts it (0 → DefaultMaxStalledExchanges; negative →
	// no limit: only SendTimeout cuts them).
	MaxStalledExchanges int
	// TrustedProxies are the load balancers in front of the public
	// listener: from a peer in one of these prefixes, the client's address
	// comes from X-Forwarded-For and HTTPS from X-Forwarded-Proto (see
	// proxyTrust). Empty → both headers are ignored and X-Request-Id is replaced.
	TrustedProxies []netip.Prefix
	// MaxStreamsPerSession caps an agent session's streams (0 → 10000).
	MaxStreamsPerSession int
	// StreamWait bounds how long an exchange waits for a free stream when
	// every stream of the chosen session is busy (0 → 10s); then 503
	// overloaded.
	StreamWait time.Duration
	// Preauth signs users in for routes with a Preauth policy. Nil: no
	// route may have one.
	Preauth *preauth.Service
	// QUICHandshakeTimeout drops a QUIC handshake with no packet for this
	// long (0 → 5s).
	QUICHandshakeTimeout time.Duration
	// Keepalive is how often the gateway pings an agent session to find a
	// dead network path (0 → 15s; below 5s counts as 5s). A silent dead
	// path is noticed after Keepalive + min(Keepalive, 10s) on gRPC and
	// yamux, and after twice Keepalive (the QUIC idle timeout) or a little
	// more on QUIC, where both ends ping after min(5 s, Keepalive) without
	// a packet. Agents may ping as often as every 5 s whatever it is.
	Keepalive time.Duration
	// QUICIdleTimeout ends a QUIC session that received nothing for this
	// long (0 → twice Keepalive; both ends ping after min(5 s, Keepalive)
	// without a packet, taking turns).
	QUICIdleTimeout time.Duration
	// ProtocolVersion is the highest tunnel protocol version the gateway
	// speaks with agents (0 → tunnel.ProtocolVersion). Only tests lower
	// it, to play an older gateway.
	ProtocolVersion uint32
	// Log receives the gateway's logs. Nil → no logs.
	Log *zap.Logger
}

func (c *Config) storeSweep() time.Duration    { return orDefault(c.StoreSweep, storeSweep) }
func (c *Config) shutdownGrace() time.Duration { return orDefault(c.ShutdownGrace, 30*time.Second) }
func (c *Config) agentMoveWait() time.Duration {
	if c.AgentMoveWait < 0 {
		return 0
	}
	return min(orDefault(c.AgentMoveWait, 5*time.Second), c.shutdownGrace())
}
func (c *Config) readHeaderTimeout() time.Duration {
	return orDefault(c.ReadHeaderTimeout, 10*time.Second)
}
func (c *Config) idleTimeout() time.Duration { return orDefault(c.IdleTimeout, 120*time.Second) }
func (c *Config) streamWait() time.Duration  { return orDefault(c.StreamWait, 10*time.Second) }
func (c *Config) sendTimeout() time.Duration { return orDefault(c.SendTimeout, 5*time.Minute) }

// maxConnections is MaxConnections with its default; 0: no limit.
func (c *Config) maxConnections() int {
	switch {
	case c.MaxConnections > 0:
		return c.MaxConnections
	case c.MaxConnections < 0:
		return 0
	}
	return openFileLimit() * 3 / 4
}
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
	adminFresh freshConns // admin connections without a request yet (closeAdmin)
	cfg        Config
	log        *zap.Logger
	upgrades   sync.WaitGroup         // upgraded exchanges (WebSockets) in flight
	router     atomic.Pointer[Router] // swapped by SetRoutes
	registry   *Registry
	tunnel     *grpctunnel.Server
	grpc       *grpc.Server // connections with a client certificate
	// enroller serves the tunnel port's gRPC connections without a
	// client certificate, with tighter limits (enrollServerOptions).
	enroller *grpc.Server
	mux      *muxtunnel.Server // QUIC and yamux sessions
	quic     *quictunnel.Listener
	// tunnelTLS is TunnelTLS with ALPN for gRPC and yamux on the TCP port.
	tunnelTLS *tls.Config
	public    *http.Server
	handler   *proxyHandler
	// tokens are the config's enrollment tokens as SHA-256 digests:
	// comparing fixed-size digests in constant time leaks neither a token
	// nor its length.
	tokens    []configToken
	store     Store
	ownStore  *store.DB // the in-memory store New opened; closed by Serve
	authority *pki.Authority
	limiter   *failLimiter
	admin     *http.Server // nil without AdminAddr
	metrics   *gatewayMetrics
	serving   atomic.Bool // between Serve's start and its shutdown
	// readyStoreDown: the last /readyz found the store not answering
	// (its line is logged when this changes, not at every probe).
	readyStoreDown atomic.Bool
	// storeStallSaid: the last checkStoreStall found the store stalled
	// and logged it (once per stall).
	storeStallSaid atomic.Bool
	// stallCheck serialises checkStoreStall (storestall.go): the heartbeat's
	// and the store's watch timer's checks.
	stallCheck sync.Mutex
	// stallMemoryBound is the bound of the sweep's heartbeat in
	// stallMemory, and stallRecheck how soon a check whose ping failed
	// during a stall runs again (checkStoreStall); 0 → trustTimeout and
	// store.SlowCall. Fields, not package variables: a test sets them on
	// its own gateway before its first heartbeat, while the store watch of
	// an earlier test's gateway may still read them.
	stallMemoryBound, stallRecheck time.Duration
	stopped                        chan struct{} // closed when shutdown starts
	// stopCtx is cancelled when stopped is closed: store calls made for
	// the gateway's own work end with it (stopContext).
	stopCtx    context.Context
	stopCancel context.CancelFunc
	groups     groupWatch    // redundancy of connector groups (redundancy.go)
	hold       startHold     // exchanges that wait for the agents after the start (startgrace.go)
	replica    string        // this replica's id, random per process (replicas.go)
	replicas   atomic.Uint32 // replicas alive on the store; written by heartbeat
	// rebalanced: per agent over its share of sessions here, its drains'
	// backoff (rebalance.go); only the store sweep's goroutine uses it.
	rebalanced map[string]rebalanceTry

	mu       sync.Mutex
	publicLn net.Listener   // set by Listen
	tunnelLn net.Listener   // set by Listen
	udpLn    net.PacketConn // set by Listen: QUIC
	adminLn  net.Listener   // set by Listen when AdminAddr is set
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
	log = limitRefusals(log, time.Now)
	g := &Gateway{cfg: cfg, log: log, registry: NewRegistry(), store: cfg.Store, stopped: make(chan struct{}),
		replica: newReplicaID()}
	g.stopCtx, g.stopCancel = context.WithCancel(context.Background())
	g.router.Store(router)
	g.registry.MaxPerConnector = maxSessionsPerConnector
	for _, t := range cfg.Tokens {
		if t.Token == "" || t.Group == "" {
			return nil, errors.New("gateway: a tunnel token needs a token and a group")
		}
		g.tokens = append(g.tokens, configToken{sum: sha256.Sum256([]byte(t.Token)), group: t.Group})
	}
	if err := g.initTrust(); err != nil {
		return nil, err
	}
	if so, ok := g.store.(preauth.SignOutStore); ok && cfg.Preauth != nil {
		// Sign-outs reach every gateway on the store, and outlive restarts.
		cfg.Preauth.UseSignOutStore(so)
	}
	g.metrics = newGatewayMetrics(g)
	// Every transport checks agents with the same g.authenticate.
	g.tunnel = &grpctunnel.Server{
		Authenticate: g.authenticateCounted,
		OnSession:    g.onSession,
		Log:          log.Named("tunnel"),
		MaxStreams:   cfg.MaxStreamsPerSession,

		ProtocolVersion: cfg.ProtocolVersion,
		Replica:         g.replica,
		Replicas:        g.replicaCount,
		// The QUIC and yamux sessions' liveness watch: a silent agent's
		// gRPC sessions are set aside within about a second too.
		NewWatch: func(s grpctunnel.WatchedSession, c grpctunnel.ProbingPeer, log *zap.Logger) grpctunnel.Watch {
			return muxtunnel.NewWatch(s, c, log)
		},
	}
	g.mux = &muxtunnel.Server{
		Authenticate: g.authenticateCounted,
		OnSession:    g.onSession,
		Log:          log.Named("tunnel"),
		MaxStreams:   cfg.MaxStreamsPerSession,

		ProtocolVersion: cfg.ProtocolVersion,
		Replica:         g.replica,
		Replicas:        g.replicaCount,
	}
	g.quic = &quictunnel.Listener{
		Server: g.mux, TLS: g.TunnelTLS(), HandshakeTimeout: cfg.QUICHandshakeTimeout, IdleTimeout: cfg.QUICIdleTimeout,
		Keepalive: cfg.Keepalive, Log: log.Named("quic"),
	}
	g.tunnelTLS = g.TunnelTLS()
	g.tunnelTLS.NextProtos = []string{alpnH2, yamuxtunnel.ALPN}
	// TLS is done by the ALPN listener, which hands h2 connections on with
	// their connection state (the client certificate).
	opts := append(grpctunnel.ServerOptions(cfg.MaxStreamsPerSession, cfg.Keepalive), grpc.Creds(g.tunnel.Credentials(handshakenTLS{})))
	g.grpc = grpc.NewServer(opts...)
	g.registerTunnelServices(g.grpc)
	g.enroller = grpc.NewServer(enrollServerOptions()...)
	g.registerTunnelServices(g.enroller)
	if cfg.AdminAddr != "" {
		g.admin = &http.Server{
			Handler:           g.AdminHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          stdLogAtWarn(log.Named("admin")),
			ConnState:         g.adminFresh.track,
		}
	}

	g.handler = newProxyHandler(g)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if cfg.PublicTLS != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	g.public = &http.Server{
		Handler:           trustProxies(g.handler, cfg.TrustedProxies),
		TLSConfig:         cfg.PublicTLS,
		ReadHeaderTimeout: cfg.readHeaderTimeout(),
		IdleTimeout:       cfg.idleTimeout(),
		MaxHeaderBytes:    cfg.maxHeaderBytes(),
		Protocols:         &protocols,
		HTTP2: &http.HTTP2Config{
			// 128, nginx's default (net/http's is 250): each stream whose
			// client stops reading holds about 1 MiB here and half of that
			// on the agent until the stall budget or the send timeout cuts
			// it, so one connection pins half as much (a probe, one
			// connection of streams that never read, gRPC: 138 MiB on the
			// gateway and 62 MiB on the agent instead of 267 and 119).
			// Clients queue the requests beyond it.
			MaxConcurrentStreams:      128,
			MaxReceiveBufferPerStream: 1 << 20,
		},
		ErrorLog: stdLogAtWarn(log.Named("http")),
	}
	return g, nil
}

// publicListener is what the public server accepts from: pub's
// connections read and write without the scheduler's system-call state
// (package rawsock: a gateway waits on the network between every step of
// an exchange, and on one P each system call could cost it a thread
// hand-off), at most maxConns of them at once when maxConns > 0.
func publicListener(pub net.Listener, maxConns int, log *zap.Logger) net.Listener {
	var ln net.Listener = rawsock.Listener{Listener: pub}
	if maxConns > 0 {
		ln = newLimitListener(ln, maxConns, log)
	}
	return ln
}

// tunnelTCPListener is what the tunnel's TLS (gRPC, yamux) accepts from:
// connections read and written as the public ones are (publicListener).
func tunnelTCPListener(tun net.Listener) net.Listener { return rawsock.Listener{Listener: tun} }

// initTrust opens the in-memory store when none was given and creates the
// connector CA on first start.
func (g *Gateway) initTrust() error {
	ctx, cancel := context.WithTimeout(context.Background(), trustTimeout)
	defer cancel()
	if g.store == nil {
		s, err := store.OpenMemory(ctx)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		g.store, g.ownStore = s, s
	}
	g.authority = &pki.Authority{Store: g.store, Now: g.now, Lifetime: g.cfg.CertLifetime}
	g.limiter = &failLimiter{max: g.cfg.EnrollFailures, window: g.cfg.EnrollWindow, now: g.now}
	created, err := g.authority.Init(ctx)
	if err != nil {
		g.closeOwnStore()
		return fmt.Errorf("gateway: connector CA: %w", err)
	}
	if created {
		g.log.Info("created the connector CA that signs agent certificates")
	}
	return nil
}

func (g *Gateway) closeOwnStore() {
	if g.ownStore != nil {
		g.ownStore.Close()
		g.ownStore = nil
	}
}

// TunnelTLS is the tunnel listener's TLS config: TLS 1.3, and a client
// certificate, when sent, must come from the connector CA (checked at the
// handshake, so a certificate of another CA or an expired one never gets a
// session). Other transports on the tunnel port use the same config.
func (g *Gateway) TunnelTLS() *tls.Config {
	c := g.cfg.TunnelTLS.Clone()
	c.MinVersion = tls.VersionTLS13
	c.ClientAuth = tls.RequestClientCert
	c.VerifyConnection = g.verifyTunnelConn
	return c
}

// Listen binds the public and tunnel listeners.
func (g *Gateway) Listen() error {
	pubAddr := orAddr(g.cfg.PublicAddr, ":8080")
	pub, err := net.Listen("tcp", pubAddr)
	if err != nil {
		return &ListenError{Listener: "public", Addr: pubAddr, Err: err}
	}
	tunAddr := orAddr(g.cfg.TunnelAddr, ":8443")
	tun, udp, err := listenTunnel(tunAddr)
	if err != nil {
		pub.Close()
		return &ListenError{Listener: "tunnel", Addr: tunAddr, Err: err}
	}
	var adm net.Listener
	if g.cfg.AdminAddr != "" {
		if adm, err = net.Listen("tcp", g.cfg.AdminAddr); err != nil {
			pub.Close()
			tun.Close()
			udp.Close()
			return &ListenError{Listener: "admin", Addr: g.cfg.AdminAddr, Err: err}
		}
	}
	g.mu.Lock()
	g.publicLn, g.tunnelLn, g.udpLn, g.adminLn = pub, tun, udp, adm
	g.mu.Unlock()
	return nil
}

// ListenError is Listen's error: the listener named could not be opened.
type ListenError struct {
	Listener string // "public", "tunnel" or "admin"
	Addr     string // the address it was to listen on
	Err      error  // from net.Listen (or the tunnel's UDP socket)
}

func (e *ListenError) Error() string { return "gateway: " + e.Listener + " listener: " + e.Err.Error() }
func (e *ListenError) Unwrap() error { return e.Err }

// AdminAddr is the bound admin listener address (after Listen), or nil
// without one.
func (g *Gateway) AdminAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.adminLn == nil {
		return nil
	}
	return g.adminLn.Addr()
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

// QUIC is the QUIC listener (for its counters).
func (g *Gateway) QUIC() *quictunnel.Listener { return g.quic }

// MuxStats returns the counters of the QUIC and yamux sessions.
func (g *Gateway) MuxStats() muxtunnel.Stats { return g.mux.Stats() }

// TunnelStats returns the gRPC tunnel listener's counters.
func (g *Gateway) TunnelStats() grpctunnel.Stats { return g.tunnel.Stats() }

// Handler is the public HTTP handler.
func (g *Gateway) Handler() http.Handler { return g.public.Handler }

// Serve serves both listeners until ctx is cancelled, then shuts down
// gracefully: it tells agents it is going away (and refuses their new
// sessions), stops accepting users, lets exchanges in flight finish for up
// to ShutdownGrace, gives the agents up to AgentMoveWait to move their
// sessions, and closes what is left.
func (g *Gateway) Serve(ctx context.Context) error {
	defer g.closeOwnStore()
	g.mu.Lock()
	pub, tun, udp, adm := g.publicLn, g.tunnelLn, g.udpLn, g.adminLn
	g.mu.Unlock()
	if pub == nil || tun == nil {
		return errors.New("gateway: Serve before Listen")
	}
	// QUIC and yamux sessions live on muxCtx; shutdown ends it after the
	// agents had a moment to drain.
	muxCtx, stopMux := context.WithCancel(context.Background())
	defer stopMux()
	var muxWG sync.WaitGroup
	defer muxWG.Wait()
	tcpLn := newALPNListener(tunnelTCPListener(tun), g.tunnelTLS, func(c net.Conn) {
		muxWG.Add(1)
		go func() {
			defer muxWG.Done()
			_ = yamuxtunnel.ServeConn(muxCtx, c, g.mux, g.log.Named("yamux"), g.cfg.Keepalive)
		}()
	}, g.log.Named("tunnel"))
	defer tcpLn.wait()
	defer tcpLn.Close()
	muxWG.Add(1)
	go func() {
		defer muxWG.Done()
		if err := g.quic.Serve(muxCtx, udp); err != nil {
			g.log.Error("QUIC listener failed; agents can still use gRPC and yamux", zap.Error(err))
		}
		udp.Close()
	}()
	warnUDPBuffers(g.log)
	errc := make(chan error, 4)
	servers := 3
	g.syncSignOuts()
	g.heartbeat()
	g.beginStartHold()
	g.watchAgentless() // says so if no agent at all connects
	// Ready before the admin listener answers: its /readyz then never
	// says 503 to a probe that came in during the start-up (the listener
	// is bound since Listen; the probe waits in its backlog until now).
	g.serving.Store(true)
	if adm != nil {
		servers++
		go func() {
			err := g.admin.Serve(adm)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
		if g.cfg.AdminToken == "" {
			g.log.Warn("the admin API has no token, so it refuses every call; set admin.token_file or SALLYPORT_ADMIN_TOKEN",
				zap.Stringer("admin", adm.Addr()))
		}
	}
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		g.sweepLoop()
	}()
	publicLn := publicListener(pub, g.cfg.maxConnections(), g.log)
	go func() {
		var err error
		if g.cfg.PublicTLS != nil {
			err = g.public.ServeTLS(publicLn, "", "")
		} else {
			err = g.public.Serve(publicLn)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	go func() { errc <- g.grpc.Serve(tcpLn) }()
	go func() { errc <- g.enroller.Serve(tcpLn.Certless()) }()
	fields := []zap.Field{zap.Stringer("public", pub.Addr()), zap.Int("max_connections", g.cfg.maxConnections()),
		zap.Stringer("tunnel", tun.Addr()),
		zap.String("replica", g.replica), zap.Int("replicas", g.Replicas()),
		zap.Strings("transports", []string{"grpc (tcp, ALPN h2)", "yamux (tcp, ALPN " + yamuxtunnel.ALPN + ")", "quic (udp)"}),
		zap.Bool("public_tls", g.cfg.PublicTLS != nil), zap.Int("apps", len(g.router.Load().routes))}
	if adm != nil {
		fields = append(fields, zap.Stringer("admin", adm.Addr()))
	}
	g.log.Info("gateway listening", fields...)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	g.shutdown(stopMux)
	<-swept // shutdown closed g.stopped
	g.removeReplica()
	// Every serve goroutine has returned once shutdown is done.
	for range servers - boolInt(serveErr != nil) {
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

// shutdownDelayLine is logged when a stop enters its ShutdownDelay, once
// /readyz answers 503 and keep-alive is off (tests wait for it).
const shutdownDelayLine = "gateway shutting down: /readyz answers 503 from now on; still serving for the shutdown delay, " +
	"so that load balancers stop sending before the public listener closes"

// shutdown stops the gateway. From its first moment /readyz answers 503;
// the admin listener goes on answering (/healthz 200: the process is alive,
// only not ready; /metrics) until the end, so that a load balancer sees
// the replica as not ready rather than unreachable. With a ShutdownDelay
// the gateway first goes on serving for that long, public listener
// included, so that the balancer's health check notices before new
// connections are refused. Then agents hear of it: each opens a
// replacement session (behind a load balancer, on another replica, since
// this one refuses new sessions from now on) before it lets its session
// here go, and that session goes on carrying the users' exchanges in
// flight meanwhile. Then the public listener stops and its exchanges
// finish; the sessions the agents have not moved by the end of
// AgentMoveWait are closed, at once when the store counts no other replica
// alive.
func (g *Gateway) shutdown(stopMux context.CancelFunc) {
	if d := g.cfg.ShutdownDelay; d > 0 {
		// The timer first: once /readyz says 503 it is running (tests
		// move a fake clock past it).
		delayed := clock.Or(g.cfg.Clock).After(d)
		g.serving.Store(false)
		g.public.SetKeepAlivesEnabled(false)
		g.log.Info(shutdownDelayLine, zap.Duration("shutdown_delay", d))
		<-delayed
	}
	g.serving.Store(false)
	g.stop()
	grace := g.cfg.shutdownGrace()
	g.log.Info("gateway shutting down", zap.Duration("grace", grace))
	// The admin listener stays up until the end (closeAdmin below).
	defer g.closeAdmin()
	moved := time.Now().Add(g.cfg.agentMoveWait())
	g.tunnel.DrainAll("gateway shutting down")
	g.mux.DrainAll("gateway shutting down")
	sessions := g.registry.all()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := g.public.Shutdown(ctx); err != nil {
		g.log.Warn("exchanges still running after the shutdown grace; closing them", zap.Error(err))
	}
	// Upgraded connections (WebSockets) are not tracked by Shutdown: they
	// get the rest of the grace too, or closing the agent sessions below
	// would cut them at once on a lone gateway. No upgrade starts any
	// more (the listener is closed and every other handler returned).
	upgraded := make(chan struct{})
	go func() {
		g.upgrades.Wait()
		close(upgraded)
	}()
	select {
	case <-upgraded:
	case <-ctx.Done():
		g.log.Warn("WebSockets still open after the shutdown grace; closing them")
	}
	g.public.Close()
	if time.Now().Before(moved) && len(sessions) > 0 && !g.othersAlive() {
		g.log.Info("no other gateway replica is alive on the store, so the agents have nowhere to move their sessions: closing them without the agent move wait")
		moved = time.Now()
	}
	left := waitEnded(sessions, moved)
	if left > 0 {
		// A lone gateway, or agents that found no other replica: they
		// reconnect with backoff once these are closed.
		g.log.Info("closing the agent sessions not moved elsewhere", zap.Int("sessions", left))
		g.enroller.Stop() // first: stopping g.grpc closes the listener of both
		g.grpc.Stop()
	} else {
		// Let enrollment and renewal calls in flight end, briefly.
		stopped := make(chan struct{})
		go func() {
			g.enroller.GracefulStop()
			g.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(time.Second):
			g.enroller.Stop()
			g.grpc.Stop()
			<-stopped
		}
	}
	// End what is left of QUIC and yamux sessions.
	stopMux()
	g.mux.CloseAll()
	g.log.Info("gateway stopped")
}

// stop marks the start of the shutdown: stopped is closed, and the store
// calls made for the gateway's own work (stopContext) end.
func (g *Gateway) stop() {
	close(g.stopped)
	if g.stopCancel != nil {
		g.stopCancel()
	}
	g.groups.stopLooks()
}

// adminStopWait bounds how long the end of a shutdown waits for admin API
// calls in flight (their store is closed once Serve returns).
var adminStopWait = 2 * time.Second // a variable for tests

// closeAdmin stops the admin listener at the end of a shutdown: its idle
// connections (a load balancer's health checks) close at once, calls in
// flight get up to adminStopWait.
func (g *Gateway) closeAdmin() {
	if g.admin == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminStopWait)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.admin.Shutdown(ctx) }()
	// Shutdown counts a connection that has not sent a request yet (a
	// TCP health check, a client that connects ahead) as busy for its
	// first 5 s: close those, they have no call to finish. Again until
	// Shutdown returns, for one accepted just before the listener closed.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		g.adminFresh.closeAll()
		select {
		case err := <-done:
			if err != nil {
				g.admin.Close()
			}
			return
		case <-tick.C:
		}
	}
}

// freshConns tracks the admin connections that have not begun a request
// (http.StateNew), for closeAdmin.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, st http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st != http.StateNew {
		delete(f.conns, c)
		return
	}
	if f.conns == nil {
		f.conns = map[net.Conn]struct{}{}
	}
	f.conns[c] = struct{}{}
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
		delete(f.conns, c)
	}
}
