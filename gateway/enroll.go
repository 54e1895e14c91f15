package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// enrollService serves Enroll and Renew on the tunnel listener.
type enrollService struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
	g *Gateway
}

// Limits on what an agent may send in enrollment fields.
const (
	maxCSRBytes   = 16 << 10
	maxFieldBytes = 256
)

// plainFields reports whether each field is at most maxFieldBytes of UTF-8
// without control or format characters. The fields are stored and shown by
// the admin API and `sallyport connector list`, where escape sequences or
// line breaks would rewrite an administrator's terminal or forge lines,
// and format characters would disguise a name: bidirectional overrides
// (U+202E) show it reordered, zero-width ones (U+200B) make a name that
// reads as another connector's without being the same (so the same-name
// warning stays silent). The line and paragraph separators (U+2028,
// U+2029) break lines in some viewers.
func plainFields(fields ...string) bool {
	for _, f := range fields {
		if len(f) > maxFieldBytes || !utf8.ValidString(f) {
			return false
		}
		for _, r := range f {
			if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
				return false
			}
		}
	}
	return true
}

// errPlainFields refuses fields that plainFields does not pass.
var errPlainFields = fmt.Errorf("the agent's name, version and platform must each be at most %d bytes "+
	"of text without control or format characters (such as U+202E or U+200B; check the agent's name setting)", maxFieldBytes)

func peerInfo(ctx context.Context) (addr, ip string, state *tls.ConnectionState) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", "", nil
	}
	addr = p.Addr.String()
	ip = addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		ip = h
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		state = &ti.State
	}
	return addr, ip, state
}

// errEnrollStoreDown answers an enrollment that failed before anything was
// recorded because the store did not answer (store.Unavailable).
var errEnrollStoreDown = grpctunnel.TokenUnspentError(grpccodes.Unavailable, storeDownText+"; the token was not spent; try again")

