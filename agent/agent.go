// Package agent is the connector agent: it dials out to the gateway, keeps
// its tunnel sessions up, and serves the exchanges that arrive on them by
// calling the private backends it is allowed to reach.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpproxy"

	"github.com/sallyport/sallyport/internal/clock"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// Version is the agent build version reported to the gateway.
var Version = "dev"

// Config is everything an agent needs. Fields say what their zero means.
type Config struct {
	// Gateway is the gateway's tunnel address, host:port. Required.
	Gateway string
	// TLS verifies the gateway's tunnel certificate. Nil → system roots and
	// the host name from Gateway.
	TLS *tls.Config
	// Token is an enrollment token, used only when the agent has no
	// certificate yet (none in DataDir): the agent then enrolls itself first.
	Token string
	// DataDir keeps the agent's key, certificate and CA bundle (see
	// Enroll). Empty → nothing is saved: the agent enrolls with Token at
	// every start and keeps its certificate in memory.
	DataDir string
	// Credentials, if set, are used instead of DataDir's (tests, embedding).
	Credentials *Credentials
	// ConfigFile is the agent config file the agent runs from, and
	// GatewayCAFile its gateway_ca_file ("" → none); only the command that
	// an expired certificate's error gives to enroll again names them.
	ConfigFile    string
	GatewayCAFile string
	// Clock is the time for certificate expiry and renewal (nil → the real
	// clock).
	Clock clock.Clock
	// RenewBackoff paces renewal retries (zero value: 10s doubling to 10m).
	RenewBackoff Backoff
	// Name is shown in the gateway's logs. Empty → the host name.
	Name string
	// Connections is how many sessions to keep open (0 → 2).
	Connections int
	// Allow lists the backends this agent may call (see ParseAllowlist).
	// Empty → none: every exchange is refused with backend-not-allowed.
	Allow []string
	// BackendTLS configures https:// backends with private CAs.
	BackendTLS []BackendTLS
	// BackendSendTimeout cuts an upgraded connection (a WebSocket) whose
	// backend stopped reading (see Backends.SendTimeout), and an exchange
	// whose backend took none of its request body for that long
	// (tunnel.Server.BodyStallTimeout); zero means
	// DefaultBackendSendTimeout (5 minutes).
	BackendSendTimeout time.Duration
	// Backoff paces reconnects (zero value: 500ms doubling to 30s, jittered).
	Backoff Backoff
	// RollPause spaces the slots moving their sessions to a renewed
	// certificate: one slot at a time, this long (jittered by ±50%) apart
	// (0 → 1s).
	RollPause time.Duration
	// DrainGrace bounds how long Run waits for exchanges in flight after
	// its context is cancelled (0 → 30s).
	DrainGrace time.Duration
	// MinIdle is how many idle streams each gRPC session keeps ready
	// (0 → 16).
	MinIdle int
	// Keepalive is how often the agent pings its sessions to find a dead
	// network path (0 → 15s; below 5s counts as 5s). A silent dead path is
	// noticed after Keepalive + min(Keepalive, 10s) on gRPC and yamux (a
	// ping after Keepalive without anything read from the gateway, then
	// min(Keepalive, 10s) for anything to come), and about twice Keepalive
	// on QUIC (whose sessions ping after 5 s without a packet, or after
	// Keepalive when it is shorter).
	Keepalive time.Duration
	// VerifyAssertion refuses every exchange whose X-Sallyport-Assertion
	// (set by the gateway for apps with preauth: oidc) is missing or does
	// not verify with the gateway's keys, before the backend is called.
	// False: requests pass as the gateway sends them.
	VerifyAssertion bool
	// Transport is "grpc", "quic", "yamux" or "auto" ("" → auto): QUIC
	// first, gRPC when no QUIC session comes up within QUICFallback, and
	// back to QUIC once a retry every QUICRetry succeeds. With an outbound
	// proxy, auto means gRPC (QUIC cannot pass an HTTP proxy).
	Transport string
	// Proxy is the outbound HTTP proxy for the TCP transports (gRPC and
	// yamux), e.g. "http://user:pass@proxy.corp:3128". Empty → the
	// HTTPS_PROXY and NO_PROXY environment variables (ProxyEnv).
	Proxy string
	// ProxyEnv is read when Proxy is empty. Nil → no proxy from the
	// environment; the command sets httpproxy.FromEnvironment().
	ProxyEnv *httpproxy.Config
	// QUICFallback bounds a QUIC connection attempt; in auto mode gRPC is
	// used when it passes (0 → 3s).
	QUICFallback time.Duration
	// QUICRetry is how often auto mode retries QUIC after a fallback
	// (0 → 3m).
	QUICRetry time.Duration
	// ListenPacket opens the UDP socket of a QUIC session. Nil → an
	// ephemeral UDP port. Tests use it to simulate a network that drops UDP.
	ListenPacket func() (net.PacketConn, error)
	// ProtocolVersion is the tunnel protocol version the agent announces
	// (0 → tunnel.ProtocolVersion). Only tests lower it, to play an older
	// agent.
	ProtocolVersion uint32
	// Metrics collects Prometheus metrics, which MetricsHandler serves.
	// False → none are collected and MetricsHandler is nil.
	Metrics bool
	// Log receives the agent's logs. Nil → no logs.
	Log *zap.Logger
}

