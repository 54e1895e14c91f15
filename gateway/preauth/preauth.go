// Package preauth signs users in with OpenID Connect before their requests
// reach an app, and says who they are: the gateway asks Authorize about
// every request to an app with `preauth: oidc`, serves the sign-in callback,
// sign-out and JWKS endpoints through ServeEndpoint, and sets the identity
// headers with SetIdentityHeaders.
//
// Browser flow: a page load without a session is redirected to the
// provider (authorization code flow, PKCE S256, nonce). The state, nonce,
// PKCE verifier and return path travel in a pre-login cookie sealed with
// AES-GCM whose name is derived from the state and whose path is the
// callback, so the state is bound to the browser that started the sign-in
// (under TLS also through __Host- cookies, see startedHere),
// and a callback is accepted once. A browser keeps at most
// maxPendingSignIns of them (see pending.go). The callback on the app's own
// host verifies the ID token, sets the session cookie (AES-GCM sealed,
// HttpOnly, Secure under TLS, SameSite=Lax, host-only unless cookie_domain)
// and returns to the original path (same-origin relative paths only). A
// callback opened again by a signed-in browser (the back button) leads to
// "/".
//
// Sessions end SessionLifetime after sign-in. When the provider gave a
// refresh token, the session is refreshed with it once the ID token has
// expired, so a user disabled at the provider loses access within a token
// lifetime; without one the session lasts its lifetime. A session is
// renewed once across the gateways on one store, and the renewed session
// reaches every request that carries the old cookie (see refresh.go), as
// providers that rotate refresh tokens require. Signing out ends
// the session everywhere it can (see signout.go).
//
// Other clients send `Authorization: Bearer <JWT>` from the same issuer,
// verified against the provider's JWKS (issuer, audience, expiry). Requests
// that are not page loads get 401 with WWW-Authenticate instead of a
// redirect.
package preauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/oauth2"

	"github.com/sallyport/sallyport/internal/assertion"
)

// Defaults: what zero fields mean.
const (
	DefaultSessionLifetime = 12 * time.Hour
	DefaultGroupsClaim     = "groups"
	providerTimeout        = 10 * time.Second
	// discoveryRetry is how long a failed discovery is remembered before
	// the next request tries again.
	discoveryRetry = 5 * time.Second
	// refreshRetry is how long a refresh that the provider did not answer
	// is remembered before the next request asks the provider again.
	refreshRetry = 5 * time.Second
	// discoveryMaxAge is how long a discovery is used before it is run
	// again, in the background (requests go on with the one they have),
	// so that a provider that moves its endpoints or its jwks_uri is
	// followed without a restart.
	discoveryMaxAge = 24 * time.Hour
	// rediscoverInterval is the least time between two discoveries run
	// because an endpoint of the provider answered 404 or 410 (moved?):
	// an endpoint that is just broken does not make every request
	// discover again.
	rediscoverInterval = time.Minute
)

// ProviderConfig is one OpenID Connect provider.
type ProviderConfig struct {
	Name         string // referenced by Policy.Provider; required
	Issuer       string // issuer URL; required
	ClientID     string // required
	ClientSecret string // empty: a public client (PKCE only)
	// Scopes requested at sign-in (empty → openid, email, profile).
	Scopes []string
	// GroupsClaim is the claim listing the user's groups (empty → "groups").
	GroupsClaim string
	// Audiences accepted in bearer tokens' aud (empty → ClientID).
	Audiences []string
}

// Config configures a Service.
type Config struct {
	Providers []ProviderConfig
	// CookieDomain shares the session cookie with every host under it
	// (sign in once across apps). Empty: host-only cookies.
	CookieDomain string
	// SessionLifetime bounds a session from sign-in (0 → 12h).
	SessionLifetime time.Duration
	// CookieKey seals cookies (KeySize bytes; see LoadOrCreateKey). Required.
	CookieKey []byte
	// Keys signs identity assertions. Required.
	Keys *assertion.KeySet
	// HTTPClient reaches the providers (nil → a client with a 10s timeout
	// that honours HTTPS_PROXY).
	HTTPClient *http.Client
	// Now is the clock (nil → time.Now).
	Now func() time.Time
	// Log receives sign-in events and provider failures (nil → none).
	Log *zap.Logger
}