// Enroll exchanges an enrollment token and a CSR for a client certificate.
func (e *enrollService) Enroll(ctx context.Context, req *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	g := e.g
	addr, ip, _ := peerInfo(ctx)
	log := g.log.Named("enroll").With(zap.String("remote", addr))
	release, err := g.limiter.acquire(ctx, ip)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	defer release()
	if g.limiter.blocked(ip) {
		log.Warn("enrollment refused: too many failed attempts from this address")
		return nil, status.Error(grpccodes.ResourceExhausted,
			"too many failed enrollment attempts from this address; wait a minute, then check the token")
	}
	fail := func(code grpccodes.Code, err error) error {
		if g.limiter.fail(ip) {
			log.Warn("enrollment attempts from this address are now rate-limited",
				zap.Int("failures", g.limiter.maxFailures()), zap.Duration("window", g.limiter.windowLen()))
		}
		log.Warn("enrollment refused", zap.String("reason", err.Error()))
		return status.Error(code, err.Error())
	}
	if len(req.GetCsr()) > maxCSRBytes {
		return nil, fail(grpccodes.InvalidArgument, fmt.Errorf("enrollment request refused: the CSR is larger than %d bytes", maxCSRBytes))
	}
	if !plainFields(req.GetName(), req.GetVersion(), req.GetPlatform()) {
		return nil, fail(grpccodes.InvalidArgument, errPlainFields)
	}
	// The CSR is checked before the token is spent, so a bad request does
	// not use up a single-use token.
	csr, err := pki.CheckCSR(req.GetCsr())
	if err != nil {
		return nil, fail(grpccodes.InvalidArgument, err)
	}
	// The token is checked now and spent only with the connector's record
	// (addConnector), so the gateway's own failures in between (issuing,
	// the store) leave it usable: the agent may simply try again.
	tok, err := g.checkToken(ctx, req.GetToken())
	if err != nil {
		if isTokenRefusal(err) {
			return nil, fail(grpccodes.Unauthenticated, err)
		}
		log.Error("enrollment failed", zap.Error(err))
		if store.Unavailable(err) {
			return nil, errEnrollStoreDown
		}
		return nil, status.Error(grpccodes.Internal, "the gateway could not check the token; try again, and see the gateway's log")
	}
	group := tok.group
	id := pki.Identity{ConnectorID: newID(), Group: group}
	issued, err := g.authority.Issue(ctx, csr, id)
	if err != nil {
		log.Error("enrollment failed; the token was not spent", zap.Error(err))
		if store.Unavailable(err) {
			return nil, errEnrollStoreDown
		}
		return nil, grpctunnel.TokenUnspentError(grpccodes.Internal, "the gateway could not issue a certificate (the token was not spent); "+
			"try again, and see the gateway's log")
	}
	name := req.GetName()
	if name == "" {
		name = id.ConnectorID
	}
	err = g.recordEnrollment(ctx, tok, store.Connector{
		ID: id.ConnectorID, Name: name, Group: group, Version: req.GetVersion(), Platform: req.GetPlatform(),
		Enrolled: g.now(), CertSerial: issued.Serial, CertExpires: issued.NotAfter,
	})
	if isTokenRefusal(err) {
		// Another enrollment took the token's last use meanwhile; the
		// certificate just issued is never handed out.
		return nil, fail(grpccodes.Unauthenticated, err)
	}
	if err != nil {
		// A store that failed may still have applied the write (a commit
		// whose answer was lost with the connection): the connector's
		// record says which.
		c, cerr := g.store.Connector(ctx, id.ConnectorID)
		switch {
		case cerr == nil && c.CertSerial == issued.Serial:
			log.Warn("the store reported an error for a connector it recorded (an answer lost on the way?); enrolling it",
				zap.String("connector", id.ConnectorID), zap.Error(err))
			err = nil
		case errors.Is(cerr, store.ErrNotFound):
			log.Error("enrollment failed; the token was not spent", zap.Error(err))
			if store.Unavailable(err) {
				return nil, errEnrollStoreDown
			}
			return nil, grpctunnel.TokenUnspentError(grpccodes.Internal, "the gateway could not record the connector (the token was not spent); "+
				"try again, and see the gateway's log")
		default:
			log.Error("enrollment failed, and whether the store recorded the connector is unknown",
				zap.String("connector", id.ConnectorID), zap.Error(err), zap.NamedError("check", cerr))
			if store.Unavailable(err) && store.Unavailable(cerr) {
				return nil, status.Error(grpccodes.Unavailable, storeDownText+", and whether it recorded the "+
					"enrollment is unknown; try again, and if the gateway says the token was used, create a new one")
			}
			return nil, status.Error(grpccodes.Internal, "the gateway could not record the connector, and its store did not "+
				"say whether the token was spent; try again, and if the gateway says the token was used, create a new one "+
				"(see the gateway's log)")
		}
	}
	log.Info("connector enrolled", zap.String("connector", id.ConnectorID), zap.String("name", name),
		zap.String("group", group), zap.String("token_id", tok.id), zap.Time("cert_expires", issued.NotAfter))
	same := g.sameNameConnectors(ctx, log, id.ConnectorID, group, name)
	return &tunnelv1.EnrollResponse{
		ConnectorId: id.ConnectorID, Group: group, Certificate: issued.DER, CaBundle: issued.Bundle,
		SameNameConnectorIds: same,
	}, nil
}

// namedConnectorStore is a Store that finds connectors by name; *store.DB
// is one. Without it (a Store wrapped by a test) the gateway reads the
// whole list.
type namedConnectorStore interface {
	// NamedConnectors lists the unrevoked connectors of group called
	// name, oldest first.
	NamedConnectors(ctx context.Context, group, name string) ([]store.Connector, error)
}

// sameNameConnectors returns the ids of the unrevoked connectors of group
// other than the newly enrolled id that are called name, and logs a
// warning naming them. Enrolling under a name in use is not refused: an
// agent installed again under its old name is normal, but its predecessor
// stays enrolled (and its certificate valid) until it is revoked. A store
// that cannot say is logged and the enrollment stands.
func (g *Gateway) sameNameConnectors(ctx context.Context, log *zap.Logger, id, group, name string) []string {
	if name == id { // the agent sent no name
		return nil
	}
	var cs []store.Connector
	var err error
	if ns, ok := g.store.(namedConnectorStore); ok {
		cs, err = ns.NamedConnectors(ctx, group, name)
	} else {
		cs, err = g.store.Connectors(ctx)
	}
	if err != nil {
		log.Warn("could not check for other connectors with the enrolled connector's name",
			zap.String("connector", id), zap.Error(err))
		return nil
	}
	var ids []string
	for _, c := range cs {
		if c.ID != id && c.Group == group && c.Name == name && c.Revoked.IsZero() {
			ids = append(ids, c.ID)
		}
	}
	if len(ids) > 0 {
		log.Warn("connector enrolled under a name that other connectors of its group have; if it replaces them, "+
			"revoke them with `sallyport connector revoke ID`",
			zap.String("connector", id), zap.String("name", name), zap.String("group", group),
			zap.Strings("same_name_connectors", ids))
	}
	return ids
}

