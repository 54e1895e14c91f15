package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/tunnel"
)

// Store keeps what must survive a restart: the connector CA, enrolled
// connectors and enrollment tokens. store.SQLite implements it; a
// PostgreSQL store for several replicas would implement the same methods.
type Store interface {
	pki.CAStore
	CreateToken(ctx context.Context, t store.Token) error
	Tokens(ctx context.Context) ([]store.Token, error)
	DeleteToken(ctx context.Context, id string) error
	UseToken(ctx context.Context, hash [32]byte, now time.Time) (store.Token, error)
	AddConnector(ctx context.Context, c store.Connector) error
	Connector(ctx context.Context, id string) (store.Connector, error)
	Connectors(ctx context.Context) ([]store.Connector, error)
	RenewConnector(ctx context.Context, id, serial string, expires time.Time, version, platform string) (store.Connector, error)
	RevokeConnector(ctx context.Context, id string, at time.Time) (store.Connector, error)
	Ping(ctx context.Context) error
}

// trustTimeout bounds one store operation on a session start or enrollment.
const trustTimeout = 10 * time.Second

func (g *Gateway) now() time.Time {
	if g.cfg.Now != nil {
		return g.cfg.Now()
	}
	return time.Now()
}

// verifyTunnelConn is the tunnel listener's VerifyConnection: a client
// certificate, when there is one, must chain to the connector CA and be
// valid now. Connections without one may only enroll (the session hook
// refuses them).
func (g *Gateway) verifyTunnelConn(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), trustTimeout)
	defer cancel()
	if _, _, err := g.authority.Identify(ctx, &cs); err != nil {
		g.log.Warn("agent refused at TLS", zap.String("reason", err.Error()),
			zap.String("subject", cs.PeerCertificates[0].Subject.String()))
		return err
	}
	return nil
}

// identify decides which enrolled connector a TLS connection belongs to
// and refuses revoked and unknown ones.
func (g *Gateway) identify(ctx context.Context, state *tls.ConnectionState) (store.Connector, error) {
	id, _, err := g.authority.Identify(ctx, state)
	if errors.Is(err, pki.ErrNoCertificate) {
		return store.Connector{}, errors.New("no client certificate: this gateway accepts only enrolled agents; " +
			"enroll with `sallyport agent enroll`, or give the agent `token:` and `data_dir:` so it enrolls itself")
	}
	if err != nil {
		return store.Connector{}, err
	}
	c, err := g.store.Connector(ctx, id.ConnectorID)
	if errors.Is(err, store.ErrNotFound) {
		return c, fmt.Errorf("connector %s is not enrolled at this gateway (was the gateway's data_dir replaced?); enroll the agent again", id.ConnectorID)
	}
	if err != nil {
		return c, err
	}
	if !c.Revoked.IsZero() {
		return c, fmt.Errorf("%w: connector %s was revoked at %s; enroll it again with a new token if it should come back",
			tunnel.ErrRevoked, c.ID, c.Revoked.Format(time.RFC3339))
	}
	if c.Group != id.Group {
		return c, fmt.Errorf("connector %s: the certificate names group %q but the connector is in %q", c.ID, id.Group, c.Group)
	}
	return c, nil
}

// authenticateSession is the tunnel transports' Authenticate hook: every
// session is mutual TLS, and revocation is checked at every session start.
// The bearer token, if an old agent sends one, is ignored.
func (g *Gateway) authenticateSession(state *tls.ConnectionState, _ string) (tunnel.Identity, error) {
	ctx, cancel := context.WithTimeout(context.Background(), trustTimeout)
	defer cancel()
	c, err := g.identify(ctx, state)
	if err != nil {
		return tunnel.Identity{}, err
	}
	return tunnel.Identity{ConnectorID: c.ID, Group: c.Group}, nil
}

// maxSessionsPerConnector bounds the sessions one enrolled connector may
// hold at once. An agent opens at most 64 (its connections) and, while it
// reconnects, briefly holds some old ones too; a connector's key used by
// many agents at once, or by someone who opens sessions in a loop, cannot
// make the gateway hold more.
const maxSessionsPerConnector = 256

