package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/tunnel"
)

// Store keeps what must survive a restart: the connector CA, enrolled
// connectors and enrollment tokens. store.DB implements it, on SQLite or,
// for several replicas sharing one database, on PostgreSQL.
type Store interface {
	pki.CAStore
	CreateToken(ctx context.Context, t store.Token) error
	Tokens(ctx context.Context) ([]store.Token, error)
	DeleteToken(ctx context.Context, id string) error
	CheckToken(ctx context.Context, hash [32]byte, now time.Time) (store.Token, error)
	EnrollConnector(ctx context.Context, hash [32]byte, now time.Time, c store.Connector) (store.Token, error)
	AddConnector(ctx context.Context, c store.Connector) error
	Connector(ctx context.Context, id string) (store.Connector, error)
	Connectors(ctx context.Context) ([]store.Connector, error)
	RenewConnector(ctx context.Context, id, serial string, expires time.Time, version, platform string) (store.Connector, error)
	CertInUse(ctx context.Context, id, serial string, issued time.Time) (bool, error)
	AdoptCert(ctx context.Context, id, prev, serial string, issued, expires time.Time) (bool, error)
	// RevokeConnectorFirst revokes connector id at at (a connector revoked
	// already keeps its first time) and reports whether this call revoked
	// it (first): of revokes at the same instant, through one replica or
	// several, the database makes exactly one first.
	RevokeConnectorFirst(ctx context.Context, id string, at time.Time) (c store.Connector, first bool, err error)
	Ping(ctx context.Context) error
}

// trustTimeout bounds one store operation on a session start or enrollment.
const trustTimeout = 10 * time.Second

// Store reads made while an agent waits for a session, shorter than what
// the agent and the gateway wait (tlsHandshakeTimeout for the TLS
// handshake, muxtunnel.HelloTimeout for the answer to its hello, both
// 10 s): a database that does not answer at all (its packets dropped)
// would otherwise outlast them, and the agent would see its connection
// cut rather than hear that the gateway's database does not answer.
const (
	tlsCheckTimeout     = 4 * time.Second // verifyTunnelConn
	sessionCheckTimeout = 5 * time.Second // authenticateSession
)

func (g *Gateway) now() time.Time {
	if g.cfg.Now != nil {
		return g.cfg.Now()
	}
	return clock.Or(g.cfg.Clock).Now()
}

// verifyTunnelConn is the tunnel listener's VerifyConnection: a client
// certificate, when there is one, must chain to the connector CA and be
// valid now. Connections without one may only enroll (the session hook
// refuses them).
//
// Only a certificate found untrusted is refused here, with a TLS alert
// that agents report as "not signed by the gateway's connector CA; enroll
// again". When the check could not be made (the store that holds the CAs
// does not answer, or holds none) the handshake goes on: authenticateSession
// (or Renew) checks again inside the protocol and refuses there with words
// that say so (errStoreDown), so that agents retry rather than being told
// to enroll again.
func (g *Gateway) verifyTunnelConn(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	ctx, cancel := g.stopContext(tlsCheckTimeout)
	defer cancel()
	_, _, err := g.authority.Identify(ctx, &cs)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, pki.ErrUntrusted):
		// Counted by authenticateCounted when the session's check
		// fails too; logged at Debug, as the refusal is logged there.
		g.log.Debug("agent certificate not checked at TLS: the connector CAs could not be read; checked again "+
			"in the session", zap.Error(err), zap.String("subject", cs.PeerCertificates[0].Subject.String()))
		return nil
	}
	// Counted here, not from the log line, which is rate-limited.
	g.metrics.refusals.WithLabelValues(refusalCertificate).Inc()
	g.log.Warn("agent refused at TLS", zap.String("reason", err.Error()),
		zap.String("subject", cs.PeerCertificates[0].Subject.String()))
	return err
}

// errStoreDown is what an agent is told when its certificate could not be
// checked because the store did not answer (store.Unavailable): not the
// driver's error, which names the database's host, port and user, and
// nothing that tells it to enroll again. It wraps tunnel.ErrUnavailable,
// so that the transports refuse the session as UNAVAILABLE (code
// "unavailable"), not as unauthenticated; agents recognise the code, and
// older ones the words (agent/storedown.go), and retry with their usual
// backoff.
var errStoreDown = fmt.Errorf("%w; the agent retries by itself", tunnel.ErrUnavailable)

// storeDownText begins every answer to an agent about a store that does
// not answer.
const storeDownText = tunnel.StoreDownText

