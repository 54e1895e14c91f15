package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/rawsock"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// Transports for Config.Transport.
const (
	TransportGRPC  = "grpc"
	TransportQUIC  = "quic"
	TransportYamux = "yamux"
	TransportAuto  = "auto"
)

// clientSession is one connected session of any transport.
type clientSession interface {
	SessionID() string
	Group() string
	// Drained is closed when the gateway announces that it will end the
	// session (it shuts down, or the certificate expires soon).
	Drained() <-chan struct{}
	// SetDrainReason sets what the session's drain tells the gateway,
	// which logs it; unset, "agent shutting down" (the agent stops). Called
	// before Serve's drain is closed.
	SetDrainReason(reason string)
	Serve(ctx context.Context, srv *tunnel.Server, drain <-chan struct{}) error
}

// The reasons an agent gives the gateway when it drains a session that it
// moves rather than ends by stopping (the gateway logs them: "agent is
// draining", and the session's end "drained by the agent (…)").
const (
	drainSpread  = "moving to another gateway replica: this agent has a session on this one"
	drainQUIC    = "moving to QUIC"
	drainRenewed = "moving to the agent's renewed certificate"
	drainReplace = "replaced after the gateway's drain"
	drainProbe   = "a QUIC probe of the agent, over"
)

// dial connects one session over transport (never "auto").
func (a *Agent) dial(ctx context.Context, transport string, log *zap.Logger) (clientSession, error) {
	hello := &tunnelv1.Hello{
		Name: a.name(), Version: Version, AgentId: a.id,
		Platform: runtime.GOOS + "/" + runtime.GOARCH, ProtocolVersion: a.cfg.ProtocolVersion,
		Connections: uint32(a.connections()), // 1–64
	}
	switch transport {
	case TransportQUIC:
		ctx, cancel := context.WithTimeout(ctx, a.quicFallback())
		defer cancel()
		return quictunnel.Dial(ctx, quictunnel.DialConfig{
			Addr: a.cfg.Gateway, TLS: a.tls, Hello: hello,
			ListenPacket: a.cfg.ListenPacket, Keepalive: a.cfg.Keepalive, Log: log,
		})
	case TransportYamux:
		return yamuxtunnel.Dial(ctx, yamuxtunnel.DialConfig{
			Addr: a.cfg.Gateway, TLS: a.tls, Hello: hello,
			DialContext: a.dialTCP, Keepalive: a.cfg.Keepalive, Log: log,
		})
	default:
		// gRPC reports a failed dial as a status without the cause's type:
		// keep the cause, so that a proxy's refusal is reported as one.
		var dialErr atomic.Pointer[error]
		sess, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{
			Addr: a.cfg.Gateway, TLS: a.tls, Hello: hello,
			MinIdle: a.cfg.MinIdle, Keepalive: a.cfg.Keepalive, Log: log,
			DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
				c, err := a.dialTCP(ctx, "tcp", addr)
				if err != nil {
					dialErr.Store(&err)
				}
				return c, err
			},
		})
		if err != nil {
			if de := dialErr.Load(); de != nil {
				return nil, fmt.Errorf("dial gateway %s: %w", a.cfg.Gateway, *de)
			}
			if !isRefusal(err) {
				// The alert is lost when the agent's write meets the
				// closed connection first ("broken pipe").
				if cause := a.certRefusal(ctx, "h2"); cause != nil {
					err = fmt.Errorf("%w: %w", err, cause)
				}
			}
			return nil, err
		}
		return sess, nil
	}
}

// dialTCP opens the TCP connection of a gRPC or yamux session: through the
// outbound proxy when there is one.
func (a *Agent) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if a.proxy != nil {
		c, err = a.proxy.DialContext(ctx, network, addr)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, err
	}
	// A plain TCP connection (direct, or a plain proxy's after CONNECT)
	// reads and writes without the scheduler's system-call state.
	return rawsock.Wrap(c), nil
}

// certProbeWait bounds certRefusal's wait for the gateway's alert.
const certProbeWait = 2 * time.Second