// Policy is what one app requires.
type Policy struct {
	// Provider names the ProviderConfig users sign in with. Required.
	Provider string
	// Emails, Domains and Groups admit users; all empty admits any
	// signed-in user.
	Emails, Domains, Groups []string
	// PublicPaths skip sign-in: normalised path prefixes matched on
	// segment boundaries against the gateway's normalised path.
	PublicPaths []string
}

// Identity is a signed-in user.
type Identity struct {
	Provider string
	Subject  string
	Email    string // empty when the provider did not vouch for it
	Name     string
	Groups   []string
	Auth     string // "session" or "bearer"
}

// Service is the pre-authentication of a gateway. Safe for concurrent use.
type Service struct {
	cfg       Config
	log       *zap.Logger
	overage   *zap.Logger // log, sampled: groups overage warnings (see identityFrom)
	sealer    *sealer
	client    *http.Client
	providers map[string]*provider
	refresh   refresher
	// refreshStore, when set, shares renewals (see UseRefreshStore);
	// memRefreshes stands in for it otherwise.
	refreshStore RefreshStore
	memRefreshes memRefreshes
	owner        string // names this gateway in the RefreshStore
	signedOut    signedOut
	// signOutStore, when set, shares sign-outs (see UseSignOutStore).
	signOutStore SignOutStore
}

// New checks cfg and builds a Service. Providers are discovered on first
// use, so a provider that is down does not keep the gateway from starting.
func New(cfg Config) (*Service, error) {
	sl, err := newSealer(cfg.CookieKey)
	if err != nil {
		return nil, err
	}
	if cfg.Keys == nil {
		return nil, errors.New("preauth: no assertion key set")
	}
	cfg.CookieDomain = strings.TrimPrefix(strings.ToLower(cfg.CookieDomain), ".")
	s := &Service{cfg: cfg, log: cfg.Log, sealer: sl, client: cfg.HTTPClient, providers: map[string]*provider{},
		owner: newOwner()}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	// A bearer token is checked on every request: an API client whose
	// groups were left out would log one warning per call. The first
	// overageLinesPerMinute a minute are enough to find the cause.
	s.overage = s.log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Minute, overageLinesPerMinute, 0)
	}))
	if s.client == nil {
		s.client = &http.Client{Timeout: providerTimeout, Transport: http.DefaultTransport}
	}
	for _, pc := range cfg.Providers {
		if pc.Name == "" || pc.Issuer == "" || pc.ClientID == "" {
			return nil, fmt.Errorf("preauth: provider %q needs a name, an issuer and a client id", pc.Name)
		}
		if _, dup := s.providers[pc.Name]; dup {
			return nil, fmt.Errorf("preauth: provider %q listed twice", pc.Name)
		}
		s.providers[pc.Name] = &provider{cfg: pc, svc: s}
	}
	return s, nil
}

// CheckPolicy reports an error when p names no known provider.
func (s *Service) CheckPolicy(p *Policy) error {
	if _, ok := s.providers[p.Provider]; !ok {
		return fmt.Errorf("preauth: no provider named %q", p.Provider)
	}
	return nil
}

func (s *Service) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

func (s *Service) sessionLifetime() time.Duration {
	if s.cfg.SessionLifetime <= 0 {
		return DefaultSessionLifetime
	}
	return s.cfg.SessionLifetime
}

// ctx returns a context for provider calls: bounded by providerTimeout
// and by parent (a request's context: a callback whose browser left stops
// its code exchange at once), using s.client. Calls whose result other
// requests share pass context.Background.
func (s *Service) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, providerTimeout)
	ctx = oidc.ClientContext(ctx, s.client)
	return context.WithValue(ctx, oauth2.HTTPClient, s.client), cancel
}

