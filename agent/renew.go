package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/tunnel"
)

// stopKey carries the Run context's cancel-with-cause function.
type stopKey struct{}

// stopFunc returns the function that stops the whole agent with a cause.
func stopFunc(ctx context.Context) func(error) {
	if f, ok := ctx.Value(stopKey{}).(context.CancelCauseFunc); ok {
		return f
	}
	return func(error) {}
}

// loadCredentials finds the agent's certificate: given in Config, kept in
// DataDir, or enrolled now with Token.
func (a *Agent) loadCredentials(ctx context.Context) error {
	creds := a.cfg.Credentials
	if creds == nil && a.cfg.DataDir != "" {
		c, err := LoadCredentials(a.cfg.DataDir)
		switch {
		case err == nil:
			creds = c
			a.checkKeyMode()
		case !errors.Is(err, ErrNotEnrolled):
			return fmt.Errorf("agent: %w", err)
		}
	}
	if creds == nil {
		if a.cfg.Token == "" {
			return fmt.Errorf("agent: no certificate in data_dir %q and no token to enroll with; "+
				"put a token (`sallyport token create --group G`) in a file and run `%s`, "+
				"or set `token:` in the agent config", a.cfg.DataDir, a.enrollCommand())
		}
		c, err := a.enrollWithRetry(ctx)
		if err != nil {
			return err
		}
		creds = c
	}
	a.creds.Store(creds)
	if err := a.checkExpiry(); err != nil {
		return err
	}
	a.log.Info("agent certificate", zap.String("connector", creds.ConnectorID), zap.String("group", creds.Group),
		zap.Time("expires", creds.Expires()), zap.Time("renew_at", creds.RenewAt()))
	return nil
}

// checkKeyMode warns when the key file in DataDir may be read by other
// users (a copy, a restored backup, an edit): Save writes it 0600, but
// only at the next renewal, up to two thirds of a certificate lifetime on.
func (a *Agent) checkKeyMode() {
	if runtime.GOOS == "windows" { // no Unix modes; ACLs decide
		return
	}
	p := filepath.Join(a.cfg.DataDir, KeyFile)
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	a.log.Warn("the agent's private key file may be read by other users of this machine: whoever reads it can "+
		"connect as this connector; make it readable by the agent's user only (chmod 600 "+shellQuote(p)+"), "+
		"and revoke the connector if others may have copied it",
		zap.String("file", p), zap.String("mode", fmt.Sprintf("%#o", fi.Mode().Perm())))
}

// ErrEnrollInterrupted: Run's context was cancelled (the agent was told
// to stop) while the agent waited to enroll with its token. Run's error
// wraps it and the last enrollment error; the agent has logged at WARN
// that it stopped before it could enroll, and whether the token may have
// been spent. A stop, not a failure: the command exits 0 on it.
// EnrollWithStopGrace's error wraps it too when a stop ended the call.
var ErrEnrollInterrupted = errors.New("enrollment interrupted")

// enrollStopGrace is how long an enrollment request that may have reached
// the gateway goes on after a stop, for the gateway's answer (a variable
// for tests).
var enrollStopGrace = 10 * time.Second

// errNoAnswerAfterStop is the cause of the cut of an enrollment request
// whose answer did not come within enrollStopGrace after the stop.
var errNoAnswerAfterStop = errors.New("the gateway did not answer the enrollment request in time after the stop")

