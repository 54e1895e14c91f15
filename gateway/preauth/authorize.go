package preauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// session is the sealed content of the session cookie.
type session struct {
	Provider string   `json:"p"`
	Subject  string   `json:"s"`
	Email    string   `json:"e,omitempty"`
	Name     string   `json:"n,omitempty"`
	Groups   []string `json:"g,omitempty"`
	Created  int64    `json:"c"`            // sign-in time, Unix seconds
	Expires  int64    `json:"x"`            // end of the session
	Refresh  int64    `json:"r,omitempty"`  // refresh due (ID token expiry); 0: never
	Token    string   `json:"rt,omitempty"` // refresh token
	// ID names the session from sign-in to its end (refreshes keep it), so
	// a sign-out can refuse every copy of the cookie. Sessions from before
	// it existed have none.
	ID string `json:"i,omitempty"`
	// Home is the host whose callback made the session (renewals keep
	// it): under cookie_domain and TLS, the host other hosts ask to vouch
	// for it (see cookiebind.go). Sessions from before it existed have
	// none, and do not count there.
	Home string `json:"h,omitempty"`
}

func (ss *session) identity() *Identity {
	return &Identity{Provider: ss.Provider, Subject: ss.Subject, Email: ss.Email, Name: ss.Name, Groups: ss.Groups, Auth: "session"}
}

// Authorize decides a request to an app with policy pol. path is the
// gateway's normalised path (match form). It returns the identity to pass
// to the app (nil on a public path without a session), or an error: an
// *Error to answer, or ErrHandled when the answer (a redirect to sign in)
// was written.
func (s *Service) Authorize(w http.ResponseWriter, r *http.Request, pol *Policy, path string) (*Identity, error) {
	p := s.providers[pol.Provider]
	if p == nil {
		return nil, unreachable(errors.New("unknown provider " + pol.Provider))
	}
	if isPublic(pol.PublicPaths, path) {
		// Pass who is signed in along when we know without asking the
		// provider; never refuse a public path.
		if ss, _ := s.readSession(r, p); ss != nil && (ss.Refresh == 0 || s.now().Unix() < ss.Refresh) && pol.allows(ss.identity()) {
			return ss.identity(), nil
		}
		return nil, nil
	}

	ss, why := s.readSession(r, p)
	if ss != nil && ss.Refresh != 0 && s.now().Unix() >= ss.Refresh {
		var err error
		ss, err = s.refreshSession(w, r, p, ss)
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) {
				return nil, err
			}
			why = "expired"
			ss = nil
			s.log.Info("session refresh refused; signing in again", zap.String("provider", p.cfg.Name), zap.Error(err))
		}
	}
	if ss != nil {
		id := ss.identity()
		if !pol.allows(id) {
			return id, forbidden(id)
		}
		return id, nil
	}
	if why == "invalid" || why == "expired" || why == "signed-out" {
		// A session with another provider (cookie_domain shared by apps
		// of several providers) stays until a sign-in here replaces it:
		// a link to this app must not sign the user out of the others.
		s.clearSessionCookie(w, r)
	}

	if raw, ok := bearerToken(r); ok {
		id, err := s.verifyBearer(r.Context(), p, raw)
		if err != nil {
			return nil, err
		}
		if !pol.allows(id) {
			return id, forbidden(id)
		}
		return id, nil
	}

	if !isPageLoad(r) {
		msg := "Sign-in required. Send a bearer token from the application's identity provider, or sign in with a browser."
		if why != "" && why != whyUnbound {
			msg = "Your session has expired or is no longer valid. Sign in again."
		}
		return nil, unauthenticated(msg, `Bearer realm="sallyport"`, nil)
	}
	if why == whyUnbound {
		// A session of another host under cookie_domain: its home
		// vouches for it, or the user signs in here.
		if asked, err := s.startBinding(w, r, p); asked {
			return nil, err
		}
	}
	return nil, s.startSignIn(w, r, p)
}

// forbidden names who is signed in and how to sign out.
func forbidden(id *Identity) *Error {
	who := id.Email
	if who == "" {
		who = id.Name
	}
	if who == "" {
		who = id.Subject
	}
	msg := "You are signed in as " + who + ", who is not allowed to use this application. " +
		"Ask the administrator for access, or sign out and sign in as another user."
	e := &Error{Code: CodeForbidden, Status: http.StatusForbidden, Msg: msg}
	if id.Auth == "session" {
		e.LinkURL, e.LinkText = logoutPath, "Sign out"
	}
	return e
}

