// Package devoidc is a small OpenID Connect provider for `sallyport demo`
// and tests. It is NOT for production: users and passwords live in memory,
// codes and refresh tokens too, and nothing is rate limited.
//
// It serves discovery, a sign-in page (authorization code flow with PKCE
// S256 required), the token endpoint (authorization_code and refresh_token
// grants), token revocation (RFC 7009, refresh tokens), the JWKS and
// userinfo. Refresh tokens rotate: each is accepted once, and with
// Config.RevokeOnReuse a used one presented again revokes every refresh
// token of its sign-in, as Auth0, Okta and Keycloak do. Tokens are ES256
// JWTs. Tests can mint arbitrary tokens with Mint, move its clock with
// Config.Now, and rotate its signing key with RotateKey.
package devoidc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sallyport/sallyport/internal/htmlpage"
)

// User is a test user.
type User struct {
	Username string // what the sign-in form asks for
	Password string
	Subject  string // `sub`; empty → Username
	Email    string
	Name     string
	Groups   []string
}

// Client is a registered OAuth client.
type Client struct {
	ID     string
	Secret string // empty: a public client (PKCE only)
}

// Config configures a Provider. Issuer is required.
type Config struct {
	// Issuer is the provider's URL, e.g. http://127.0.0.1:PORT (the server
	// that serves Handler must answer there).
	Issuer  string
	Users   []User
	Clients []Client
	// TokenLifetime of ID and access tokens (0 → 1h).
	TokenLifetime time.Duration
	// Now is the clock (nil → time.Now).
	Now func() time.Time
	// RevokeOnReuse makes a refresh token that was already used, when
	// presented again, revoke every refresh token of its sign-in (reuse
	// detection: the tokens are taken to be stolen), so the one its use
	// gave is refused too. Off: only the used token is refused.
	RevokeOnReuse bool
}

// Provider is the development OIDC provider. Safe for concurrent use.
type Provider struct {
	cfg Config

	mu sync.Mutex
	// keys are the published keys, the signing key last; guarded by mu.
	keys    []signingKey
	codes   map[string]*grant // guarded by mu
	refresh map[string]*grant // guarded by mu
	revoked int               // refresh tokens revoked; guarded by mu
	// used are the refresh tokens used up, each with its sign-in's
	// family, for reuse detection; never pruned (a development
	// provider: some 100 bytes a refresh); guarded by mu.
	used   map[string]*family
	reused int // used refresh tokens presented again; guarded by mu
	// Down makes every endpoint answer 503 while set (tests of an
	// unreachable provider); guarded by mu.
	down bool
	// prefix is where the endpoints are (see MoveEndpoints); guarded by mu.
	prefix string
}

// signingKey is one of the provider's keys.
type signingKey struct {
	key    *ecdsa.PrivateKey
	id     string
	signer jose.Signer
}

func newSigningKey() signingKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	id := randomString(6)
	return signingKey{key: key, id: id, signer: newSigner(key, id)}
}

// grant is what a code or refresh token stands for.
type grant struct {
	user        *User
	clientID    string
	redirectURI string
	nonce       string
	challenge   string
	scope       string
	expires     time.Time
	family      *family // the refresh tokens of one sign-in; nil for a code
}

// family is what the refresh tokens of one sign-in share.
type family struct {
	revoked bool // guarded by Provider.mu
}

// New returns a provider with a fresh signing key.
func New(cfg Config) *Provider {
	return &Provider{cfg: cfg, keys: []signingKey{newSigningKey()}, codes: map[string]*grant{}, refresh: map[string]*grant{},
		used: map[string]*family{}}
}

// RotateKey signs from now on with a new key, which the JWKS publishes
// from now on too, as providers do when they rotate their keys. With
// keepOld the previous keys stay published (tokens they signed still
// verify); without, only the new key is. It returns the new key's id.
func (p *Provider) RotateKey(keepOld bool) string {
	k := newSigningKey()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !keepOld {
		p.keys = nil
	}
	p.keys = append(p.keys, k)
	return k.id
}

// ReplaceKey signs from now on with a new key under the current key's id,
// which the JWKS then publishes in place of the old one: a rotation by a
// provider that keeps a fixed key id.
func (p *Provider) ReplaceKey() {
	k := newSigningKey()
	p.mu.Lock()
	defer p.mu.Unlock()
	last := len(p.keys) - 1
	k.id = p.keys[last].id
	k.signer = newSigner(k.key, k.id)
	p.keys[last] = k
}

// current is the signing key.
func (p *Provider) current() signingKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[len(p.keys)-1]
}

func newSigner(key *ecdsa.PrivateKey, kid string) jose.Signer {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		panic(err) // only for an unsupported key type
	}
	return s
}