// enrollWithRetry enrolls with the config token, retrying with backoff
// while the gateway cannot be reached, and at the renewal pace while it
// answers without an enrollment service (ErrEnrollUnsupported); a refusal
// stops at once. Cancelled meanwhile, it returns an error wrapping
// ErrEnrollInterrupted (see stoppedBeforeEnrolling), unless the request
// in flight may have reached the gateway and its answer, within
// enrollStopGrace, is a certificate: then the agent is enrolled, and Run
// stops as a stop after enrolling does (see enrollThroughStop).
func (a *Agent) enrollWithRetry(ctx context.Context) (*Credentials, error) {
	var dialErr atomic.Pointer[error]
	unsupported := 0 // attempts the gateway answered without an enrollment service
	var last error   // of the last attempt that ended by itself, not by the stop
	mayBeSpent := false
	for attempt := 0; ; attempt++ {
		res := a.enrollThroughStop(ctx, EnrollConfig{
			Gateway: a.cfg.Gateway, TLS: a.cfg.TLS, Token: a.cfg.Token, Name: a.name(), DataDir: a.cfg.DataDir,
			DialContext: a.recordingDialer(&dialErr),
			SameName: func(name string, ids []string) {
				a.log.Warn("enrolled under a name that other connectors of the group have, and they are not revoked; "+
					"if this agent replaces one of them (installed again), revoke it: sallyport connector revoke ID",
					zap.String("name", name), zap.Strings("same_name_connectors", ids))
			},
		})
		c, err := res.creds, res.err
		if de := dialErr.Swap(nil); err != nil && de != nil {
			err = fmt.Errorf("enroll: %w", *de) // gRPC hides the dial error's type
		}
		if err == nil {
			a.log.Info("enrolled at the gateway", zap.String("connector", c.ConnectorID),
				zap.String("group", c.Group), zap.String("data_dir", a.cfg.DataDir))
			if ctx.Err() != nil {
				a.log.Info("the gateway's answer came after the stop; stopping as told, the next start uses the "+
					"certificate in data_dir", zap.String("data_dir", a.cfg.DataDir))
			}
			return c, nil
		}
		if _, ok := errors.AsType[*DataDirError](err); ok {
			return nil, fmt.Errorf("agent: %w", err) // retrying cannot help
		}
		if errors.Is(err, ErrEnrollRefused) || errors.Is(err, tunnel.ErrRevoked) {
			return nil, fmt.Errorf("agent: %w; check `token` in the agent config (create one with `sallyport token create`)", err)
		}
		if ctx.Err() != nil {
			// Stopped. A request cut at the stop had not reached the
			// gateway (nothing was sent): the last error is the one of
			// the attempt before. One that had went on for the
			// gateway's answer: that answer, or the cut at the end of
			// the grace, when the gateway may have spent the token.
			mayBeSpent = mayBeSpent || !tokenUnspent(err, res.reached)
			if last == nil || res.reached {
				last = err
			}
			return nil, a.stoppedBeforeEnrolling(last, attempt+1, mayBeSpent, res.graceOver)
		}
		last = err
		mayBeSpent = mayBeSpent || !tokenUnspent(err, res.reached)
		delay := a.cfg.Backoff.Next(attempt)
		if errors.Is(err, ErrEnrollUnsupported) {
			// Only an upgrade of the gateway helps. The agent waits for it
			// rather than exiting: nothing on this side is to change, a
			// service manager restarting an agent that exits would only
			// try again sooner (or give up after a few quick restarts),
			// and once the gateway is upgraded the agent enrolls by itself.
			// At the renewal pace (10s doubling to 10m), not the
			// reconnect pace.
			slow := a.renewBackoff()
			delay = max(delay, slow.Next(unsupported))
			unsupported++
			a.log.Error("the gateway does not support enrollment; upgrade the gateway, this agent tries again "+
				"meanwhile", zap.Error(err), zap.Duration("retry_in", delay))
		} else if isProxyError(err) {
			a.log.Error("the outbound proxy refused the connection to the gateway", zap.Error(err), zap.Duration("retry_in", delay))
		} else if te, ok := errors.AsType[*GatewayTrustError](err); ok && te.Pinned == "" {
			a.log.Error("cannot enroll: the gateway's tunnel certificate is not trusted; "+untrustedHint(err),
				zap.Error(err), zap.Duration("retry_in", delay))
		} else if isGatewayStoreDown(err) {
			// The gateway says whether the token was spent: not when its
			// database failed before it recorded anything, unknown when
			// the write of the enrollment failed (see tokenUnspent).
			spent := "the token was not spent"
			if !tokenUnspent(err, res.reached) {
				spent = "whether the token was spent is unknown; if the gateway says it was used, " + newTokenHint
			}
			a.log.Warn("cannot enroll yet: the gateway's database does not answer; retrying ("+spent+")",
				zap.Error(err), zap.Duration("retry_in", delay))
		} else if errors.Is(err, ErrGatewayUnreachable) {
			a.log.Warn("cannot enroll yet; check that the gateway runs and that gateway: is its tunnel.addr host:port; retrying",
				zap.Error(err), zap.Duration("retry_in", delay))
		} else {
			a.log.Warn("cannot enroll yet; retrying", zap.Error(err), zap.Duration("retry_in", delay))
		}
		if !sleep(ctx, delay) {
			return nil, a.stoppedBeforeEnrolling(last, attempt+1, mayBeSpent, false)
		}
	}
}