// Agent is a running connector agent.
type Agent struct {
	cfg      Config
	log      *zap.Logger
	allow    *Allowlist
	backends *Backends
	srv      *tunnel.Server
	id       string
	verifier *assertionVerifier // nil without VerifyAssertion
	keys     *grpcKeysFetcher   // nil without VerifyAssertion
	metrics  *agentMetrics      // nil without Metrics
	mode     string             // grpc, quic, yamux or auto
	proxy    *proxyDialer       // nil: direct TCP
	auto     autoState
	spread   *spread        // which gateway replica each slot's session is on
	bg       sync.WaitGroup // the QUIC prober and sessions draining after a move

	clock clock.Clock
	creds atomic.Pointer[Credentials] // the certificate new sessions present
	tls   *tls.Config                 // cfg.TLS with the client certificate hook

	mu       sync.Mutex
	sessions map[string]SessionStatus // by session id; guarded by mu
	ready    chan struct{}            // closed when the first session is up
	readyOne sync.Once
	renewed  chan struct{} // gets a value after each renewal; never closed
	// renewal is closed at the next renewal and then replaced; guarded by
	// mu. Slots wait on it to move their sessions (renewedSince).
	renewal chan struct{}
	// rollTurns holds a value while a slot moves its session to a renewed
	// certificate; never closed.
	rollTurns chan struct{}
}