func (p *Provider) now() time.Time {
	if p.cfg.Now != nil {
		return p.cfg.Now()
	}
	return time.Now()
}

func (p *Provider) lifetime() time.Duration {
	if p.cfg.TokenLifetime <= 0 {
		return time.Hour
	}
	return p.cfg.TokenLifetime
}

// SetDown makes the provider answer 503 everywhere (true) or work again.
func (p *Provider) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// MoveEndpoints moves every endpoint but the discovery document under
// prefix (e.g. "/v2": the token endpoint becomes ISSUER/v2/token), as a
// provider does that reorganises its URLs: the discovery document names
// the new addresses, and the old ones answer 404. "" moves them back.
func (p *Provider) MoveEndpoints(prefix string) {
	p.mu.Lock()
	p.prefix = strings.TrimSuffix(prefix, "/")
	p.mu.Unlock()
}

func (p *Provider) endpoints() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.TrimSuffix(p.cfg.Issuer, "/") + p.prefix
}

// Handler serves the provider's endpoints.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.serveDiscovery)
	mux.HandleFunc("GET /authorize", p.serveAuthorizeForm)
	mux.HandleFunc("POST /authorize", p.serveAuthorizeSubmit)
	mux.HandleFunc("POST /token", p.serveToken)
	mux.HandleFunc("POST /revoke", p.serveRevoke)
	mux.HandleFunc("GET /logout", serveLogout)
	mux.HandleFunc("GET /jwks", p.serveJWKS)
	mux.HandleFunc("GET /userinfo", p.serveUserinfo)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		down, prefix := p.down, p.prefix
		p.mu.Unlock()
		if down {
			http.Error(w, "provider down (test)", http.StatusServiceUnavailable)
			return
		}
		if prefix != "" && r.URL.Path != "/.well-known/openid-configuration" {
			rest, ok := strings.CutPrefix(r.URL.Path, prefix)
			if !ok || !strings.HasPrefix(rest, "/") {
				http.NotFound(w, r) // an old address
				return
			}
			r = r.Clone(r.Context())
			r.URL.Path, r.URL.RawPath = rest, ""
		}
		mux.ServeHTTP(w, r)
	})
}

func (p *Provider) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	iss := p.endpoints()
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.cfg.Issuer,
		"authorization_endpoint":                iss + "/authorize",
		"token_endpoint":                        iss + "/token",
		"jwks_uri":                              iss + "/jwks",
		"userinfo_endpoint":                     iss + "/userinfo",
		"revocation_endpoint":                   iss + "/revoke",
		"end_session_endpoint":                  iss + "/logout",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"code_challenge_methods_supported":      []string{"S256"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token"},
		"scopes_supported":                      []string{"openid", "email", "profile", "groups", "offline_access"},
	})
}

func (p *Provider) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	var set jose.JSONWebKeySet
	p.mu.Lock()
	for _, k := range p.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.key.PublicKey, KeyID: k.id, Algorithm: string(jose.ES256), Use: "sig"})
	}
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, set)
}

func (p *Provider) client(id string) *Client {
	for i := range p.cfg.Clients {
		if p.cfg.Clients[i].ID == id {
			return &p.cfg.Clients[i]
		}
	}
	return nil
}

// checkAuthorize validates the authorization request's parameters.
func (p *Provider) checkAuthorize(q url.Values) string {
	switch {
	case q.Get("response_type") != "code":
		return "response_type must be code"
	case p.client(q.Get("client_id")) == nil:
		return "unknown client_id"
	case q.Get("redirect_uri") == "":
		return "redirect_uri is required"
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		return "PKCE with code_challenge_method S256 is required"
	case !strings.Contains(" "+q.Get("scope")+" ", " openid "):
		return "scope must include openid"
	}
	u, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "redirect_uri must be an absolute http(s) URL"
	}
	return ""
}

// signInParams are the authorization request's parameters that the
// sign-in form posts back, in the order the form holds them.
var signInParams = []string{"client_id", "code_challenge", "code_challenge_method", "nonce", "redirect_uri", "response_type", "scope", "state"}