// provider is one provider at run time.
type provider struct {
	cfg ProviderConfig
	svc *Service

	mu       sync.Mutex
	found    *discovered   // nil until discovered; guarded by mu
	failedAt time.Time     // end of the last failed discovery; guarded by mu
	failErr  error         // guarded by mu
	pending  chan struct{} // closed when the discovery in flight ends; nil when none; guarded by mu
	foundAt  time.Time     // end of the discovery that found found; guarded by mu
	// goneAt is when a discovery was last started because an endpoint
	// answered 404 or 410 (see rediscover); guarded by mu.
	goneAt time.Time
	// refreshFailedAt is the end of the last refresh the provider did not
	// answer, refreshErr its error (nil: none to remember); guarded by mu.
	refreshFailedAt time.Time
	refreshErr      error
}

// discovered is what discovery found out about a provider: its metadata
// and its keys. Never changed (the keys update themselves).
type discovered struct {
	*oidc.Provider
	keys *keySet
	algs []string // ID token signing algorithms it announces that the gateway verifies
	// oauth is the client, one per provider: it learns at its first
	// success how the provider wants the client authenticated (HTTP Basic
	// or the form), and does not try both ways on every token request
	// from then on, which would send a refresh token twice.
	oauth *oauth2.Config
}

// discover returns the discovered provider, fetching its metadata on first
// use. One discovery runs at a time, bounded by providerTimeout; a caller
// waits for it at most until its ctx ends. A failure is remembered for
// discoveryRetry from when it ended, so that while the provider is down,
// or does not answer at all, requests fail at once instead of each
// waiting for a discovery of its own. A discovery older than
// discoveryMaxAge is run again in the background; meanwhile, and if it
// fails (tried again after rediscoverInterval), requests go on with the
// one they have.
func (p *provider) discover(ctx context.Context) (*discovered, error) {
	p.mu.Lock()
	if p.found != nil {
		defer p.mu.Unlock()
		// A failure is tried again only after rediscoverInterval: what
		// was found still works meanwhile.
		now := p.svc.now()
		if now.Sub(p.foundAt) >= discoveryMaxAge && (p.failErr == nil || now.Sub(p.failedAt) >= rediscoverInterval) {
			p.fetchLocked()
		}
		return p.found, nil
	}
	if p.pending == nil && p.failedRecently() {
		defer p.mu.Unlock()
		return nil, p.failErr
	}
	done := p.fetchLocked()
	p.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("discovery of %s: %w", p.cfg.Issuer, context.Cause(ctx))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.found != nil {
		return p.found, nil
	}
	return nil, p.failErr
}

// failedRecently reports whether the last discovery failed less than
// discoveryRetry ago. Called with mu held.
func (p *provider) failedRecently() bool {
	return p.failErr != nil && p.svc.now().Sub(p.failedAt) < discoveryRetry
}

// fetchLocked starts a discovery unless one runs, and returns the channel
// closed when it ends. Called with mu held.
func (p *provider) fetchLocked() chan struct{} {
	if p.pending == nil {
		p.pending = make(chan struct{})
		go p.fetch(p.pending)
	}
	return p.pending
}

// rediscover runs the discovery again in the background, at most once per
// rediscoverInterval: an endpoint of the provider (its jwks_uri, its token
// endpoint) answered 404 or 410, as when the provider moved it.
func (p *provider) rediscover(why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.found == nil || p.pending != nil || (!p.goneAt.IsZero() && p.svc.now().Sub(p.goneAt) < rediscoverInterval) {
		return
	}
	p.goneAt = p.svc.now()
	p.svc.log.Info("an endpoint of the OIDC provider answered as if it had moved; running its discovery again",
		zap.String("provider", p.cfg.Name), zap.String("issuer", p.cfg.Issuer), zap.Error(why))
	p.fetchLocked()
}