// newTokenHint says what to do when an enrollment token may have been
// spent without a certificate to show for it.
const newTokenHint = "create a new one with `sallyport token create` (see `sallyport token list` on the gateway)"

// stoppedBeforeEnrolling logs that the agent was stopped while it waited
// to enroll, with the last enrollment error, after attempts tries, and
// whether the token may have been spent (graceOver: because the request
// in flight got no answer within enrollStopGrace after the stop); it
// returns Run's error, which wraps ErrEnrollInterrupted and last.
func (a *Agent) stoppedBeforeEnrolling(last error, attempts int, mayBeSpent, graceOver bool) error {
	if mayBeSpent {
		a.log.Warn("agent stopped before it could enroll; "+spentText(graceOver)+
			": if the next start says the token was used, "+newTokenHint,
			zap.Error(last), zap.Int("attempts", attempts))
	} else {
		a.log.Warn("agent stopped before it could enroll; the token was not spent, so the next start enrolls with it",
			zap.Error(last), zap.Int("attempts", attempts))
	}
	return fmt.Errorf("agent: %w: %w", ErrEnrollInterrupted, last)
}

// spentText says why a single-use token may have been spent by an
// enrollment that a stop ended: its request may have reached the gateway,
// and (graceOver) the gateway did not answer within enrollStopGrace after
// the stop.
func spentText(graceOver bool) string {
	if graceOver {
		return fmt.Sprintf("the gateway did not answer the enrollment request within %s after the stop, and it may "+
			"have received it, so a single-use token may have been spent", enrollStopGrace)
	}
	return "an enrollment request may have reached the gateway, so a single-use token may have been spent"
}

// enrollResult is what became of one Enroll call through a stop.
type enrollResult struct {
	creds *Credentials
	err   error
	// reached: the last attempt's TLS handshake got past the check of
	// the gateway's certificate (see reachedTLS).
	reached bool
	// graceOver: the call was cut enrollStopGrace after the stop, with
	// no answer from the gateway.
	graceOver bool
}

// enrollThroughStop is Enroll of cfg for a caller whose ctx a stop
// cancels (SIGTERM, Ctrl-C). A stop before the attempt's TLS handshake
// got past the check of the gateway's certificate cuts the call at once:
// the token was not sent. After it, the gateway may have received the
// token and be spending it as it records the connector, and cutting the
// call would lose the certificate it issues: the call goes on for the
// gateway's answer, for up to enrollStopGrace after the stop, and is cut
// then. A gateway that closes the connection before reading the request
// (ErrGatewayBusy) has not received the token: the wait before the next
// try is cut by a stop, and no try follows one.
//
// No goroutine of the call outlives it.
func enrollThroughStop(ctx context.Context, cfg EnrollConfig, log *zap.Logger) enrollResult {
	tc, reached := reachedTLS(cfg.TLS)
	cfg.TLS = tc
	grace := enrollStopGrace
	callCtx, cut := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cut(nil)
	onBusy := cfg.OnBusyRetry
	cfg.OnBusyRetry = func(err error, retry int, wait time.Duration) {
		reached.Store(false) // the next try has not reached the gateway yet
		if ctx.Err() != nil {
			cut(context.Cause(ctx))
		}
		if onBusy != nil {
			onBusy(err, retry, wait)
		}
	}
	returned := make(chan struct{}) // closed when Enroll has returned
	watched := make(chan struct{})  // closed when the watch below has ended
	go func() {
		defer close(watched)
		select {
		case <-returned:
			return
		case <-ctx.Done():
		}
		if !reached.Load() {
			cut(context.Cause(ctx))
			return
		}
		log.Info(fmt.Sprintf("stopping: waiting up to %s for the gateway's answer to the enrollment request, "+
			"so that the certificate is not lost if the gateway spends the token", grace))
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-returned:
		case <-t.C:
			cut(errNoAnswerAfterStop)
		}
	}()
	c, err := Enroll(callCtx, cfg)
	close(returned)
	<-watched
	return enrollResult{creds: c, err: err, reached: reached.Load(),
		graceOver: err != nil && errors.Is(context.Cause(callCtx), errNoAnswerAfterStop)}
}

// enrollThroughStop is the package function for the agent's attempts.
func (a *Agent) enrollThroughStop(ctx context.Context, cfg EnrollConfig) enrollResult {
	return enrollThroughStop(ctx, cfg, a.log)
}