// certRefusal tells whether the gateway refuses the agent's client
// certificate, for gRPC, which loses the cause of a failed session when
// the agent's first write meets the connection the gateway closed
// ("broken pipe" instead of the alert; yamux keeps its read error). It
// opens one TLS connection as the transport does (ALPN alpn) and reads: a
// gateway that refuses the certificate sends its alert right after the
// handshake (TLS 1.3), one that accepts it waits for the agent to speak.
// It returns the alert's error, or nil.
func (a *Agent) certRefusal(ctx context.Context, alpn string) error {
	ctx, cancel := context.WithTimeout(ctx, certProbeWait)
	defer cancel()
	raw, err := a.dialTCP(ctx, "tcp", a.cfg.Gateway)
	if err != nil {
		return nil
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	cfg := a.tls.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(a.cfg.Gateway)
	}
	cfg.NextProtos = []string{alpn}
	tc := tls.Client(raw, cfg)
	err = tc.HandshakeContext(ctx)
	if err == nil {
		_, err = tc.Read(make([]byte, 1))
	}
	if isCertRefused(err) {
		return err
	}
	return nil
}

// isRefusal reports a session the gateway refused: the transport works.
// A store-down answer is one by its code or, from gateways before the
// code (a session closed as it registered: "closed", plain UNAVAILABLE),
// by its words.
func isRefusal(err error) bool {
	return isUnauthenticated(err) || isCertRefused(err) || errors.Is(err, tunnel.ErrShuttingDown) ||
		errors.Is(err, tunnel.ErrRevoked) || isGatewayStoreDown(err)
}

// certRefusalAlerts are the TLS alerts a gateway answers a client
// certificate with that does not chain to its connector CA.
var certRefusalAlerts = [...]tls.AlertError{
	42, // bad_certificate: the gateway's own check (VerifyConnection) failed
	48, // unknown_ca: crypto/tls found no chain to the CAs it trusts
}

// isCertRefused reports whether the gateway refused the agent's client
// certificate in the TLS handshake: it sent one of certRefusalAlerts.
// crypto/tls reports a received alert as a *net.OpError "remote error";
// gRPC flattens it into a status message and quic-go into "CRYPTO_ERROR
// 0x12a (remote): tls: bad certificate", so for them only the text is left.
func isCertRefused(err error) bool {
	if err == nil {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		for _, a := range certRefusalAlerts {
			if op.Err != nil && op.Err.Error() == a.Error() {
				return true
			}
		}
	}
	msg := err.Error()
	for _, a := range certRefusalAlerts {
		if strings.Contains(msg, "remote error: "+a.Error()) || strings.Contains(msg, "(remote): "+a.Error()) {
			return true
		}
	}
	return false
}

// isProtocolRefused reports whether the gateway refused the TLS protocol
// (ALPN) the agent asked for with no_application_protocol (alert 120): a
// gateway older than the transport, or a TLS proxy in front of it that
// does not pass that protocol on. Reported as isCertRefused's alerts are.
func isProtocolRefused(err error) bool {
	if err == nil {
		return false
	}
	const noProtocol = tls.AlertError(120)
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil && op.Err.Error() == noProtocol.Error() {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "remote error: "+noProtocol.Error()) || strings.Contains(msg, "(remote): "+noProtocol.Error())
}

func isUnauthenticated(err error) bool {
	return errors.Is(err, grpctunnel.ErrUnauthenticated) || errors.Is(err, muxtunnel.ErrUnauthenticated)
}

func (a *Agent) quicFallback() time.Duration {
	if a.cfg.QUICFallback <= 0 {
		return 3 * time.Second
	}
	return a.cfg.QUICFallback
}

func (a *Agent) quicRetry() time.Duration {
	if a.cfg.QUICRetry <= 0 {
		return 3 * time.Minute
	}
	return a.cfg.QUICRetry
}

// autoState is what `transport: auto` has learnt: whether QUIC works. Its
// one instance is shared by every slot, so a slot that reconnects does not
// wait for a QUIC attempt that another slot saw fail.
type autoState struct {
	mu      sync.Mutex
	useQUIC bool          // guarded by mu
	back    chan struct{} // closed when QUIC works again after a fallback; guarded by mu
	probing bool          // a prober runs; guarded by mu
}