// agentStoreError returns errStoreDown, having logged err, when err says
// the store did not answer (or the gateway stopped waiting for it as it
// stops); otherwise err. what names the check in the log ("session",
// "renewal").
func (g *Gateway) agentStoreError(err error, what string, state *tls.ConnectionState) error {
	if !g.storeSilent(err) {
		return err
	}
	subject := ""
	if state != nil && len(state.PeerCertificates) > 0 {
		subject = state.PeerCertificates[0].Subject.String()
	}
	g.log.Warn("agent refused: the store does not answer", zap.String("check", what),
		zap.String("subject", subject), zap.Error(err),
		zap.String("hint", "the agent is told to retry; check the database (see /readyz)"))
	return errStoreDown
}

// storeSilent reports whether err is the store's not answering: as
// store.Unavailable says, or a call that stopContext ended as the gateway
// stops.
func (g *Gateway) storeSilent(err error) bool {
	return store.Unavailable(err) || (errors.Is(err, context.Canceled) && g.stopped != nil && isClosed(g.stopped))
}

// identify decides which enrolled connector a TLS connection belongs to
// and refuses revoked and unknown ones, and certificates that a renewal
// retired: a session or renewal presenting the connector's newest
// certificate records it in use (store CertInUse, with its NotBefore), and
// from then on the older ones are refused, also after later renewals.
// Until then the one it replaces keeps working, so an agent whose renewal
// answer was lost is not locked out. A certificate issued after the one in
// use is newer than the store knows (it was restored from a backup taken
// before a renewal): it is recorded as the newest (adopt) rather than
// refused, so restoring a backup locks no agent out.
func (g *Gateway) identify(ctx context.Context, state *tls.ConnectionState) (store.Connector, *x509.Certificate, error) {
	c, leaf, err := g.identifyConnector(ctx, state)
	if err != nil {
		return c, nil, err
	}
	serial := leaf.SerialNumber.Text(16)
	known := !c.CertIssued.IsZero()
	switch {
	case serial == c.CertSerial && !c.CertInUse:
		if _, err := g.store.CertInUse(ctx, c.ID, serial, leaf.NotBefore); err != nil {
			return c, nil, fmt.Errorf("connector %s: %w", c.ID, err)
		}
		c.CertInUse, c.CertIssued = true, leaf.NotBefore
	case serial == c.CertSerial:
	case known && leaf.NotBefore.Before(c.CertIssued):
		return c, nil, retiredError(c, serial)
	case known && leaf.NotBefore.After(c.CertIssued):
		// Newer than the one in use but not the newest the store knows
		// (when the newest is in use too: restored from a backup), or not
		// the newest either (two renewals with one key since the last
		// session: the agent's and a thief's). Either way it is recorded
		// in use and the older ones retire; accepting it unrecorded kept
		// a stolen key working past the agent's renewals.
		return g.adopt(ctx, c, leaf)
	case c.CertInUse:
		return c, nil, retiredError(c, serial)
	}
	return c, leaf, nil
}

// adopt records leaf, newer than the certificate that c records in use,
// as c's newest certificate (see identify).
func (g *Gateway) adopt(ctx context.Context, c store.Connector, leaf *x509.Certificate) (store.Connector, *x509.Certificate, error) {
	serial := leaf.SerialNumber.Text(16)
	ok, err := g.store.AdoptCert(ctx, c.ID, c.CertSerial, serial, leaf.NotBefore, leaf.NotAfter)
	if err != nil {
		return c, nil, fmt.Errorf("connector %s: %w", c.ID, err)
	}
	if !ok {
		// Another session with the same certificate (the agent's other
		// connections) adopted it first, or a renewal changed the record.
		now, err := g.store.Connector(ctx, c.ID)
		if err == nil && now.CertSerial == serial && now.Revoked.IsZero() {
			return now, leaf, nil
		}
		return c, nil, fmt.Errorf("connector %s: its certificate record changed while checking certificate %s; "+
			"the agent retries by itself", c.ID, serial)
	}
	g.log.Warn("agent presented a certificate newer than the one the store records in use (a store restored from a "+
		"backup, or two renewals with one key since the last session); it is now the connector's certificate and the "+
		"older ones are retired: if the connector's agent is refused next, its key was copied; revoke the connector",
		zap.String("connector", c.ID), zap.String("recorded_serial", c.CertSerial), zap.String("cert_serial", serial))
	c.CertSerial, c.CertExpires, c.CertIssued, c.CertInUse = serial, leaf.NotAfter, leaf.NotBefore, true
	return c, leaf, nil
}

// revokedError refuses, or ends the sessions of, a revoked connector; the
// transports report it to the agent as revoked.
func revokedError(c store.Connector) error {
	return fmt.Errorf("%w: connector %s was revoked at %s; enroll it again with a new token if it should come back",
		tunnel.ErrRevoked, c.ID, c.Revoked.Format(time.RFC3339))
}

