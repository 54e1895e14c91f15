package preauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// keyRefetchInterval is how often a token that names a key the gateway
// does not have may make it fetch the provider's keys again.
//
// go-oidc's RemoteKeySet fetches the provider's JWKS again for every token
// whose key it does not have, or whose signature does not verify. Anyone
// can send a bearer token with a made-up key id, so anyone could make the
// gateway fetch the JWKS once per request, and a provider that rate-limits
// the gateway for it then fails the real sign-ins. keySet fetches at most
// once per interval instead. Providers publish a new key before or when
// they start signing with it, so a rotation is picked up by the first token
// that uses the new key, or within the interval after an attacker's token.
// ID tokens that the gateway gets from the provider itself, at sign-in and
// refresh, fetch the keys at once: clients cannot make those up.
const keyRefetchInterval = 10 * time.Second

// keyMaxAge is how long fetched keys are used before they are fetched
// again (in the background, using them meanwhile), so that a key the
// provider withdrew, after a leak say, stops being accepted.
const keyMaxAge = time.Hour

// maxJWKSBytes bounds the provider's JWKS document.
const maxJWKSBytes = 1 << 20

// signingAlgs are the JWS algorithms the gateway verifies (go-oidc's list).
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// errKeyFetch begins the errors of fetching the provider's keys.
const errKeyFetch = "fetching keys"

// movedStatus: an endpoint that answers so may have moved (see
// provider.rediscover).
func movedStatus(code int) bool {
	return code == http.StatusNotFound || code == http.StatusGone
}

// keysUnavailableError is a token that could not be verified because the
// provider's keys could not be fetched: the provider's failure, not the
// token's.
type keysUnavailableError struct{ err error }

func (e *keysUnavailableError) Error() string { return e.err.Error() }
func (e *keysUnavailableError) Unwrap() error { return e.err }

// keysUnavailable reports whether verifying a token failed because the
// provider's keys could not be fetched, rather than because of the token.
func keysUnavailable(err error) bool {
	var ke *keysUnavailableError
	return errors.As(err, &ke)
}

// verifyCall is what verify tells keySet.VerifySignature through its
// context, and where it learns why the keys were not there: go-oidc passes
// the errors of VerifySignature on as text only.
type verifyCall struct {
	// fromProvider: the token came from the provider's token endpoint
	// (sign-in, refresh), not from a client, so a key it names that the
	// gateway does not have is fetched without waiting for
	// keyRefetchInterval: a client cannot make up such tokens.
	fromProvider bool
	fetchErr     error // set when fetching the keys failed
}

type verifyCallKey struct{}

// verify checks raw with op's keys (see verifier). A failure to fetch the
// keys is a *keysUnavailableError.
func (p *provider) verify(ctx context.Context, op *discovered, raw string, bearer bool) (*oidc.IDToken, error) {
	call := &verifyCall{fromProvider: !bearer}
	tok, err := p.verifier(op, bearer).Verify(context.WithValue(ctx, verifyCallKey{}, call), raw)
	if err != nil && call.fetchErr != nil {
		return nil, &keysUnavailableError{err: call.fetchErr}
	}
	return tok, err
}

// keySet is a provider's signing keys, fetched from its jwks_uri when a
// token names a key it does not have, at most once per
// keyRefetchInterval, and keyMaxAge after the last fetch. It implements
// oidc.KeySet. Safe for concurrent use.
type keySet struct {
	url string
	svc *Service // its client and clock
	// gone, when set, is told of a fetch that the provider answered 404
	// or 410: the jwks_uri may have moved.
	gone func(error)

	mu        sync.Mutex
	keys      []jose.JSONWebKey // from the last successful fetch; guarded by mu
	fetchedAt time.Time         // end of the last fetch; zero before the first; guarded by mu
	fetchErr  error             // the last fetch's error, nil if it succeeded; guarded by mu
	pending   chan struct{}     // closed when the fetch in flight ends; nil when none; guarded by mu
}