// transport returns the transport for the next dial.
func (a *Agent) transport() string {
	if a.mode != TransportAuto {
		return a.mode
	}
	a.auto.mu.Lock()
	defer a.auto.mu.Unlock()
	if a.auto.useQUIC {
		return TransportQUIC
	}
	return TransportGRPC
}

// fallBack is called when a QUIC dial failed. In auto mode it switches to
// gRPC (logging why), starts the background prober and returns true: dial
// again at once. A refusal, or a gateway certificate the agent does not
// trust, fails gRPC the same way: no reason to switch.
func (a *Agent) fallBack(ctx context.Context, transport string, err error) bool {
	if a.mode != TransportAuto || transport != TransportQUIC || isRefusal(err) || isCertUntrusted(err) {
		return false
	}
	a.auto.mu.Lock()
	defer a.auto.mu.Unlock()
	if a.auto.useQUIC {
		a.auto.useQUIC = false
		a.log.Warn(fmt.Sprintf("transport switch: QUIC → gRPC: no QUIC session within %g s (UDP blocked, or the gateway "+
			"not up yet)", a.quicFallback().Seconds()),
			zap.Error(err), zap.Duration("quic_retry_every", a.quicRetry()))
	}
	if !a.auto.probing {
		a.auto.probing = true
		a.bg.Add(1)
		go a.probeQUIC(ctx)
	}
	return true
}

// gatewayDown is called when a dial failed. In auto mode, a gRPC dial the
// gateway's host refused (nothing listens: the gateway is not up yet) after
// a fallback from QUIC tells that the QUIC failure was no sign of blocked
// UDP either: the next dial tries QUIC again, instead of waiting for the
// prober.
func (a *Agent) gatewayDown(transport string, err error) {
	if a.mode != TransportAuto || transport != TransportGRPC || !isConnRefused(err) {
		return
	}
	a.auto.mu.Lock()
	defer a.auto.mu.Unlock()
	if !a.auto.useQUIC {
		a.auto.useQUIC = true
		a.log.Info("transport switch: gRPC → QUIC: the gateway refuses TCP connections too, so it is not up yet; " +
			"the next try uses QUIC again")
	}
}

// isConnRefused reports a dial the peer's host refused: nothing listens.
// gRPC may flatten the cause into a status message.
func isConnRefused(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection refused"))
}

// isCertUntrusted reports a dial that failed because the agent does not
// trust the gateway's certificate: no chain to its roots, another name, or
// another certificate than the pinned one (isPinMismatch). quic-go and
// gRPC report it as text.
func isCertUntrusted(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if isPinMismatch(err) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "tls: failed to verify certificate") || strings.Contains(msg, "x509: ")
}

// pinMismatchText is what a *FingerprintMismatchError's text holds (the
// gateway's certificate has fingerprint sha256:…, not the pinned sha256:…),
// and a *GatewayTrustError's for a pin: gRPC and QUIC keep only the text.
const pinMismatchText = ", not the pinned sha256:"

// isPinMismatch reports a dial whose gateway presented another tunnel
// certificate than the fingerprint pinned at enrollment.
func isPinMismatch(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*FingerprintMismatchError](err); ok {
		return true
	}
	if te, ok := errors.AsType[*GatewayTrustError](err); ok && te.Pinned != "" {
		return true
	}
	return strings.Contains(err.Error(), pinMismatchText)
}