// New checks cfg and builds an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Gateway == "" {
		return nil, errors.New("agent: no gateway address")
	}
	if _, _, err := net.SplitHostPort(cfg.Gateway); err != nil {
		return nil, fmt.Errorf("agent: gateway address %q: %w", cfg.Gateway, err)
	}
	allow, err := ParseAllowlist(cfg.Allow)
	if err != nil {
		return nil, fmt.Errorf("agent: allow: %w", err)
	}
	backends, err := NewBackends(allow, cfg.BackendTLS)
	if err != nil {
		return nil, fmt.Errorf("agent: backend_tls: %w", err)
	}
	backends.SendTimeout = cfg.BackendSendTimeout
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	mode, err := validateTransport(cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	proxy, err := proxyFor(cfg.Proxy, cfg.ProxyEnv, cfg.Gateway)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: log, allow: allow, backends: backends, mode: mode,
		id: newAgentID(), sessions: make(map[string]SessionStatus), ready: make(chan struct{}),
		clock: clock.Or(cfg.Clock), renewed: make(chan struct{}, 1),
		renewal: make(chan struct{}), rollTurns: make(chan struct{}, 1),
		spread: newSpread(),
	}
	a.auto.useQUIC = true
	a.auto.back = make(chan struct{})
	if proxy != nil {
		a.proxy = newProxyDialer(proxy)
		switch mode {
		case TransportQUIC:
			if cfg.Proxy != "" {
				return nil, errors.New("agent: transport quic cannot pass an HTTP proxy; use grpc, yamux or auto, or remove `proxy`")
			}
			log.Warn("HTTPS_PROXY is set but transport quic does not use it (QUIC cannot pass an HTTP proxy)")
			a.proxy = nil
		case TransportAuto:
			a.mode = TransportGRPC
			log.Info("an outbound proxy is configured and QUIC cannot pass an HTTP proxy: transport auto uses gRPC through it",
				zap.String("proxy", proxy.Redacted()))
		}
	}
	a.tls = &tls.Config{MinVersion: tls.VersionTLS13}
	if cfg.TLS != nil {
		a.tls = cfg.TLS.Clone()
	}
	base := a.tls.Clone()
	a.tls.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if c := a.creds.Load(); c != nil {
			return &c.Cert, nil
		}
		return &tls.Certificate{}, nil
	}
	a.cfg.TLS = base
	a.srv = &tunnel.Server{Backend: a.backend, Classify: ClassifyBackendError, Log: log,
		BodyStallTimeout: backends.sendTimeout()}
	if cfg.VerifyAssertion {
		// The keys come over the tunnel listener, with the tunnel's TLS
		// (and the agent's client certificate once it has one).
		a.keys = &grpcKeysFetcher{addr: cfg.Gateway, tls: a.tls, dial: a.dialTCP}
		a.verifier = &assertionVerifier{fetch: a.keys.fetch, now: a.clock.Now, log: log}
	}
	if cfg.Metrics {
		a.metrics = newAgentMetrics(a)
	}
	return a, nil
}

func (a *Agent) connections() int {
	if a.cfg.Connections <= 0 {
		return 2
	}
	return a.cfg.Connections
}

func (a *Agent) drainGrace() time.Duration {
	if a.cfg.DrainGrace <= 0 {
		return 30 * time.Second
	}
	return a.cfg.DrainGrace
}

func (a *Agent) name() string {
	if a.cfg.Name != "" {
		return a.cfg.Name
	}
	return hostName()
}

func hostName() string {
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "agent"
}

// Ready is closed once the first session is connected.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// SessionStatuses returns the sessions that are up, by id.
func (a *Agent) SessionStatuses() map[string]SessionStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]SessionStatus, len(a.sessions))
	for id, s := range a.sessions {
		out[id] = s
	}
	return out
}

// Sessions returns the ids of the sessions that are up.
func (a *Agent) Sessions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.sessions))
	for id := range a.sessions {
		ids = append(ids, id)
	}
	return ids
}

// backend is the tunnel server's Backend hook: pickBackend, measured when
// the agent collects metrics.
func (a *Agent) backend(req *http.Request, head *tunnelv1.RequestHead) (http.RoundTripper, error) {
	rt, err := a.pickBackend(req, head)
	if a.metrics == nil {
		return rt, err
	}
	app := a.metrics.app(head.GetApp())
	if err != nil {
		app.refused(err)
		return nil, err
	}
	return metered(rt, app), nil
}

// pickBackend checks the allow list before anything is dialled, so a
// refusal is reported clearly, and picks the pooled client for req.
func (a *Agent) pickBackend(req *http.Request, head *tunnelv1.RequestHead) (http.RoundTripper, error) {
	hostport := req.URL.Host
	if req.URL.Port() == "" {
		port := "80"
		if req.URL.Scheme == "https" {
			port = "443"
		}
		hostport = net.JoinHostPort(req.URL.Hostname(), port)
	}
	if a.verifier != nil {
		if err := a.verifier.verify(req, head.GetApp()); err != nil {
			return nil, err
		}
	}
	if err := a.allow.Allowed(req.Context(), hostport); err != nil {
		return nil, err
	}
	return a.backends.forExchange(req, head.GetBackendHttp2()), nil
}