// EnrollWithStopGrace is Enroll for a command whose ctx a stop cancels
// (SIGTERM, Ctrl-C): a stop that comes once the request may have reached
// the gateway does not cut it at once but waits up to 10 seconds for the
// gateway's answer, so that a certificate the gateway issues (spending a
// single-use token) is kept; a stop before cuts it at once (the token was
// not sent). log (nil → none) gets a line when the stop waits so.
//
// When a stop ended the call without a certificate, the error wraps
// ErrEnrollInterrupted and the call's error, and says whether the token
// may have been spent; the gateway's refusal (ErrEnrollRefused) and a
// DataDirError are returned as they are, as without a stop.
func EnrollWithStopGrace(ctx context.Context, cfg EnrollConfig, log *zap.Logger) (*Credentials, error) {
	if log == nil {
		log = zap.NewNop()
	}
	res := enrollThroughStop(ctx, cfg, log)
	if res.err == nil || ctx.Err() == nil {
		return res.creds, res.err
	}
	if _, ok := errors.AsType[*DataDirError](res.err); ok || errors.Is(res.err, ErrEnrollRefused) {
		return nil, res.err
	}
	if tokenUnspent(res.err, res.reached) {
		return nil, fmt.Errorf("%w: stopped before enrolling; the token was not spent, so enrolling again can use it: %w",
			ErrEnrollInterrupted, res.err)
	}
	return nil, fmt.Errorf("%w: stopped before enrolling; %s: if enrolling again says the token was used, %s: %w",
		ErrEnrollInterrupted, spentText(res.graceOver), newTokenHint, res.err)
}

// reachedTLS is base (nil → tlsCredentials' default) for one Enroll call,
// and whether that call's TLS handshake with the gateway got past the
// check of its certificate: only then can the token have been sent.
func reachedTLS(base *tls.Config) (*tls.Config, *atomic.Bool) {
	reached := new(atomic.Bool)
	tc := &tls.Config{MinVersion: tls.VersionTLS12} // as tlsCredentials
	if base != nil {
		tc = base.Clone()
	}
	verify := tc.VerifyConnection
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		reached.Store(true)
		return nil
	}
	return tc, reached
}

// tokenUnspent reports whether an enrollment attempt that failed with
// err certainly left the token unspent: it never completed a TLS
// handshake with the gateway (reached false: the token was not sent), or
// the gateway's answer says so (no enrollment service, a connection it
// closed before reading the request, or its own failure before it spent
// the token, which its answer tells: an ErrorInfo detail, or for gateways
// from before that, its message).
func tokenUnspent(err error, reached bool) bool {
	var unspent *unspentError
	if !reached || errors.Is(err, ErrEnrollUnsupported) || errors.Is(err, ErrGatewayBusy) || errors.As(err, &unspent) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "the token was not spent") || strings.Contains(msg, "the token was not used")
}

// checkExpiry fails once the certificate has expired, saying how to enroll
// again (see enrollAgainCommand).
func (a *Agent) checkExpiry() error {
	c := a.creds.Load()
	if c == nil || a.clock.Now().Before(c.Expires()) {
		return nil
	}
	return fmt.Errorf("%w on %s (it was not renewed in time, e.g. because the agent was offline); "+
		"enroll it again: get a token with `sallyport token create --group %s`, put it in a file, then run `%s`",
		ErrCertificateExpired, c.Expires().UTC().Format(time.RFC3339), c.Group, a.enrollCommand())
}

// enrollCommand is the command that enrolls this agent (again).
func (a *Agent) enrollCommand() string {
	return enrollAgainCommand(enrollSource{configFile: a.cfg.ConfigFile, gatewayCAFile: a.cfg.GatewayCAFile,
		gateway: a.cfg.Gateway, dataDir: a.cfg.DataDir})
}

// enrollSource is what the agent ran from, for the command that enrolls
// it again.
type enrollSource struct {
	configFile    string // the agent config file; "" → the agent was not started from one
	gatewayCAFile string // the config's gateway_ca_file
	gateway       string
	dataDir       string
}

