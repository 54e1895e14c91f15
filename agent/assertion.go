package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sallyport/sallyport/internal/assertion"
	keysv1 "github.com/sallyport/sallyport/proto/sallyport/keys/v1"
)

// AssertionError refuses an exchange whose identity assertion is missing or
// does not verify (verify_assertion). The backend is never called.
type AssertionError struct{ Err error }

func (e *AssertionError) Error() string { return "identity assertion refused: " + e.Err.Error() }
func (e *AssertionError) Unwrap() error { return e.Err }

// How the agent keeps the gateway's assertion keys.
const (
	keysRefetchMin = 5 * time.Second  // least time between fetches for an unknown key
	keysMaxAge     = 10 * time.Minute // keys older than this are fetched again (old ones kept on failure)
	keysTimeout    = 10 * time.Second
)

// assertionVerifier checks X-Sallyport-Assertion before the backend is
// called. It fetches the gateway's public keys with KeysService on the
// tunnel listener: at the first exchange, when an assertion names a key it
// does not have (the gateway rotated), and when its copy is old.
type assertionVerifier struct {
	fetch func(ctx context.Context) ([]byte, error)
	now   func() time.Time
	log   *zap.Logger

	mu      sync.Mutex
	set     *jose.JSONWebKeySet // guarded by mu
	fetched time.Time           // last fetch attempt; guarded by mu
}

// verify checks req's assertion for app and replaces the identity headers,
// in every spelling, with the verified claims.
func (v *assertionVerifier) verify(req *http.Request, app string) error {
	tok := req.Header.Get(assertion.Header)
	if tok == "" {
		return &AssertionError{errors.New("the request carries no X-Sallyport-Assertion (is the app published with preauth: oidc, " +
			"or is it one of the app's public_paths? agents with verify_assertion must serve only apps with sign-in " +
			"and no public_paths)")}
	}
	set, err := v.keys(req.Context(), false)
	if err != nil {
		return &AssertionError{err}
	}
	c, err := assertion.Verify(tok, set, app, v.now())
	if errors.Is(err, assertion.ErrUnknownKey) {
		if set, err = v.keys(req.Context(), true); err != nil {
			return &AssertionError{err}
		}
		c, err = assertion.Verify(tok, set, app, v.now())
	}
	if err != nil {
		return &AssertionError{err}
	}
	// Only the verified claims reach the backend: every other spelling of
	// an identity header (X_Sallyport_User, X.Sallyport.User, which some
	// servers fold onto X-Sallyport-User) goes, whatever the gateway let
	// through.
	assertion.StripHeaders(req.Header)
	assertion.SetHeaders(req.Header, c.Subject, c.Email, c.Groups, tok)
	return nil
}

// keys returns the key set, fetching it when there is none, when it is old,
// or (unknownKey) when an assertion named a key it lacks.
func (v *assertionVerifier) keys(ctx context.Context, unknownKey bool) (*jose.JSONWebKeySet, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	age := now.Sub(v.fetched)
	due := v.set == nil && age >= time.Second || unknownKey && age >= keysRefetchMin || v.set != nil && age >= keysMaxAge
	if !due {
		if v.set == nil {
			return nil, errors.New("the gateway's assertion keys are not available yet")
		}
		return v.set, nil
	}
	v.fetched = now
	fctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	raw, err := v.fetch(fctx)
	var set jose.JSONWebKeySet
	if err == nil {
		err = json.Unmarshal(raw, &set)
	}
	if err == nil && len(set.Keys) == 0 {
		err = errors.New("the gateway has no assertion keys (no app with preauth: oidc)")
	}
	if err != nil {
		v.log.Warn("cannot fetch the gateway's assertion keys", zap.Error(err))
		if v.set != nil {
			return v.set, nil
		}
		return nil, fmt.Errorf("fetch the gateway's assertion keys: %w", err)
	}
	v.set = &set
	return v.set, nil
}

// grpcKeysFetcher fetches keys over a gRPC connection to the tunnel
// listener, made on first use and closed by close.
type grpcKeysFetcher struct {
	addr string
	tls  *tls.Config
	// dial opens the TCP connection (through the agent's outbound proxy
	// when it has one).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu sync.Mutex
	cc *grpc.ClientConn // guarded by mu
}

func (f *grpcKeysFetcher) fetch(ctx context.Context) ([]byte, error) {
	f.mu.Lock()
	if f.cc == nil {
		cfg := f.tls
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		cc, err := grpc.NewClient("passthrough:///"+f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return f.dial(ctx, "tcp", addr) }))
		if err != nil {
			f.mu.Unlock()
			return nil, err
		}
		f.cc = cc
	}
	cc := f.cc
	f.mu.Unlock()
	res, err := keysv1.NewKeysServiceClient(cc).GetAssertionKeys(ctx, &keysv1.GetAssertionKeysRequest{})
	if err != nil {
		return nil, err
	}
	return res.GetJwks(), nil
}

func (f *grpcKeysFetcher) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cc != nil {
		f.cc.Close()
		f.cc = nil
	}
}