// probeQUIC tries a QUIC session every QUICRetry until one works, then
// moves the agent's sessions back to QUIC. It stops when the slots went
// back to QUIC on their own (see gatewayDown).
func (a *Agent) probeQUIC(ctx context.Context) {
	defer a.bg.Done()
	log := a.log.With(zap.String("probe", "quic"))
	for sleep(ctx, a.quicRetry()) {
		a.auto.mu.Lock()
		if a.auto.useQUIC {
			// The slots went back to QUIC on their own (gatewayDown):
			// sessions still on gRPC, which never went down, move too. If
			// QUIC fails them, fallBack starts the prober again.
			a.auto.probing = false
			close(a.auto.back)
			a.auto.back = make(chan struct{})
			a.auto.mu.Unlock()
			return
		}
		a.auto.mu.Unlock()
		sess, err := a.dial(ctx, TransportQUIC, log)
		if err != nil {
			log.Info("QUIC still unavailable; staying on gRPC", zap.Error(err), zap.Duration("retry_in", a.quicRetry()))
			continue
		}
		// The probe proved QUIC works end to end; the slots open their
		// own sessions, so end this one.
		a.drainNow(ctx, sess, drainProbe)
		a.auto.mu.Lock()
		a.auto.useQUIC = true
		a.auto.probing = false
		close(a.auto.back)
		a.auto.back = make(chan struct{})
		a.auto.mu.Unlock()
		a.log.Info("transport switch: gRPC → QUIC: QUIC works again; moving sessions to QUIC")
		return
	}
	a.auto.mu.Lock()
	a.auto.probing = false
	a.auto.mu.Unlock()
}

// quicBack returns a channel closed when a session on transport should
// move to QUIC, or nil when it never should.
func (a *Agent) quicBack(transport string) <-chan struct{} {
	if a.mode != TransportAuto || transport != TransportGRPC {
		return nil
	}
	a.auto.mu.Lock()
	defer a.auto.mu.Unlock()
	if a.auto.useQUIC {
		// The prober found QUIC working while this slot was dialling
		// gRPC: move now. a.auto.back is already the next channel, which
		// only a later fallback and probe would close.
		return closedChan
	}
	return a.auto.back
}