// retiredError refuses a certificate that a renewal replaced.
func retiredError(c store.Connector, serial string) error {
	return fmt.Errorf("connector %s: certificate %s was replaced by a renewal and is retired; the agent has "+
		"the new one in its data_dir (restart it if it runs from a copy), or enroll it again", c.ID, serial)
}

// identifyConnector verifies the client certificate of a TLS connection
// and finds its connector, refusing revoked and unknown ones.
func (g *Gateway) identifyConnector(ctx context.Context, state *tls.ConnectionState) (store.Connector, *x509.Certificate, error) {
	id, leaf, err := g.authority.Identify(ctx, state)
	if errors.Is(err, pki.ErrNoCertificate) {
		return store.Connector{}, nil, errors.New("no client certificate: this gateway accepts only enrolled agents; " +
			"enroll with `sallyport agent enroll`, or give the agent `token:` and `data_dir:` so it enrolls itself")
	}
	if err != nil {
		return store.Connector{}, nil, err
	}
	c, err := g.store.Connector(ctx, id.ConnectorID)
	if errors.Is(err, store.ErrNotFound) {
		return c, nil, fmt.Errorf("connector %s is not enrolled at this gateway (was the gateway's data_dir replaced?); enroll the agent again", id.ConnectorID)
	}
	if err != nil {
		return c, nil, err
	}
	if !c.Revoked.IsZero() {
		return c, nil, revokedError(c)
	}
	if c.Group != id.Group {
		return c, nil, fmt.Errorf("connector %s: the certificate names group %q but the connector is in %q", c.ID, id.Group, c.Group)
	}
	return c, leaf, nil
}

// authenticateSession is the tunnel transports' Authenticate hook: every
// session is mutual TLS, and revocation is checked at every session start.
// The bearer token, if an old agent sends one, is ignored.
func (g *Gateway) authenticateSession(state *tls.ConnectionState, _ string) (tunnel.Identity, error) {
	// Not ended by the gateway's stop (stopContext): a session that comes
	// while the gateway stops is checked as usual and then refused by the
	// tunnel as the gateway shutting down, which sends its agent to
	// another replica; cut short, its check read as the database down.
	ctx, cancel := context.WithTimeout(context.Background(), sessionCheckTimeout)
	defer cancel()
	c, leaf, err := g.identify(ctx, state)
	if err != nil {
		return tunnel.Identity{}, g.agentStoreError(err, "session", state)
	}
	return tunnel.Identity{
		ConnectorID: c.ID, Group: c.Group, CertSerial: leaf.SerialNumber.Text(16), CertExpires: leaf.NotAfter,
	}, nil
}

// maxSessionsPerConnector bounds the sessions one enrolled connector may
// hold at once. An agent opens at most 64 (its connections) and, while it
// reconnects, briefly holds some old ones too; a connector's key used by
// many agents at once, or by someone who opens sessions in a loop, cannot
// make the gateway hold more.
const maxSessionsPerConnector = 256

// addSession registers a session the tunnel accepted, or closes it when its
// connector already holds maxSessionsPerConnector sessions or was revoked
// since authenticateSession checked it. It reports whether it kept s.
func (g *Gateway) addSession(s tunnel.Session) bool {
	held, ok := g.registry.Add(s)
	if ok {
		c, ok := g.recheck(s)
		if ok {
			g.watchExpiry(s)
			if info := s.Info(); info.CertSerial != "" && info.CertSerial == c.CertSerial {
				g.retireOlder(s)
			}
		}
		return ok
	}
	info := s.Info()
	g.log.Warn("agent refused: too many sessions for one connector",
		zap.String("connector", info.ConnectorID), zap.String("group", info.Group),
		zap.String("agent", info.AgentName), zap.String("remote", info.RemoteAddr),
		zap.Int("sessions", held),
		zap.String("hint", "an agent opens at most 64; is this connector's key in use by several agents? "+
			"Enroll each agent with its own token, or revoke the connector"))
	s.Close(fmt.Errorf("connector %s already holds %d sessions, the most one connector may", info.ConnectorID, held))
	return false
}