// renderForm writes the sign-in page (htmlpage says why it is not a
// template), with errMsg above the form when it is not empty.
func (p *Provider) renderForm(w http.ResponseWriter, q url.Values, errMsg string) {
	var hint, hintPassword string
	if len(p.cfg.Users) > 0 {
		hint, hintPassword = p.cfg.Users[0].Username, p.cfg.Users[0].Password
	}
	var b strings.Builder
	b.WriteString(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in — development provider</title></head>
<body style="font-family:system-ui,sans-serif;max-width:28em;margin:4em auto;padding:0 1em">
<h1>Sign in</h1>
<p style="color:#a00"><b>Development OIDC provider</b> built into Sallyport for the demo and tests. Never use it in production.</p>
`)
	if errMsg != "" {
		b.WriteString(`<p id="error" style="color:#a00">` + htmlpage.Text(errMsg) + `</p>`)
	}
	b.WriteString("\n<form method=\"post\" action=\"authorize\">\n")
	for _, k := range signInParams {
		b.WriteString(`<input type="hidden" name="` + k + `" value="` + htmlpage.Text(q.Get(k)) + "\">\n")
	}
	b.WriteString(`<p><label>User name<br><input id="username" name="username" autocomplete="username" value="` + htmlpage.Text(hint) + `"></label></p>
<p><label>Password<br><input id="password" name="password" type="password" autocomplete="current-password"></label></p>
<p><button id="signin" type="submit">Sign in</button></p>
</form>
`)
	if hint != "" {
		b.WriteString(`<p style="color:#666">Demo user: <code>` + htmlpage.Text(hint) + `</code>, password <code>` + htmlpage.Text(hintPassword) + `</code>.</p>`)
	}
	b.WriteString("\n</body></html>\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if errMsg != "" {
		w.WriteHeader(http.StatusUnauthorized)
	}
	_, _ = io.WriteString(w, b.String())
}

func (p *Provider) serveAuthorizeForm(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if msg := p.checkAuthorize(q); msg != "" {
		http.Error(w, "invalid authorization request: "+msg, http.StatusBadRequest)
		return
	}
	p.renderForm(w, q, "")
}

func (p *Provider) serveAuthorizeSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	q := r.PostForm
	if msg := p.checkAuthorize(q); msg != "" {
		http.Error(w, "invalid authorization request: "+msg, http.StatusBadRequest)
		return
	}
	user := p.userByPassword(q.Get("username"), q.Get("password"))
	if user == nil {
		p.renderForm(w, q, "Wrong user name or password.")
		return
	}
	code := randomString(24)
	p.mu.Lock()
	p.codes[code] = &grant{
		user: user, clientID: q.Get("client_id"), redirectURI: q.Get("redirect_uri"),
		nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), scope: q.Get("scope"),
		expires: p.now().Add(time.Minute),
	}
	p.mu.Unlock()
	u, _ := url.Parse(q.Get("redirect_uri")) // checked by checkAuthorize
	v := u.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (p *Provider) userByPassword(name, password string) *User {
	for i := range p.cfg.Users {
		u := &p.cfg.Users[i]
		if u.Username == name && subtle.ConstantTimeCompare([]byte(u.Password), []byte(password)) == 1 {
			return u
		}
	}
	return nil
}