// closedChan is a channel that is always closed.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// serve serves sess, opened with cert, until it ends. The slot's session is
// replaced, make-before-break, when it should move: in auto mode a gRPC
// session moves to QUIC once the prober found QUIC working, after a
// certificate renewal every session moves to one presenting the new
// certificate (see rollTurn), and a session the gateway drains (it shuts
// down, or the certificate expires soon) moves to a new one, which behind a
// load balancer lands on another replica (see drainDelay). The new session
// is up before the old one drains, so the slot never goes dark and the
// exchanges in flight on the old one finish there.
//
// Every new session, the first and those the slot moves to, is placed
// first (see spread.go): when it shares a gateway replica with another
// slot's session while a replica has none, serve lets it go and returns
// errRespread, and the slot dials again. The replacement of a session the
// gateway drains (it shuts down, or rebalances its agents' sessions over
// the replicas) is placed while the drained session still serves: one
// that lands on a covered replica is let go and the slot dials again after
// spreadPause, so the slot never goes dark while it looks for a replica.
func (a *Agent) serve(ctx, hard context.Context, slot int, sess clientSession, transport string, cert *Credentials, log *zap.Logger) error {
	quickDrains := 0 // sessions of this slot drained soon after they opened, in a row
	placed := false  // sess was placed before the session it replaces drained
	for {
		if !placed && a.placeSession(hard, slot, sess, log) {
			return errRespread
		}
		placed = false
		id := sess.SessionID()
		opened := time.Now()
		a.mu.Lock()
		a.sessions[id] = SessionStatus{Group: sess.Group(), Transport: transport}
		a.mu.Unlock()
		a.readyOne.Do(func() { close(a.ready) })
		log.Info("connected to the gateway", zap.String("session", id), zap.String("group", sess.Group()),
			zap.String("transport", transport))

		drain := make(chan struct{})
		var drainOnce sync.Once
		// closeDrain drains the session, telling the gateway why (""
		// for the agent stopping); the first call wins.
		served := sess // sess is replaced below
		closeDrain := func(reason string) {
			drainOnce.Do(func() {
				if reason != "" {
					served.SetDrainReason(reason)
				}
				close(drain)
			})
		}
		stop := context.AfterFunc(ctx, func() { closeDrain("") })
		done := make(chan error, 1)
		go func(sess clientSession) { done <- sess.Serve(hard, a.srv, drain) }(sess) // sess is replaced below
		forget := func() {
			stop()
			a.mu.Lock()
			delete(a.sessions, id)
			a.mu.Unlock()
		}
		move := a.quicBack(transport)
		renewed := a.renewedSince(cert)
		var turn chan struct{} // a.rollTurns once renewed fired: the slot waits for its turn
		drained := sess.Drained()
		var replace <-chan struct{} // closed when the drained session's replacement is due
		failures := 0
		wasDrained := false // the gateway announced the end of sess
		var (
			ns       clientSession
			nt       string
			ncert    *Credentials
			why      string
			drainWhy string // what the drain of sess tells the gateway
			dialErr  error
		)
		// redial opens the slot's next session on the current transport
		// and certificate. When it fails, it logs msg with the error and
		// the delay, and returns a channel closed when the next try is due.
		redial := func(msg string) (<-chan struct{}, error) {
			nt, ncert = a.transport(), a.creds.Load()
			if ns, dialErr = a.dial(ctx, nt, log); dialErr != nil {
				if ctx.Err() != nil {
					return nil, dialErr // the agent stops: the session drains
				}
				delay := a.cfg.Backoff.Next(failures)
				failures++
				log.Warn(msg, zap.String("session", id), zap.Error(dialErr), zap.Duration("retry_in", delay))
				return afterChan(delay), dialErr
			}
			return nil, nil
		}
	wait:
		select {
		case err := <-done:
			forget()
			if ctx.Err() != nil {
				log.Info("session drained", zap.String("session", id))
				return nil
			}
			select {
			case <-sess.Drained():
				// The Drain came just before the end, and this select
				// took the end first: it was announced all the same.
				wasDrained = true
			default:
			}
			if wasDrained {
				return &drainedEndError{err}
			}
			return err
		case <-move:
			nt, ncert = TransportQUIC, a.creds.Load()
			if ns, dialErr = a.dial(ctx, nt, log); dialErr != nil {
				if !a.fallBack(ctx, TransportQUIC, dialErr) {
					// Not a QUIC failure (a refusal, an untrusted gateway
					// certificate): auto mode stays on QUIC, so quicBack
					// would fire again at once. This session stays and
					// tries again after QUICRetry (a gateway that was
					// shutting down, in a rolling restart, takes it then).
					log.Warn("cannot move this session to QUIC yet", zap.String("session", id), zap.Error(dialErr),
						zap.Duration("retry_in", a.quicRetry()))
					move = afterChan(a.quicRetry())
					goto wait
				}
				move = a.quicBack(transport)
				goto wait
			}
			why, drainWhy = "moving this session to QUIC", drainQUIC
		case <-renewed:
			renewed, turn = nil, a.rollTurns
			goto wait
		case turn <- struct{}{}:
			// This slot's turn to move to the renewed certificate; no
			// other slot moves until rollDone.
			var retry <-chan struct{}
			if retry, dialErr = redial("cannot move this session to the renewed certificate yet; it keeps the old one meanwhile"); dialErr != nil {
				<-a.rollTurns
				renewed, turn = retry, nil
				goto wait
			}
			why, drainWhy = "moving this session to the renewed certificate", drainRenewed
			a.rollDone(ctx)
		case <-drained:
			drained, wasDrained = nil, true
			// The gateway retires the certificate a renewal replaced: the
			// slot moves to the new one in its turn, as planned.
			if turn != nil {
				goto wait
			}
			select {
			case <-renewed:
				renewed, turn = nil, a.rollTurns
				goto wait
			default:
			}
			if time.Since(opened) < drainStable {
				quickDrains++
			} else {
				quickDrains = 0
			}
			delay := a.drainDelay(quickDrains)
			log.Info("the gateway drains this session; it keeps serving until a replacement is up",
				zap.String("session", id), zap.Duration("replace_in", delay))
			replace = afterChan(delay)
			goto wait
		case <-replace:
			if replace, dialErr = redial("cannot open a replacement for the session the gateway drains; " +
				"it keeps serving until the gateway closes it"); dialErr != nil {
				goto wait
			}
			// Placed before the break: a replacement on a replica that
			// another slot holds is let go while this session still
			// serves, and the slot dials again shortly.
			if a.placeSession(hard, slot, ns, log) {
				replace = afterChan(spreadPause())
				goto wait
			}
			placed = true
			why, drainWhy = "replacing the session the gateway drains", drainReplace
		}
		log.Info(why, zap.String("old_session", id), zap.String("session", ns.SessionID()),
			zap.String("transport", nt))
		closeDrain(drainWhy)
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			<-done
			forget()
		}()
		sess, transport, cert = ns, nt, ncert
	}
}