// recheck closes a session that was just registered if its connector has
// been revoked, or its certificate retired, since the session was
// authenticated. Between the authentication and the registration the
// transport waits for the agent's hello (up to 10 s): a Revoke in that
// window writes the store, then closes the registered sessions, and finds
// this one not registered yet (likewise a session with the newest
// certificate retires the registered older ones). Checking the store again
// after registering leaves no gap: either Revoke's close sees the session,
// or this read sees the revocation. A store that does not answer closes
// the session too, as it would refuse a new one. It returns the connector
// and whether s stays open.
func (g *Gateway) recheck(s tunnel.Session) (store.Connector, bool) {
	info := s.Info()
	if info.ConnectorID == "" {
		return store.Connector{}, true
	}
	ctx, cancel := g.stopContext(trustTimeout)
	defer cancel()
	c, err := g.store.Connector(ctx, info.ConnectorID)
	msg := "agent refused: revoked"
	var storeErr error // logged, not sent: the driver's words name the database's host, port and user
	switch {
	case err != nil && g.storeSilent(err):
		storeErr = err
		msg, err = "agent refused: revocation not checked", fmt.Errorf("connector %s: revocation not checked: %w", info.ConnectorID, errStoreDown)
	case err != nil:
		msg, err = "agent refused: revocation not checked", fmt.Errorf("connector %s: checking revocation: %w", info.ConnectorID, err)
	case !c.Revoked.IsZero():
		err = revokedError(c)
	case c.CertInUse && info.CertSerial != "" && info.CertSerial != c.CertSerial:
		msg, err = "agent refused: certificate retired", retiredError(c, info.CertSerial)
	default:
		return c, true
	}
	fields := []zap.Field{zap.String("reason", err.Error()), zap.String("connector", info.ConnectorID),
		zap.String("remote", info.RemoteAddr)}
	if storeErr != nil {
		fields = append(fields, zap.NamedError("store_error", storeErr))
	}
	g.log.Warn(msg, fields...)
	s.Close(err)
	g.registry.Remove(s)
	return c, false
}

// configToken is a pre-provisioned enrollment token from the gateway
// config: reusable and without expiry, so existing agent configs with
// `token:` keep working (they enroll themselves once).
type configToken struct {
	sum   [32]byte
	group string
}

// Errors of checkToken and spendToken, shown to the agent.
var (
	errTokenUnknown = errors.New("enrollment token unknown")
	errTokenUsed    = errors.New("enrollment token already used")
	errTokenExpired = errors.New("enrollment token expired")
)

// enrollToken is an enrollment token that checkToken found usable.
type enrollToken struct {
	sum    [32]byte
	group  string
	id     string // "config" for tokens from the gateway config
	config bool   // from the gateway config: reusable, not in the store
}

// checkToken finds an enrollment token with a use left, without spending
// it: Enroll spends it only in the transaction that records the connector
// (spendToken), so a failure on the way (issuing the certificate, the
// store) leaves a single-use token usable.
func (g *Gateway) checkToken(ctx context.Context, token string) (enrollToken, error) {
	if token == "" {
		return enrollToken{}, errTokenUnknown
	}
	sum := sha256.Sum256([]byte(token))
	found := 0
	var group string
	for _, t := range g.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			group, found = t.group, 1
		}
	}
	if found == 1 {
		return enrollToken{sum: sum, group: group, id: "config", config: true}, nil
	}
	t, err := g.store.CheckToken(ctx, sum, g.now())
	if err != nil {
		return enrollToken{}, tokenError(err)
	}
	return enrollToken{sum: sum, group: t.Group, id: t.ID}, nil
}

// addConnector records a newly enrolled connector and spends one use of
// its token in the same transaction (config tokens are not spent).
func (g *Gateway) addConnector(ctx context.Context, t enrollToken, c store.Connector) error {
	if t.config {
		return g.store.AddConnector(ctx, c)
	}
	_, err := g.store.EnrollConnector(ctx, t.sum, g.now(), c)
	return tokenError(err)
}

// tokenError turns the store's token errors into the ones shown to the
// agent; others pass unchanged.
func tokenError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errTokenUnknown
	case errors.Is(err, store.ErrTokenUsedUp):
		return errTokenUsed
	case errors.Is(err, store.ErrTokenExpired):
		return errTokenExpired
	}
	return err
}

// isTokenRefusal reports whether err refuses the agent's token (rather
// than being the gateway's own failure).
func isTokenRefusal(err error) bool {
	return errors.Is(err, errTokenUnknown) || errors.Is(err, errTokenUsed) || errors.Is(err, errTokenExpired)
}

// NewToken makes a random enrollment token: "spt_" and 32 random bytes,
// base64url.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "spt_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Revoke revokes a connector: its live sessions are closed at once, and
// its reconnects and renewals are refused with `revoked`. A connector
// revoked already (before, or by another revoke at the same instant) keeps
// its first revocation, and is neither logged as revoked nor counted again;
// the sessions of it that this replica holds are closed all the same. It
// returns the connector and how many sessions were closed (see revoke).
func (g *Gateway) Revoke(ctx context.Context, id string) (store.Connector, int, error) {
	c, n, _, err := g.revoke(ctx, id)
	return c, n, err
}