func tokenError(w http.ResponseWriter, code, desc string) {
	status := http.StatusBadRequest
	if code == "invalid_client" {
		status = http.StatusUnauthorized
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// authClient parses the form of a token or revocation request and
// authenticates its client (HTTP Basic or client_id/client_secret in the
// form). It answers the request itself and reports false when that fails.
func (p *Provider) authClient(w http.ResponseWriter, r *http.Request) (string, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		tokenError(w, "invalid_request", "bad form")
		return "", false
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	c := p.client(id)
	if c == nil || subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1 {
		tokenError(w, "invalid_client", "unknown client or wrong secret")
		return "", false
	}
	return id, true
}

// serveRevoke revokes a refresh token of the calling client (RFC 7009).
// Unknown tokens and other token types get 200 too, as the RFC says.
func (p *Provider) serveRevoke(w http.ResponseWriter, r *http.Request) {
	id, ok := p.authClient(w, r)
	if !ok {
		return
	}
	tok := r.PostForm.Get("token")
	p.mu.Lock()
	if g := p.refresh[tok]; g != nil && g.clientID == id {
		delete(p.refresh, tok)
		p.revoked++
	}
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// serveLogout is the end-session endpoint. The provider keeps no sessions
// of its own (every sign-in asks for the password), so there is nothing to
// end; it says so.
func serveLogout(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Signed out</title></head>` +
		`<body><h1>Development OIDC provider</h1><p>Signed out. This provider keeps no sessions: every sign-in asks for the password.</p></body></html>`))
}

// Reused is how many refresh tokens were presented again after their use
// (each refused; with Config.RevokeOnReuse, each revoked its sign-in's).
func (p *Provider) Reused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reused
}

// Revoked is how many refresh tokens were revoked through the revocation
// endpoint.
func (p *Provider) Revoked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.revoked
}

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	id, ok := p.authClient(w, r)
	if !ok {
		return
	}
	now := p.now()
	var g *grant
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		p.mu.Lock()
		g = p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code")) // single use
		p.mu.Unlock()
		if g == nil || now.After(g.expires) || g.clientID != id {
			tokenError(w, "invalid_grant", "unknown, used or expired code")
			return
		}
		if g.redirectURI != r.PostForm.Get("redirect_uri") {
			tokenError(w, "invalid_grant", "redirect_uri differs from the authorization request")
			return
		}
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
			tokenError(w, "invalid_grant", "PKCE code_verifier does not match")
			return
		}
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		p.mu.Lock()
		g = p.refresh[rt]
		delete(p.refresh, rt) // rotated
		if f := p.used[rt]; g == nil && f != nil {
			p.reused++
			if p.cfg.RevokeOnReuse {
				f.revoked = true
			}
		}
		if g != nil {
			p.used[rt] = g.family
		}
		revoked := g != nil && g.family != nil && g.family.revoked
		p.mu.Unlock()
		if g == nil || g.clientID != id || revoked {
			tokenError(w, "invalid_grant", "unknown, used or revoked refresh token")
			return
		}
		g = &grant{user: g.user, clientID: g.clientID, scope: g.scope, family: g.family}
	default:
		tokenError(w, "unsupported_grant_type", "authorization_code or refresh_token")
		return
	}
	claims := UserClaims(g.user)
	claims["aud"] = id
	if g.nonce != "" {
		claims["nonce"] = g.nonce
	}
	idToken := p.Mint(claims)
	access := UserClaims(g.user)
	access["aud"] = id
	rt := randomString(24)
	p.mu.Lock()
	if g.family == nil { // a sign-in: its refresh tokens start a family
		g.family = &family{}
	}
	p.refresh[rt] = g
	p.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":  p.Mint(access),
		"token_type":    "Bearer",
		"expires_in":    int(p.lifetime() / time.Second),
		"id_token":      idToken,
		"refresh_token": rt,
		"scope":         g.scope,
	})
}

func (p *Provider) serveUserinfo(w http.ResponseWriter, r *http.Request) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer`)
		http.Error(w, "no token", http.StatusUnauthorized)
		return
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	var c map[string]any
	if err == nil {
		err = p.claims(tok, &c)
	}
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// claims verifies tok with the published key it names and reads its claims.
func (p *Provider) claims(tok *jwt.JSONWebToken, c *map[string]any) error {
	p.mu.Lock()
	keys := p.keys
	p.mu.Unlock()
	for _, k := range keys {
		if len(tok.Headers) == 1 && tok.Headers[0].KeyID == k.id {
			return tok.Claims(&k.key.PublicKey, c)
		}
	}
	return errors.New("no published key with the token's kid")
}

// UserClaims are the identity claims of u (sub, email, email_verified, name,
// preferred_username, groups).
func UserClaims(u *User) map[string]any {
	sub := u.Subject
	if sub == "" {
		sub = u.Username
	}
	c := map[string]any{"sub": sub, "preferred_username": u.Username}
	if u.Email != "" {
		c["email"] = u.Email
		c["email_verified"] = true
	}
	if u.Name != "" {
		c["name"] = u.Name
	}
	if len(u.Groups) > 0 {
		c["groups"] = u.Groups
	}
	return c
}

// Mint signs claims with the provider's key, adding iss, iat and exp (one
// token lifetime from now) unless claims sets them.
func (p *Provider) Mint(claims map[string]any) string {
	now := p.now()
	c := map[string]any{"iss": p.cfg.Issuer, "iat": now.Unix(), "exp": now.Add(p.lifetime()).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	return MintWith(p.current().signer, c)
}

// MintWith signs claims with signer as they are. Tests use it with a
// foreign key (NewForeignSigner) for wrong-signature cases.
func MintWith(signer jose.Signer, claims map[string]any) string {
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		panic(err) // only for claims that do not marshal
	}
	return s
}

// NewForeignSigner returns an ES256 signer with a fresh key that no
// provider publishes, using kid (pass the provider's KeyID to forge a token
// that claims its key).
func NewForeignSigner(kid string) jose.Signer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return newSigner(key, kid)
}

// KeyID is the id of the provider's signing key.
func (p *Provider) KeyID() string { return p.current().id }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SubmitSignIn signs in as u on the provider's page at page (the
// authorization address a sign-in sent the browser c to), as a user would
// with the form, and returns the answer the browser ends at (after the
// redirects back) and its body. For tests and the demo's own checks.
func SubmitSignIn(c *http.Client, page *url.URL, u User) (*http.Response, string, error) {
	form := url.Values{}
	for k, v := range page.Query() {
		form[k] = v
	}
	form.Set("username", u.Username)
	form.Set("password", u.Password)
	target := *page
	target.RawQuery = ""
	res, err := c.PostForm(target.String(), form)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}