// drainStable is how long a session must have been up for the gateway's
// drain of it to count as news rather than as the same drain again (a
// replacement that reached the same gateway, still shutting down, or a
// certificate the gateway drains at once).
const drainStable = time.Minute

// drainDelay is how long a slot waits before it replaces a session the
// gateway drains, when quick sessions of the slot in a row (this one
// included) were drained within drainStable of opening. A gateway that
// shuts down drains every session at once: a slot whose session was stable
// waits a random part of RollPause, so that the slots of an agent, and the
// agents of a fleet, do not redial at the same instant. A replacement
// drained again soon waits the reconnect backoff, growing with each, so a
// slot never moves in a tight loop.
func (a *Agent) drainDelay(quick int) time.Duration {
	if quick <= 1 {
		return time.Duration(rand.Int64N(int64(a.rollPauseBase())))
	}
	return a.cfg.Backoff.Next(quick - 2)
}

// renewedSince returns a channel that is closed once the agent's
// certificate is newer than c (at once if it already is).
func (a *Agent) renewedSince(c *Credentials) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.creds.Load() != c {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return a.renewal
}

// announceRenewal wakes every slot whose session presents an older
// certificate than the one just stored in a.creds.
func (a *Agent) announceRenewal() {
	a.mu.Lock()
	defer a.mu.Unlock()
	close(a.renewal)
	a.renewal = make(chan struct{})
}

// rollPause is the pause between two slots moving to a renewed
// certificate: RollPause jittered by ±50%.
func (a *Agent) rollPause() time.Duration {
	p := a.rollPauseBase()
	return p/2 + time.Duration(rand.Int64N(int64(p)))
}

func (a *Agent) rollPauseBase() time.Duration {
	if a.cfg.RollPause <= 0 {
		return time.Second
	}
	return a.cfg.RollPause
}

// rollDone ends a slot's turn after rollPause, so the slots of an agent
// reconnect one at a time and the gateway never sees them all at once.
func (a *Agent) rollDone(ctx context.Context) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		sleep(ctx, a.rollPause())
		<-a.rollTurns
	}()
}

// afterChan returns a channel closed after d.
func afterChan(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	return ch
}

// SessionStatus describes one of the agent's live sessions.
type SessionStatus struct {
	Group     string
	Transport string
}

// validateTransport checks Config.Transport and the proxy settings.
func validateTransport(t string) (string, error) {
	switch t {
	case "":
		return TransportAuto, nil
	case TransportGRPC, TransportQUIC, TransportYamux, TransportAuto:
		return t, nil
	}
	return "", fmt.Errorf("transport %q: must be grpc, quic, yamux or auto", t)
}

// grpcDialer is the dialer of enrollment and renewal calls: through the
// outbound proxy when there is one, else nil (gRPC's own).
func (a *Agent) grpcDialer() func(context.Context, string) (net.Conn, error) {
	if a.proxy == nil {
		return nil
	}
	return func(ctx context.Context, addr string) (net.Conn, error) { return a.proxy.DialContext(ctx, "tcp", addr) }
}

// recordingDialer is grpcDialer keeping its last error in last, since gRPC
// reports a failed dial without the error's type.
func (a *Agent) recordingDialer(last *atomic.Pointer[error]) func(context.Context, string) (net.Conn, error) {
	dial := a.grpcDialer()
	if dial == nil {
		return nil
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dial(ctx, addr)
		if err != nil {
			last.Store(&err)
		}
		return c, err
	}
}