// configTokenStore is a Store that counts the enrollments made with the
// gateway config's tokens (tunnel.tokens), which have no row of their own;
// *store.DB is one. Without it they are recorded uncounted.
type configTokenStore interface {
	// EnrollConfigConnector records c and counts a use of the config
	// token whose SHA-256 is hash, both or neither.
	EnrollConfigConnector(ctx context.Context, hash [32]byte, c store.Connector) error
	// ConfigTokenUses returns the count of each config token used so far.
	ConfigTokenUses(ctx context.Context) (map[[32]byte]int, error)
}

// recordEnrollment records the connector c enrolled with tok and spends
// (or, for a config token, counts) a use of it in the same transaction.
func (g *Gateway) recordEnrollment(ctx context.Context, tok enrollToken, c store.Connector) error {
	if cs, ok := g.store.(configTokenStore); ok && tok.config {
		return cs.EnrollConfigConnector(ctx, tok.sum, c)
	}
	return g.addConnector(ctx, tok, c)
}

// Renew issues a new certificate to an enrolled, unrevoked connector,
// authenticated by its current client certificate.
func (e *enrollService) Renew(ctx context.Context, req *tunnelv1.RenewRequest) (*tunnelv1.RenewResponse, error) {
	g := e.g
	addr, _, state := peerInfo(ctx)
	log := g.log.Named("enroll").With(zap.String("remote", addr))
	c, _, err := g.identify(ctx, state)
	if err != nil {
		if err = g.agentStoreError(err, "renewal", state); errors.Is(err, errStoreDown) {
			return nil, status.Error(grpccodes.Unavailable, err.Error())
		}
		log.Warn("renewal refused", zap.String("reason", err.Error()))
		if errors.Is(err, tunnel.ErrRevoked) {
			return nil, status.Error(grpccodes.PermissionDenied, err.Error())
		}
		return nil, status.Error(grpccodes.Unauthenticated, err.Error())
	}
	if len(req.GetCsr()) > maxCSRBytes {
		return nil, status.Errorf(grpccodes.InvalidArgument, "renewal request refused: the CSR is larger than %d bytes", maxCSRBytes)
	}
	if !plainFields(req.GetVersion(), req.GetPlatform()) {
		return nil, status.Error(grpccodes.InvalidArgument, "renewal request refused: "+errPlainFields.Error())
	}
	csr, err := pki.CheckCSR(req.GetCsr())
	if err != nil {
		log.Warn("renewal refused", zap.String("connector", c.ID), zap.String("reason", err.Error()))
		return nil, status.Error(grpccodes.InvalidArgument, err.Error())
	}
	issued, err := g.authority.Issue(ctx, csr, pki.Identity{ConnectorID: c.ID, Group: c.Group})
	if err != nil {
		log.Error("renewal failed", zap.Error(err))
		if store.Unavailable(err) {
			return nil, status.Error(grpccodes.Unavailable, errStoreDown.Error())
		}
		return nil, status.Error(grpccodes.Internal, "the gateway could not issue a certificate; see its log")
	}
	c, err = g.store.RenewConnector(ctx, c.ID, issued.Serial, issued.NotAfter, req.GetVersion(), req.GetPlatform())
	if err != nil {
		log.Error("renewal failed", zap.Error(err))
		if store.Unavailable(err) {
			return nil, status.Error(grpccodes.Unavailable, errStoreDown.Error())
		}
		return nil, status.Error(grpccodes.Internal, "the gateway could not record the renewal; see its log")
	}
	if !c.Revoked.IsZero() { // revoked while we were signing
		return nil, status.Errorf(grpccodes.PermissionDenied, "%s: connector %s was revoked", tunnel.ErrRevoked, c.ID)
	}
	log.Info("connector certificate renewed", zap.String("connector", c.ID), zap.String("name", c.Name),
		zap.Time("cert_expires", issued.NotAfter))
	return &tunnelv1.RenewResponse{Certificate: issued.DER, CaBundle: issued.Bundle}, nil
}