// fetch discovers the provider and closes done. A discovery that fails
// keeps what an earlier one found.
func (p *provider) fetch(done chan struct{}) {
	ctx, cancel := p.svc.ctx(context.Background())
	defer cancel()
	op, err := oidc.NewProvider(ctx, p.cfg.Issuer)
	var d *discovered
	if err == nil {
		d, err = p.discovered(op)
	}
	p.mu.Lock()
	prev := p.found
	if err != nil {
		p.failedAt, p.failErr = p.svc.now(), fmt.Errorf("discovery of %s: %w", p.cfg.Issuer, err)
	} else {
		d = d.keep(prev)
		p.found, p.foundAt, p.failErr = d, p.svc.now(), nil
	}
	p.pending = nil
	p.mu.Unlock()
	close(done)
	switch {
	case err != nil && prev != nil:
		p.svc.log.Warn("OIDC provider discovery failed again; the gateway goes on with what it found before "+
			"(tried again at most every "+rediscoverInterval.String()+")",
			zap.String("provider", p.cfg.Name), zap.String("issuer", p.cfg.Issuer), zap.Error(err))
	case err != nil:
		p.svc.log.Warn("OIDC provider discovery failed; its apps answer 502 auth-provider-unreachable to users without a session "+
			"until it succeeds (tried again at most every "+discoveryRetry.String()+"). Check that the issuer URL is right and reachable from the gateway",
			zap.String("provider", p.cfg.Name), zap.String("issuer", p.cfg.Issuer), zap.Error(err))
	case prev != nil && (d.keys != prev.keys || d.oauth != prev.oauth):
		p.svc.log.Info("the OIDC provider's endpoints changed; the gateway uses the new ones",
			zap.String("provider", p.cfg.Name), zap.String("jwks_uri", d.keys.url),
			zap.String("token_endpoint", d.oauth.Endpoint.TokenURL), zap.String("authorization_endpoint", d.oauth.Endpoint.AuthURL))
	}
}

// keep takes over from prev (the discovery before, nil if none) its key
// set if the jwks_uri is the same (its keys and when they were fetched),
// and its client if the endpoints are (how the provider authenticates it).
func (d *discovered) keep(prev *discovered) *discovered {
	if prev == nil {
		return d
	}
	if prev.keys.url == d.keys.url {
		d.keys = prev.keys
	}
	if prev.oauth.Endpoint == d.oauth.Endpoint {
		d.oauth = prev.oauth
	}
	return d
}

// discovered reads the key set's address and the signing algorithms from
// op's metadata.
func (p *provider) discovered(op *oidc.Provider) (*discovered, error) {
	var meta struct {
		JWKS string   `json:"jwks_uri"`
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := op.Claims(&meta); err != nil {
		return nil, err
	}
	d := &discovered{Provider: op, keys: &keySet{url: meta.JWKS, svc: p.svc, gone: p.rediscover}, oauth: &oauth2.Config{
		ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret, Endpoint: op.Endpoint(), Scopes: p.scopes(),
	}}
	for _, a := range meta.Algs {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) {
			d.algs = append(d.algs, a)
		}
	}
	return d, nil
}

func (p *provider) scopes() []string {
	if len(p.cfg.Scopes) == 0 {
		return []string{oidc.ScopeOpenID, "email", "profile"}
	}
	return p.cfg.Scopes
}

func (p *provider) groupsClaim() string {
	if p.cfg.GroupsClaim == "" {
		return DefaultGroupsClaim
	}
	return p.cfg.GroupsClaim
}

func (p *provider) audiences() []string {
	if len(p.cfg.Audiences) == 0 {
		return []string{p.cfg.ClientID}
	}
	return p.cfg.Audiences
}

// redirectURI is the redirect_uri parameter for r's host, for the
// authorization request and the code exchange.
func redirectURI(r *http.Request) oauth2.AuthCodeOption {
	return oauth2.SetAuthURLParam("redirect_uri", callbackURL(r))
}

// verifier checks ID tokens (bearer: bearer tokens, whose audience the
// caller checks) with op's keys. No algorithm announced: RS256, the one
// every provider must support.
func (p *provider) verifier(op *discovered, bearer bool) *oidc.IDTokenVerifier {
	return oidc.NewVerifier(p.cfg.Issuer, op.keys, &oidc.Config{ClientID: p.cfg.ClientID, SkipClientIDCheck: bearer,
		Now: p.svc.now, SupportedSigningAlgs: op.algs})
}