// addSession registers a session the tunnel accepted, or closes it when its
// connector already holds maxSessionsPerConnector sessions or was revoked
// since authenticateSession checked it.
func (g *Gateway) addSession(s tunnel.Session) {
	held, ok := g.registry.Add(s)
	if ok {
		g.recheckRevoked(s)
		return
	}
	info := s.Info()
	g.log.Warn("agent refused: too many sessions for one connector",
		zap.String("connector", info.ConnectorID), zap.String("group", info.Group),
		zap.String("agent", info.AgentName), zap.String("remote", info.RemoteAddr),
		zap.Int("sessions", held),
		zap.String("hint", "an agent opens at most 64; is this connector's key in use by several agents? "+
			"Enroll each agent with its own token, or revoke the connector"))
	s.Close(fmt.Errorf("connector %s already holds %d sessions, the most one connector may", info.ConnectorID, held))
}

// recheckRevoked closes a session that was just registered if its connector
// has been revoked since the session was authenticated. Between the
// authentication and the registration the transport waits for the agent's
// hello (up to 10 s): a Revoke in that window writes the store, then closes
// the registered sessions, and finds this one not registered yet. Checking
// the store again after registering leaves no gap: either Revoke's close
// sees the session, or this read sees the revocation. A store that does
// not answer closes the session too, as it would refuse a new one.
func (g *Gateway) recheckRevoked(s tunnel.Session) {
	info := s.Info()
	if info.ConnectorID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), trustTimeout)
	defer cancel()
	c, err := g.store.Connector(ctx, info.ConnectorID)
	msg := "agent refused: revoked"
	switch {
	case err != nil:
		msg, err = "agent refused: revocation not checked", fmt.Errorf("connector %s: checking revocation: %w", info.ConnectorID, err)
	case !c.Revoked.IsZero():
		err = fmt.Errorf("%w: connector %s was revoked at %s; enroll it again with a new token if it should come back",
			tunnel.ErrRevoked, c.ID, c.Revoked.Format(time.RFC3339))
	default:
		return
	}
	g.log.Warn(msg, zap.String("reason", err.Error()), zap.String("connector", info.ConnectorID),
		zap.String("remote", info.RemoteAddr))
	s.Close(err)
	g.registry.Remove(s)
}

// configToken is a pre-provisioned enrollment token from the gateway
// config: reusable and without expiry, so existing agent configs with
// `token:` keep working (they enroll themselves once).
type configToken struct {
	sum   [32]byte
	group string
}

// Errors of useToken, shown to the agent.
var (
	errTokenUnknown = errors.New("enrollment token unknown")
	errTokenUsed    = errors.New("enrollment token already used")
	errTokenExpired = errors.New("enrollment token expired")
)

// useToken spends one use of an enrollment token and returns its group and
// id ("config" for tokens from the gateway config).
func (g *Gateway) useToken(ctx context.Context, token string) (group, id string, err error) {
	if token == "" {
		return "", "", errTokenUnknown
	}
	sum := sha256.Sum256([]byte(token))
	found := 0
	for _, t := range g.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			group, found = t.group, 1
		}
	}
	if found == 1 {
		return group, "config", nil
	}
	t, err := g.store.UseToken(ctx, sum, g.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", "", errTokenUnknown
	case errors.Is(err, store.ErrTokenUsedUp):
		return "", "", errTokenUsed
	case errors.Is(err, store.ErrTokenExpired):
		return "", "", errTokenExpired
	case err != nil:
		return "", "", err
	}
	return t.Group, t.ID, nil
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
// its reconnects and renewals are refused with `revoked`.
func (g *Gateway) Revoke(ctx context.Context, id string) (store.Connector, int, error) {
	c, err := g.store.RevokeConnector(ctx, id, g.now())
	if err != nil {
		return c, 0, err
	}
	g.metrics.connectorRevoked(id)
	n := g.registry.CloseConnector(id, fmt.Errorf("%w: connector %s", tunnel.ErrRevoked, id))
	g.log.Info("connector revoked", zap.String("connector", id), zap.String("name", c.Name),
		zap.String("group", c.Group), zap.Int("sessions_closed", n))
	return c, n, nil
}