// VerifySignature checks jwt's signature with the key its kid names (every
// key when it names none) and returns the payload.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, signingAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.Lock()
	keys := k.keys
	if k.pending == nil && !k.fetchedAt.IsZero() && k.svc.now().Sub(k.fetchedAt) >= keyMaxAge {
		k.pending = make(chan struct{})
		go k.fetch(k.pending)
	}
	k.mu.Unlock()
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	call, _ := ctx.Value(verifyCallKey{}).(*verifyCall)
	fromProvider := call != nil && call.fromProvider
	if !fromProvider && kid != "" && slices.ContainsFunc(keys, func(key jose.JSONWebKey) bool { return key.KeyID == kid }) {
		// A client's token naming a key we have whose signature does not
		// verify: a forgery, which new keys would not change. (One from
		// the provider's token endpoint fetches the keys again: a provider
		// may rotate its key under the same id.)
		return nil, errors.New("the signature does not verify with the provider's key " + kid)
	}
	keys, err = k.refetch(ctx, fromProvider)
	if err != nil {
		if call != nil {
			call.fetchErr = err
		}
		return nil, err
	}
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	return nil, fmt.Errorf("no key %q among the provider's keys that verifies the signature (they are fetched again at most every %s)",
		kid, keyRefetchInterval)
}

func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) ([]byte, bool) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&keys[i]); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// refetch returns the provider's keys as fetched now, or, unless now, as
// fetched within keyRefetchInterval (with that fetch's error). One fetch
// runs at a time, bounded by providerTimeout; a caller waits for it at
// most until ctx ends.
func (k *keySet) refetch(ctx context.Context, now bool) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	if !now && k.pending == nil && !k.fetchedAt.IsZero() && k.svc.now().Sub(k.fetchedAt) < keyRefetchInterval {
		keys, err := k.keys, k.fetchErr
		k.mu.Unlock()
		return keys, err
	}
	done := k.pending
	if done == nil {
		done = make(chan struct{})
		k.pending = done
		go k.fetch(done)
	}
	k.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%s from %s: %w", errKeyFetch, k.url, context.Cause(ctx))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys, k.fetchErr
}

// fetch fetches the keys and closes done. A failed fetch keeps the keys
// fetched before.
func (k *keySet) fetch(done chan struct{}) {
	keys, err := k.get()
	k.mu.Lock()
	k.fetchedAt, k.fetchErr = k.svc.now(), err
	if err == nil {
		k.keys = keys
	}
	k.pending = nil
	k.mu.Unlock()
	close(done)
	if err != nil {
		k.svc.log.Warn("cannot fetch the OIDC provider's signing keys; tokens signed with a key the gateway does not have yet "+
			"are refused until a fetch succeeds (tried again at most every "+keyRefetchInterval.String()+")",
			zap.String("jwks_uri", k.url), zap.Error(err))
	}
}

// get fetches and parses the JWKS. Keys of types or algorithms the gateway
// cannot use, and encryption keys, are skipped (RFC 7517 §5).
func (k *keySet) get() ([]jose.JSONWebKey, error) {
	ctx, cancel := k.svc.ctx(context.Background())
	defer cancel()
	if k.url == "" {
		return nil, errors.New(errKeyFetch + ": the provider's discovery document has no jwks_uri")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%s from %s: %w", errKeyFetch, k.url, err)
	}
	req.Header.Set("Accept", "application/json")
	res, err := k.svc.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", errKeyFetch, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes))
	if err != nil {
		return nil, fmt.Errorf("%s from %s: %w", errKeyFetch, k.url, err)
	}
	if res.StatusCode != http.StatusOK {
		err := fmt.Errorf("%s from %s: %s", errKeyFetch, k.url, res.Status)
		if movedStatus(res.StatusCode) && k.gone != nil {
			k.gone(err)
		}
		return nil, err
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("%s from %s: not a JWKS: %w", errKeyFetch, k.url, err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) != nil || !key.Valid() || !key.IsPublic() || key.Use == "enc" {
			continue
		}
		keys = append(keys, key)
	}
	return keys, nil
}