// Run keeps Connections sessions up until ctx is cancelled, reconnecting
// each with backoff. On cancellation it drains: the gateway is told to send
// no new exchanges, the ones in flight finish (up to DrainGrace), then Run
// returns nil.
//
// Run returns an error, without connecting, when the agent has no usable
// certificate and cannot enroll, or when its certificate has expired
// (cancelled while it waits to enroll, an error wrapping
// ErrEnrollInterrupted and the last enrollment error: a stop, which the
// command ends with exit status 0); and
// it stops with an error wrapping tunnel.ErrRevoked when the gateway
// refuses it as revoked, or ErrCertificateExpired when the certificate
// expires before it could be renewed.
func (a *Agent) Run(ctx context.Context) error {
	defer a.backends.CloseIdleConnections()
	if a.keys != nil {
		defer a.keys.close()
	}
	if err := a.loadCredentials(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		// Stopped while enrolling, and the certificate came in the
		// grace after the stop (enrollThroughStop): nothing to start.
		a.log.Info("agent stopped")
		return nil
	}
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		a.renewLoop(runCtx, stopRun)
	}()
	defer func() { <-renewDone }()
	defer stopRun(nil)
	ctx = context.WithValue(runCtx, stopKey{}, stopRun)

	// hard ends the exchanges in flight once the drain grace has passed.
	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()
	stopHard := context.AfterFunc(ctx, func() {
		grace := a.drainGrace()
		if n := a.srv.InFlight(); n > 0 {
			a.log.Info(fmt.Sprintf("draining: waiting for %d exchanges in flight (at most %s; a second signal stops at once)", n, grace),
				zap.Int64("exchanges", n))
		}
		t := time.AfterFunc(grace, func() {
			if n := a.srv.InFlight(); n > 0 {
				a.log.Warn(fmt.Sprintf("cut %d exchanges still running after %s", n, grace), zap.Int64("exchanges", n),
					zap.String("why", "their clients get 502 tunnel-failed; long ones (WebSockets, long polls, "+
						"downloads) do not finish within the agent's drain"))
			}
			cancelHard()
		})
		context.AfterFunc(hard, func() { t.Stop() })
	})
	defer stopHard()

	proxy := "none"
	if a.proxy != nil {
		proxy = a.proxy.proxy.Redacted()
	}
	a.log.Info("agent starting", zap.String("gateway", a.cfg.Gateway), zap.String("name", a.name()),
		zap.String("transport", a.mode), zap.String("proxy", proxy),
		zap.Int("connections", a.connections()), zap.Stringer("allow", a.allow))
	var wg sync.WaitGroup
	for i := range a.connections() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.keepSession(ctx, hard, i)
		}()
	}
	wg.Wait()
	a.bg.Wait()
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		a.log.Error("agent stopped", zap.Error(cause))
		return cause
	}
	a.log.Info("agent stopped")
	return nil
}