// enrollAgainCommand is the `sallyport agent enroll` command that enrolls
// the agent of src again with a token in a file: with --config when the
// agent ran from a config file, which brings its gateway, data_dir, name,
// proxy and gateway trust along (gateway_ca_file, else what the previous
// enrollment saved in data_dir, as the agent trusts the gateway); else
// with --gateway and --data-dir, and the trust the enrollment needs for a
// self-signed tunnel certificate as a flag: gateway_ca_file, else what the
// previous enrollment saved in the data directory (gateway-ca.pem, else a
// pinned fingerprint); else none, for the system roots.
//
// A relative data directory is given absolute, as --data-dir even with
// --config (the flag wins over the config's data_dir): the agent took it
// from its working directory, and the command is run from another one (a
// service's WorkingDirectory, a shell's home), where it would enroll into
// another directory, without the trust saved in the agent's.
func enrollAgainCommand(src enrollSource) string {
	relative := src.dataDir != "" && !filepath.IsAbs(src.dataDir)
	if relative {
		if abs, err := filepath.Abs(src.dataDir); err == nil {
			src.dataDir = abs
		} else {
			relative = false
		}
	}
	if src.configFile != "" {
		cmd := "sallyport agent enroll --config " + shellQuote(src.configFile) + " --token-file FILE"
		if relative {
			cmd += " --data-dir " + shellQuote(src.dataDir)
		}
		return cmd
	}
	dir := "DIR"
	if src.dataDir != "" {
		dir = shellQuote(src.dataDir)
	}
	var trust string
	switch {
	case src.gatewayCAFile != "":
		trust = " --gateway-ca " + shellQuote(src.gatewayCAFile)
	case src.dataDir != "":
		if p := filepath.Join(src.dataDir, GatewayCAFile); fileExists(p) {
			trust = " --gateway-ca " + shellQuote(p)
		} else if b, err := os.ReadFile(filepath.Join(src.dataDir, GatewayPinFile)); err == nil {
			if pin := strings.TrimSpace(string(b)); pin != "" {
				trust = " --gateway-fingerprint " + shellQuote(pin)
			}
		}
	}
	return "sallyport agent enroll --gateway " + shellQuote(src.gateway) + " --token-file FILE --data-dir " + dir + trust
}

func (a *Agent) renewBackoff() Backoff {
	b := a.cfg.RenewBackoff
	if b.Min <= 0 {
		b.Min = 10 * time.Second
	}
	if b.Max <= 0 {
		b.Max = 10 * time.Minute
	}
	return b
}

// Renewed gets a value after each successful renewal (tests).
func (a *Agent) Renewed() <-chan struct{} { return a.renewed }

// Certificate is the certificate new sessions present.
func (a *Agent) Certificate() *Credentials { return a.creds.Load() }

// renewLoop renews the certificate at two thirds of its lifetime, retrying
// with backoff; then every slot moves its session to one presenting the new
// certificate (see serve), so no session outlives the old one. It stops the
// agent when the gateway says the connector was revoked, or when the
// certificate expires first.
func (a *Agent) renewLoop(ctx context.Context, stop context.CancelCauseFunc) {
	failures := 0
	for {
		cur := a.creds.Load()
		at := cur.RenewAt()
		if failures > 0 {
			b := a.renewBackoff()
			at = a.clock.Now().Add(b.Next(failures - 1))
			if exp := cur.Expires(); exp.Before(at) {
				at = exp
			}
		}
		select {
		case <-clock.Until(a.clock, at): // a time: see clock.Until
		case <-ctx.Done():
			return
		}
		if err := a.checkExpiry(); err != nil {
			stop(err)
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		next, err := renew(rctx, a.cfg.Gateway, a.cfg.TLS, cur, a.name(), a.grpcDialer())
		cancel()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, tunnel.ErrRevoked) {
			stop(fmt.Errorf("certificate renewal refused: %w", err))
			return
		}
		if err == nil && a.cfg.DataDir != "" {
			err = next.Save(a.cfg.DataDir)
		}
		if err != nil {
			failures++
			a.log.Warn("certificate renewal failed; retrying", zap.Error(err),
				zap.Time("expires", cur.Expires()), zap.Int("failures", failures))
			continue
		}
		failures = 0
		a.creds.Store(next)
		a.announceRenewal()
		a.log.Info("certificate renewed", zap.String("connector", next.ConnectorID),
			zap.Time("expires", next.Expires()), zap.Time("renew_at", next.RenewAt()))
		select {
		case a.renewed <- struct{}{}:
		default:
		}
	}
}

// shellQuote quotes s for a POSIX shell command line when it needs it.
func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:+=@,", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