// callbackURL is the redirect URI for r's host.
func callbackURL(r *http.Request) string {
	scheme := "http"
	if secure(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host + callbackPath
}

// claims are the identity claims read from ID tokens and bearer tokens.
type claims struct {
	Subject           string        `json:"sub"`
	Email             string        `json:"email"`
	EmailVerified     *verifiedFlag `json:"email_verified"`
	Name              string        `json:"name"`
	PreferredUsername string        `json:"preferred_username"`
}

// verifiedFlag is email_verified: true, or "true" as some providers
// (JumpCloud, Apple) send it. Any other value is false.
type verifiedFlag bool

func (v *verifiedFlag) UnmarshalJSON(b []byte) error {
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		return err
	}
	*v = x == true || x == "true"
	return nil
}

// errNoSubject: a token without sub names nobody.
var errNoSubject = errors.New("token has no subject")

// identityFrom reads the identity out of a verified token.
func (p *provider) identityFrom(tok *oidc.IDToken, auth string) (*Identity, error) {
	var c claims
	if err := tok.Claims(&c); err != nil {
		return nil, err
	}
	var all map[string]any
	if err := tok.Claims(&all); err != nil {
		return nil, err
	}
	id := &Identity{Provider: p.cfg.Name, Subject: tok.Subject, Name: c.Name, Auth: auth}
	if id.Name == "" {
		id.Name = c.PreferredUsername
	}
	// An address the provider says it has not verified proves nothing.
	if c.EmailVerified == nil || bool(*c.EmailVerified) {
		id.Email = c.Email
	}
	switch g := all[p.groupsClaim()].(type) {
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				id.Groups = append(id.Groups, s)
			}
		}
	case string:
		id.Groups = []string{g}
	}
	if id.Subject == "" {
		return nil, errNoSubject
	}
	if groupsLeftOut(all, p.groupsClaim()) {
		p.svc.overage.Warn("the provider left the user's groups out of the token (too many to carry: a groups overage), "+
			"so policy.groups cannot admit this user",
			zap.String("provider", p.cfg.Name), zap.String("subject", id.Subject),
			zap.String("hint", "in Entra ID, emit only the groups assigned to the application "+
				"(Token configuration → groups claim), or admit the user by email or domain"))
	}
	return id, nil
}

// overageLinesPerMinute bounds the groups overage warnings a minute.
const overageLinesPerMinute = 5

// groupsLeftOut reports a groups overage: instead of the groups claim, the
// token names where to fetch it (_claim_names, as Entra ID does beyond 200
// groups) or only says there are groups (hasgroups).
func groupsLeftOut(all map[string]any, claim string) bool {
	if _, ok := all[claim]; ok {
		return false
	}
	if names, ok := all["_claim_names"].(map[string]any); ok {
		if _, ok := names[claim]; ok {
			return true
		}
	}
	return all["hasgroups"] == true
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func constantEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// stateID names the pre-login cookie of the sign-in with state (see
// loginCookieName): 16 hex digits of its hash.
func stateID(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:8])
}

// loginCookieName is the name of r's pre-login cookie id (see stateID;
// id "" gives the prefix of them all). Under TLS it takes the __Secure-
// prefix, which browsers let only an HTTPS page set: a network attacker who
// answers one of the browser's plain-HTTP requests (or an http:// page of
// the same host) could otherwise plant the pre-login cookie of a sign-in
// he started, and then send the browser to the callback with his own code
// and state: the browser would be signed in as him (login CSRF). Not
// __Host-, which needs Path=/: a pre-login cookie goes to the callback
// only. The prefix does not stop another HTTPS host under the same parent
// domain, which may set a __Secure- cookie for the parent: the callback
// also requires one of the browser's __Host- cookies to name the sign-in
// (see startedHere).
func loginCookieName(r *http.Request, id string) string {
	if secure(r) {
		return "__Secure-" + loginCookiePfx + id
	}
	return loginCookiePfx + id
}