// readSession returns the valid session of r for provider p, or nil and why
// not: "" when there is no cookie, "invalid", "expired", "signed-out" (a
// copy of a cookie whose session was signed out), "other-provider" for
// a valid session with another provider, which Authorize leaves in place,
// or "unbound" for sessions r's host has not bound (see openBound).
func (s *Service) readSession(r *http.Request, p *provider) (*session, string) {
	ss, why := s.openSession(r)
	if ss == nil {
		return nil, why
	}
	if ss.Provider != p.cfg.Name {
		// Signed in with another provider (cookie_domain shared across
		// apps): sign in with this one, replacing the cookie.
		return nil, "other-provider"
	}
	if why := s.ended(ss); why != "" {
		return nil, why
	}
	return ss, ""
}

// openSession opens r's session cookie: nil and "" when there is none, nil
// and "invalid" when it does not open. Under cookie_domain and TLS, the
// session that r's host has bound (see openBound), or nil and "unbound".
func (s *Service) openSession(r *http.Request) (*session, string) {
	if s.bindsSessions(r) {
		return s.openBound(r)
	}
	value := s.readSessionCookie(r)
	if value == "" {
		return nil, ""
	}
	var ss session
	if err := s.sealer.open("session", value, &ss); err != nil {
		return nil, "invalid"
	}
	return &ss, ""
}

// ended says why ss is no longer valid: "expired", "signed-out", or ""
// while it is.
func (s *Service) ended(ss *session) string {
	if s.now().Unix() >= ss.Expires || ss.Subject == "" {
		return "expired"
	}
	if ss.ID != "" && s.signedOut.has(ss.ID) {
		return "signed-out"
	}
	return ""
}

// signedIn reports whether r carries a valid session with any of the
// providers (whether it must be refreshed or not).
func (s *Service) signedIn(r *http.Request) bool {
	ss, _ := s.openSession(r)
	return ss != nil && s.providers[ss.Provider] != nil && s.ended(ss) == ""
}

// writeSession seals ss into the session cookie, and returns the session
// as written: when ss is too big for the cookies, a copy without its
// refresh token, then without its groups. ss itself is not changed: a
// refreshed session is shared by the requests that carried the old cookie
// (see refresher).
func (s *Service) writeSession(w http.ResponseWriter, r *http.Request, ss *session) (*session, error) {
	value, err := s.sealer.seal("session", ss)
	if err != nil {
		return nil, err
	}
	if len(value) > maxCookieValue*maxChunks && ss.Token != "" {
		// Too big even in chunks: give up refreshing rather than the session.
		s.log.Warn("session cookie too large; dropping the refresh token (the session lasts its lifetime without refresh)",
			zap.String("provider", ss.Provider), zap.Int("bytes", len(value)))
		smaller := *ss
		smaller.Token, smaller.Refresh = "", 0
		ss = &smaller
		if value, err = s.sealer.seal("session", ss); err != nil {
			return nil, err
		}
	}
	if len(value) > maxCookieValue*maxChunks {
		s.log.Warn("session cookie too large; dropping groups from it", zap.String("provider", ss.Provider),
			zap.Int("groups", len(ss.Groups)))
		smaller := *ss
		smaller.Groups = nil
		ss = &smaller
		if value, err = s.sealer.seal("session", ss); err != nil {
			return nil, err
		}
	}
	maxAge := int(time.Unix(ss.Expires, 0).Sub(s.now()) / time.Second)
	s.setSessionCookie(w, r, value, max(maxAge, 1))
	return ss, nil
}

// answered reports whether the provider's token endpoint answered a token
// request that failed with err with an HTTP error status. Otherwise the
// request got no answer (the connection failed, or no answer came in
// providerTimeout) or no token response.
func answered(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response != nil
}

// refreshUnanswered remembers that the provider did not answer a refresh
// (see unansweredRefresh).
func (p *provider) refreshUnanswered(err error) {
	p.mu.Lock()
	p.refreshFailedAt, p.refreshErr = p.svc.now(), err
	p.mu.Unlock()
	p.svc.log.Warn("the OIDC provider did not answer a session refresh; requests whose session needs a refresh answer "+
		"502 auth-provider-unreachable (the sessions are kept) until it does, and it is asked again at most every "+refreshRetry.String()+
		". Check that the provider is up and reachable from the gateway",
		zap.String("provider", p.cfg.Name), zap.String("issuer", p.cfg.Issuer), zap.Error(err))
}

// unansweredRefresh returns the failure of a refresh that the provider
// did not answer in the last refreshRetry, from when it ended. While the
// provider does not answer, every refresh would wait providerTimeout for
// nothing, each user's in turn; they fail at once instead. A refresh that
// the provider answered with an error status is not remembered: it may
// concern that refresh token only.
func (p *provider) unansweredRefresh() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refreshErr == nil {
		return nil
	}
	ago := p.svc.now().Sub(p.refreshFailedAt)
	if ago >= refreshRetry {
		p.refreshErr = nil
		return nil
	}
	return fmt.Errorf("the provider did not answer a refresh %s ago (asked again after %s): %w",
		ago.Truncate(time.Second), refreshRetry, p.refreshErr)
}