// keepSession keeps one session up: dial, serve, and on failure wait a
// jittered, growing delay before the next try.
func (a *Agent) keepSession(ctx, hard context.Context, slot int) {
	log := a.log.With(zap.Int("slot", slot))
	attempt := 0
	stop := stopFunc(ctx)
	for ctx.Err() == nil {
		if err := a.checkExpiry(); err != nil {
			stop(err)
			return
		}
		transport := a.transport()
		cert := a.creds.Load() // before the dial: a renewal during it only moves the session once more
		sess, err := a.dial(ctx, transport, log)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if a.fallBack(ctx, transport, err) {
				continue
			}
			a.gatewayDown(transport, err)
			delay := a.cfg.Backoff.Next(attempt)
			attempt++
			if errors.Is(err, tunnel.ErrRevoked) {
				stop(fmt.Errorf("the gateway refused this agent: %w (remove its old data_dir before "+
					"sallyport agent enroll)", err))
				return
			}
			switch {
			case isGatewayStoreDown(err):
				logGatewayStoreDown(log, transport, err, delay)
			case isCertRefused(err):
				// sallyport agent enroll refuses a data_dir that holds an
				// unexpired certificate: say to remove it, and give the
				// command with the flags this agent runs with.
				log.Error("the gateway refused this agent's certificate in the TLS handshake: it is not signed by "+
					"the gateway's connector CA (the gateway retired that CA, or runs with another data_dir or store). "+
					"Enroll the agent again: remove "+CertFile+" and "+KeyFile+" from its data_dir, put a token of its "+
					"group (sallyport token create --group GROUP) in a file and run the enroll_again command; or check "+
					"that the gateway runs with the data_dir (or store) the agent enrolled with",
					zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay),
					zap.String("group", a.creds.Load().Group), zap.String("enroll_again", a.enrollCommand()))
			case isUnauthenticated(err):
				log.Error("the gateway refused this agent's certificate; if the gateway's data_dir was "+
					"replaced, enroll the agent again (sallyport agent enroll)",
					zap.Error(err), zap.Duration("retry_in", delay))
			case isProxyError(err):
				log.Error("the outbound proxy refused the connection to the gateway",
					zap.Error(err), zap.Duration("retry_in", delay))
			case transport != TransportGRPC && isProtocolRefused(err):
				log.Error("the gateway does not offer the "+transport+" transport (it refused that TLS protocol): it "+
					"is older than the QUIC and yamux transports, or a TLS proxy in front of it does not pass that "+
					"protocol on; upgrade the gateway, or set transport: grpc (or auto)",
					zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay))
			case isNotTLS(err):
				log.Error("cannot connect to the gateway: something answers at "+a.cfg.Gateway+", but not with TLS, "+
					"so it is not the gateway's tunnel listener (perhaps its public or admin port); set gateway: to "+
					"the port of the gateway's tunnel.addr (8443 by default)",
					zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay))
			case isPinMismatch(err):
				log.Error("cannot connect to the gateway: it presents another tunnel certificate than the one pinned "+
					"at enrollment (--gateway-fingerprint); "+pinHint,
					zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay))
			case isCertUntrusted(err):
				log.Error("cannot connect to the gateway: its tunnel certificate is not trusted; "+untrustedHint(err),
					zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay))
			default:
				msg := "cannot connect to the gateway; check that the gateway runs and that gateway: is its tunnel.addr host:port"
				if transport == TransportQUIC && isTimeout(err) {
					msg = "cannot connect to the gateway (no QUIC answer: gateway not up, wrong port, or UDP blocked); " +
						"check that the gateway runs and that gateway: is its tunnel.addr host:port"
				}
				log.Warn(msg, zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay))
			}
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		started := time.Now()
		err = a.serve(ctx, hard, slot, sess, transport, cert, log)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRespread) {
			if !sleep(ctx, spreadPause()) {
				return
			}
			continue
		}
		a.spread.leave(slot)
		// A session that ended soon after it came up counts as a failed
		// try (see Backoff.Stable): the delay grows, as after failed
		// dials, rather than start over at each short-lived session.
		if a.cfg.Backoff.Stable(time.Since(started)) {
			attempt = 0
		}
		delay := a.cfg.Backoff.Next(attempt)
		attempt++
		if de, ok := errors.AsType[*drainedEndError](err); ok {
			// Announced (the gateway shuts down, or the certificate is
			// retired): the end is expected, and how the transport saw
			// it close is of no interest but for debugging.
			log.Info("the gateway closed the session it drained; reconnecting", zap.Duration("retry_in", delay))
			log.Debug("how the drained session ended", zap.Error(de.err))
		} else {
			log.Warn("lost the gateway session; reconnecting", zap.Error(err), zap.Duration("retry_in", delay))
		}
		if !sleep(ctx, delay) {
			return
		}
	}
}

// drainedEndError is the end of a session after the gateway announced
// it (a Drain: it shuts down, or the certificate is retired) and before
// the agent could replace it: a lone gateway that shuts down refuses the
// replacement.
type drainedEndError struct{ err error }

func (e *drainedEndError) Error() string {
	if e.err == nil {
		return "the gateway closed the session it drained"
	}
	return "the gateway closed the session it drained: " + e.err.Error()
}
func (e *drainedEndError) Unwrap() error { return e.err }