// refused reports whether the provider's token endpoint answered err with
// a refusal (4xx, such as invalid_grant) rather than failing (5xx, network).
func refused(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500
}

// endpointGone reports whether the token endpoint answered a token request
// with 404 or 410: it may have moved (see provider.rediscover).
func endpointGone(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response != nil && movedStatus(re.Response.StatusCode)
}

func bearerToken(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return "", false
	}
	return strings.TrimSpace(v[7:]), true
}

// verifyBearer checks a bearer JWT: signature by the provider's JWKS,
// issuer, expiry, and an aud among the accepted audiences.
func (s *Service) verifyBearer(ctx context.Context, p *provider, raw string) (*Identity, error) {
	invalid := func(desc string, err error) *Error {
		return unauthenticated("The bearer token was not accepted: "+desc+".",
			`Bearer realm="sallyport", error="invalid_token", error_description="`+desc+`"`, err)
	}
	op, err := p.discover(ctx)
	if err != nil {
		return nil, unreachable(err)
	}
	// Keys are fetched on their own (keySet): the request waits for them
	// only as long as its client does.
	tok, err := p.verify(ctx, op, raw, true)
	if err != nil {
		var te *oidc.TokenExpiredError
		switch {
		case errors.As(err, &te):
			return nil, invalid("the token has expired", err)
		case keysUnavailable(err):
			return nil, unreachable(err)
		}
		return nil, invalid("the token is not valid for this issuer or its signature does not verify", err)
	}
	ok := false
	for _, a := range tok.Audience {
		for _, want := range p.audiences() {
			if a == want {
				ok = true
			}
		}
	}
	if !ok {
		return nil, invalid("the token is meant for another audience", nil)
	}
	id, err := p.identityFrom(tok, "bearer")
	if errors.Is(err, errNoSubject) {
		return nil, invalid("the token has no subject", err)
	}
	if err != nil {
		return nil, invalid("the token's claims could not be read", err)
	}
	return id, nil
}

// isPageLoad reports whether r looks like a browser loading a page, which
// is redirected to sign in. XHR and fetch calls, JSON clients, other
// methods than GET and HEAD, and upgrades (WebSockets) are not.
func isPageLoad(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if r.Header.Get("Upgrade") != "" || strings.EqualFold(r.Header.Get("X-Requested-With"), "XMLHttpRequest") {
		return false
	}
	if m := r.Header.Get("Sec-Fetch-Mode"); m != "" && m != "navigate" {
		return false
	}
	accept := strings.ToLower(strings.Join(r.Header.Values("Accept"), ","))
	if strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html") {
		return false
	}
	return true
}

// isPublic reports whether path lies under one of prefixes (normalised,
// compared on segment boundaries).
func isPublic(prefixes []string, path string) bool {
	for _, p := range prefixes {
		p = strings.TrimRight(p, "/")
		if p == "" {
			return true
		}
		if strings.HasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/') {
			return true
		}
	}
	return false
}

// allows reports whether the policy admits id.
func (pol *Policy) allows(id *Identity) bool {
	if len(pol.Emails)+len(pol.Domains)+len(pol.Groups) == 0 {
		return true
	}
	if id.Email != "" {
		for _, e := range pol.Emails {
			if asciiEqualFold(e, id.Email) {
				return true
			}
		}
		if at := strings.LastIndexByte(id.Email, '@'); at >= 0 {
			domain := id.Email[at+1:]
			for _, d := range pol.Domains {
				if asciiEqualFold(strings.TrimPrefix(d, "@"), domain) {
					return true
				}
			}
		}
	}
	for _, g := range pol.Groups {
		for _, have := range id.Groups {
			if g == have {
				return true
			}
		}
	}
	return false
}

// asciiEqualFold compares a and b ignoring the case of ASCII letters only.
// strings.EqualFold also folds Unicode: "\u212a" (KELVIN SIGN) equals
// "k" and "\u017f" (LONG S) equals "s" there, so a provider that lets
// users pick such an address would let "\u212aate@example.com" pass a
// policy that lists kate@example.com, or an address at "ban\u212a.example"
// one that lists the domain bank.example.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// safeReturn reports whether ret is a same-origin relative path to return
// to after sign-in: "/" then not "/" or "\", no scheme, host or control
// characters.
func safeReturn(ret string) bool {
	if !strings.HasPrefix(ret, "/") || strings.HasPrefix(ret, "//") || strings.HasPrefix(ret, `/\`) {
		return false
	}
	for i := 0; i < len(ret); i++ {
		if c := ret[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	u, err := url.Parse(ret)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil && strings.HasPrefix(u.Path, "/") && !strings.HasPrefix(u.Path, "//")
}