// isTimeout reports a dial that got no answer in time: QUIC, over UDP,
// hears nothing back from a port where nothing listens, or whose packets
// are dropped.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// pinHint says what to do when the gateway presents another certificate
// than the pinned one.
const pinHint = "every gateway replica behind one name needs the same tunnel.tls files (a replica without " +
	"tunnel.tls makes a self-signed certificate of its own); if the gateway's tunnel certificate was replaced, " +
	"set gateway_ca_file to its tunnel-cert.pem (or the CA that issued its tunnel.tls certificate), or enroll again"

// untrustedHint says how to make the agent trust the gateway's tunnel
// certificate, as `agent enroll` says it, with the fingerprint the gateway
// presented when err carries it. A certificate that does not name the
// host the agent dials, or that is not the pinned one, gets its own
// advice: another CA would not help.
func untrustedHint(err error) string {
	if isPinMismatch(err) {
		return "the gateway presents another tunnel certificate than the one pinned at enrollment; " + pinHint
	}
	if host, names, ok := hostMismatch(err); ok {
		return hostMismatchHint(host, names)
	}
	fp := "sha256:HEX (the fingerprint the gateway logs at start-up)"
	if te, ok := errors.AsType[*GatewayTrustError](err); ok && te.Presented != "" {
		fp = te.Presented
	}
	return "set gateway_ca_file to the gateway's tunnel-cert.pem, or enroll first with " +
		"sallyport agent enroll --gateway-fingerprint " + fp
}

// hostMismatchHint says what to do about a gateway certificate that does
// not name host; names are those it has (empty if unknown).
func hostMismatchHint(host string, names []string) string {
	has := "set gateway: to a name it has"
	if len(names) > 0 {
		has = "it names " + strings.Join(names, ", ") + "; set gateway: to one of them"
	}
	if host == "" {
		host = "the host in gateway:"
	}
	return "the gateway's certificate does not name " + host + ": " + has +
		", or give the gateway a tunnel.tls certificate for " + host
}

// hostMismatch reports a gateway certificate that does not name the host
// the agent dials, with that host and the names the certificate has: from
// the x509.HostnameError where it survives (yamux), else from its text
// (gRPC and QUIC flatten it: "x509: certificate is valid for a, b, not
// host", "x509: cannot validate certificate for 10.0.0.1 because it
// doesn't contain any IP SANs", "x509: certificate is not valid for any
// names, but wanted to match host").
func hostMismatch(err error) (host string, names []string, ok bool) {
	if err == nil {
		return "", nil, false
	}
	if he, isHost := errors.AsType[x509.HostnameError](err); isHost {
		if he.Certificate != nil {
			names = append(names, he.Certificate.DNSNames...)
			for _, ip := range he.Certificate.IPAddresses {
				names = append(names, ip.String())
			}
		}
		return he.Host, names, true
	}
	msg := err.Error()
	if _, rest, found := strings.Cut(msg, "x509: certificate is valid for "); found {
		i := strings.LastIndex(rest, ", not ")
		if i < 0 {
			return "", nil, true
		}
		return hostPrefix(rest[i+len(", not "):]), strings.Split(rest[:i], ", "), true
	}
	if _, rest, found := strings.Cut(msg, "x509: cannot validate certificate for "); found {
		return hostPrefix(rest), nil, true
	}
	if _, rest, found := strings.Cut(msg, "x509: certificate is not valid for any names, but wanted to match "); found {
		return hostPrefix(rest), nil, true
	}
	return "", nil, false
}

// hostPrefix is the host name or address that s begins with: up to the
// first character no host has (a space, or the quote that ends a gRPC
// status message).
func hostPrefix(s string) string {
	end := strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_:[]%", r))
	})
	if end < 0 {
		return s
	}
	return s[:end]
}

// isNotTLS reports a dial that reached a TCP server which does not speak
// TLS: the gateway's public or admin port, or another service. crypto/tls
// reports it as a tls.RecordHeaderError; gRPC flattens it into a status
// message, so for it only the text is left.
func isNotTLS(err error) bool {
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return true
	}
	return err != nil && strings.Contains(err.Error(), "first record does not look like a TLS handshake")
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func newAgentID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
