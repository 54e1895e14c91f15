package preauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/htmlpage"
)

// loginState is the sealed content of a pre-login cookie.
type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"` // same-origin path (and query) to return to
	Provider string `json:"p"`
	Host     string `json:"h"`
	Expires  int64  `json:"x"`
}

// startSignIn redirects a page load to the provider. The return address is
// r's path as escaped (the gateway has normalised it), never the decoded
// form policies match on: decoded, %3F and %23 would start a query or a
// fragment and %25 would be a bad escape.
func (s *Service) startSignIn(w http.ResponseWriter, r *http.Request, p *provider) error {
	op, err := p.discover(r.Context())
	if err != nil {
		return unreachable(err)
	}
	ret := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		ret += "?" + r.URL.RawQuery
	}
	if !safeReturn(ret) {
		ret = "/"
	}
	ls := loginState{
		State: randomToken(16), Nonce: randomToken(16), Verifier: oauth2.GenerateVerifier(),
		Return: ret, Provider: p.cfg.Name, Host: strings.ToLower(r.Host),
		Expires: s.now().Add(loginCookieLife * time.Second).Unix(),
	}
	value, err := s.sealLogin(&ls)
	if err != nil {
		return err
	}
	id := stateID(ls.State)
	name := loginCookieName(r, id)
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: callbackPath, MaxAge: loginCookieLife,
		HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode,
	})
	s.addPending(w, r, id, ls.Expires)
	target := op.oauth.AuthCodeURL(ls.State, redirectURI(r), oauth2.S256ChallengeOption(ls.Verifier), oidc.Nonce(ls.Nonce))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return ErrHandled
}

// retry is where "Try again" after a failed sign-in leads: the page the
// user asked for.
func (ls *loginState) retry() string {
	if safeReturn(ls.Return) {
		return ls.Return
	}
	return "/"
}

// unreachable is the answer when the provider fails to complete the
// sign-in: the code is used up, so reloading cannot help; the link starts
// a new sign-in for the page asked for.
func (ls *loginState) unreachable(err error) *Error {
	e := unreachable(err)
	e.LinkURL, e.LinkText = ls.retry(), "Try again"
	return e
}

// sealLogin seals ls for the pre-login cookie. A browser drops a cookie
// over 4096 bytes without a word, and the callback would then fail as if
// the sign-in had started in another browser, every time the user follows
// that link. So when the return address makes the cookie too long, the
// user returns to the address's path without its query, or to "/" when
// even the path is too long.
func (s *Service) sealLogin(ls *loginState) (string, error) {
	asked := ls.Return
	path, _, _ := strings.Cut(asked, "?")
	var value string
	var err error
	for _, ret := range [...]string{asked, path, "/"} {
		ls.Return = ret
		if value, err = s.sealer.seal("login", ls); err != nil || len(value) <= maxCookieValue {
			break
		}
	}
	if ls.Return != asked {
		s.log.Info("the address asked for is too long to return to after the sign-in; returning to a shorter one",
			zap.Int("length", len(asked)), zap.String("return", truncate(ls.Return, 200)))
	}
	return value, err
}

// truncate shortens s to at most n bytes for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ServeEndpoint answers the gateway's own paths, on every host: the sign-in
// callback, sign-out and the assertion JWKS. It reports whether path was
// one of them; then the answer was written or the error is to be answered.
func (s *Service) ServeEndpoint(w http.ResponseWriter, r *http.Request, path string) (bool, error) {
	switch path {
	case callbackPath:
		return true, s.callback(w, r)
	case logoutPath:
		return true, s.logout(w, r)
	case bindPath:
		return true, s.bind(w, r)
	case boundPath:
		return true, s.bound(w, r)
	case assertion.JWKSPath:
		ServeJWKS(w, s.cfg.Keys.JWKS())
		return true, ErrHandled
	}
	return false, nil
}

// JWKS returns the public assertion keys as a JSON Web Key Set.
func (s *Service) JWKS() []byte { return s.cfg.Keys.JWKS() }

// ServeJWKS writes a JWKS document.
func ServeJWKS(w http.ResponseWriter, jwks []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(jwks)
}

// stateMismatch is the answer to a callback that does not belong to a
// sign-in this browser started and has not completed. A browser that is
// signed in is sent to the app instead (see callback).
func stateMismatch(err error) *Error {
	return &Error{Code: CodeStateMismatch, Status: http.StatusBadRequest, Err: err, LinkURL: "/", LinkText: "Start over",
		Msg: "This sign-in cannot be completed: it was started in another browser, took longer than 10 minutes, " +
			"was already completed, or was replaced by newer sign-ins in other tabs. Start over."}
}

// errNotStartedHere marks a callback refused by startedHere.
var errNotStartedHere = errors.New("no __Host- cookie of this browser names the pre-login cookie")

// notStartedHere is the answer to a callback whose pre-login cookie this
// browser did not get from the gateway (see startedHere): another host
// planted it.
func notStartedHere() *Error {
	e := stateMismatch(errNotStartedHere)
	e.Msg = "This sign-in cannot be completed: this browser has no record of starting it. Another site may have sent you " +
		"here to sign you in to someone else's account. Start over to sign in with your own account."
	return e
}

// callback completes a sign-in. The gateway logs only the failures it
// answers with 5xx, so callback logs why a sign-in was refused: the page
// says little, and the cause (a provider refusing the client, clocks
// apart) is for the administrator to fix.
func (s *Service) callback(w http.ResponseWriter, r *http.Request) error {
	err := s.completeSignIn(w, r)
	var pe *Error
	// Signed in or not: the attempt is the administrator's to know.
	if errors.As(err, &pe) && errors.Is(pe.Err, errNotStartedHere) {
		s.log.Warn("sign-in refused: the browser brought a pre-login cookie that it did not get from this host, "+
			"as when another host under the same parent domain planted it to sign the user in to someone else's account (login CSRF)",
			zap.String("host", r.Host), zap.String("user_agent", truncate(r.UserAgent(), 200)))
	}
	if errors.As(err, &pe) && pe.Code == CodeStateMismatch && r.Method == http.MethodGet && s.signedIn(r) {
		// The back button after a sign-in, or a tab whose sign-in was
		// forgotten for newer ones (pending.go) after another tab signed
		// in: the browser is signed in, so it goes to the app rather than
		// to a page saying the sign-in failed. Always to "/" of this host: nothing of the query is
		// trusted (the state names no pre-login cookie of this browser),
		// and the code in it is not used, so no one can send a signed-in
		// browser elsewhere or sign it in as someone else this way.
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return ErrHandled
	}
	if errors.As(err, &pe) && pe.Code == CodeSignInFailed {
		fields := []zap.Field{zap.String("host", r.Host), zap.String("shown", pe.Msg), zap.Error(pe.Err)}
		var te *oidc.TokenExpiredError
		switch {
		case errors.Is(pe.Err, errProviderError):
			s.log.Info("sign-in: the provider did not sign the user in", fields...)
		case errors.As(pe.Err, &te):
			s.log.Warn("sign-in refused: the provider's ID token had expired by the gateway's clock", append(fields,
				zap.Time("expiry", te.Expiry), zap.Time("gateway_time", s.now()),
				zap.String("hint", "check that the clocks of the gateway and the provider are right (NTP)"))...)
		default:
			s.log.Warn("sign-in refused", fields...)
		}
	}
	return err
}

// errProviderError marks the error a provider sent back to the callback
// (error=access_denied and the like).
var errProviderError = errors.New("the provider answered the sign-in with an error")

// completeSignIn checks the callback against the pre-login cookie, fetches
// and verifies the ID token, and sets the session cookie.
func (s *Service) completeSignIn(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return stateMismatch(errors.New("callback with method " + r.Method))
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		return stateMismatch(errors.New("no state"))
	}
	loginID := stateID(state)
	name := loginCookieName(r, loginID)
	// Whether this browser's __Host- cookies say it started the sign-in;
	// refused below, after the login cookie's own checks.
	started := s.startedHere(r, loginID)
	s.tidyPending(w, r, name)
	c, err := r.Cookie(name)
	if err != nil {
		if len(r.Cookies()) == 0 {
			// The browser refuses our cookies, or this is another
			// browser: starting over would end here again.
			e := stateMismatch(errors.New("no cookies at all"))
			e.Msg = "This sign-in cannot be completed: your browser sent no cookies. Signing in needs them: allow cookies " +
				"for this site (or open the link in the browser you started signing in with), then start over."
			return e
		}
		return stateMismatch(errors.New("no pre-login cookie for this state"))
	}
	// The pre-login cookie is used once, whatever happens next.
	expireLoginCookie(w, r, name)
	if !started {
		return notStartedHere()
	}
	var ls loginState
	if err := s.sealer.open("login", c.Value, &ls); err != nil {
		return stateMismatch(err)
	}
	if !constantEqual(ls.State, state) || s.now().Unix() >= ls.Expires || ls.Host != strings.ToLower(r.Host) {
		return stateMismatch(errors.New("state, expiry or host differ"))
	}
	p := s.providers[ls.Provider]
	if p == nil {
		return stateMismatch(errors.New("unknown provider " + ls.Provider))
	}
	if e := q.Get("error"); e != "" {
		return &Error{Code: CodeSignInFailed, Status: http.StatusForbidden, LinkURL: ls.retry(), LinkText: "Try again",
			Msg: "The sign-in provider did not sign you in (" + sanitizeCode(e) + "). Try again; if it happens again, " +
				"ask the administrator whether your account may use this application.",
			Err: fmt.Errorf("%w: %q: %q", errProviderError, truncate(e, 100), truncate(q.Get("error_description"), 300))}
	}
	op, err := p.discover(r.Context())
	if err != nil {
		return ls.unreachable(err)
	}
	ctx, cancel := s.ctx(r.Context())
	defer cancel()
	tok, err := op.oauth.Exchange(ctx, q.Get("code"), redirectURI(r), oauth2.VerifierOption(ls.Verifier))
	if err != nil {
		if endpointGone(err) {
			p.rediscover(err) // "Try again" then uses the endpoint it finds
			return ls.unreachable(err)
		}
		if refused(err) {
			return &Error{Code: CodeSignInFailed, Status: http.StatusForbidden, LinkURL: ls.retry(), LinkText: "Try again",
				Msg: "The sign-in provider refused to complete the sign-in. Try again.", Err: err}
		}
		return ls.unreachable(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return &Error{Code: CodeSignInFailed, Status: http.StatusForbidden, Msg: "The sign-in provider sent no ID token.",
			Err: errors.New("no id_token in the token response: the scopes must include openid")}
	}
	idt, err := p.verify(ctx, op, raw, false)
	if err == nil && !constantEqual(idt.Nonce, ls.Nonce) {
		err = errors.New("nonce differs")
	}
	var id *Identity
	if err == nil {
		id, err = p.identityFrom(idt, "session")
	}
	if keysUnavailable(err) {
		return ls.unreachable(err)
	}
	if err != nil {
		return &Error{Code: CodeSignInFailed, Status: http.StatusForbidden, LinkURL: ls.retry(), LinkText: "Try again",
			Msg: "The sign-in provider's answer could not be verified.", Err: err}
	}
	now := s.now()
	ss := &session{
		Provider: p.cfg.Name, Subject: id.Subject, Email: id.Email, Name: id.Name, Groups: id.Groups,
		Created: now.Unix(), Expires: now.Add(s.sessionLifetime()).Unix(), ID: randomToken(16),
		Home: strings.ToLower(r.Host),
	}
	if tok.RefreshToken != "" {
		ss.Token, ss.Refresh = tok.RefreshToken, idt.Expiry.Unix()
	}
	if _, err := s.writeSession(w, r, ss); err != nil {
		return err
	}
	if s.bindsSessions(r) {
		// This host accepts the new session (and no other: see
		// cookiebind.go).
		if err := s.setBound(w, r, ss); err != nil {
			return err
		}
	}
	s.log.Info("signed in", zap.String("provider", p.cfg.Name), zap.String("subject", id.Subject), zap.String("email", id.Email))
	ret := ls.Return
	if !safeReturn(ret) {
		ret = "/"
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, ret, http.StatusFound)
	return ErrHandled
}

// sanitizeCode keeps an OAuth error code's characters ([a-z_]) only.
func sanitizeCode(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= 64 {
			break
		}
		if 'a' <= c && c <= 'z' || c == '_' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// signedOutPage is the page after sign-out, with the provider's sign-out
// link when it has one (htmlpage says why the pages are not templates).
func signedOutPage(provider, logout string) string {
	var b strings.Builder
	b.WriteString(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex"><title>Signed out</title></head>
<body style="font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em">
<h1>Signed out</h1>
<p>You are signed out of the applications on this address. Your session at the sign-in provider may still be open; sign out there too on a shared computer.</p>
`)
	if logout != "" {
		b.WriteString(`<p><a id="provider-logout" href="` + htmlpage.URL(logout) + `">Sign out at ` + htmlpage.Text(provider) + " too</a></p>\n")
	}
	b.WriteString(`<p><a href="/">Sign in again</a></p>
</body></html>
`)
	return b.String()
}

// confirmSignOutPage asks before signing out; its form posts to logoutPath.
const confirmSignOutPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex"><title>Sign out?</title></head>
<body style="font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em">
<h1>Sign out?</h1>
<p>Another site sent you here to sign out of the applications on this address.</p>
<form method="post" action="` + logoutPath + `"><button type="submit" id="signout">Sign out</button></form>
<p><a href="/">Stay signed in</a></p>
</body></html>
`

// crossOrigin refuses sign-out POSTs that another site's page sent; made
// on first use, like the pages.
var crossOrigin = sync.OnceValue(http.NewCrossOriginProtection)

// prefetch reports whether the browser fetches r ahead of a navigation
// (Sec-Purpose: prefetch, Purpose: prefetch, X-Moz: prefetch).
func prefetch(r *http.Request) bool {
	for _, name := range [...]string{"Sec-Purpose", "Purpose", "X-Moz"} {
		if strings.Contains(strings.ToLower(r.Header.Get(name)), "prefetch") {
			return true
		}
	}
	return false
}

// logout ends the session (see endSession) and clears the session cookie
// (host-only and cookie_domain variants).
// Another site must not sign users out behind their backs: a GET that a
// browser marks as coming from another site (Sec-Fetch-Site) only gets a
// page that asks, whose button POSTs from this origin; a POST from another
// origin is refused. A HEAD or a prefetch gets the page that asks too. A
// GET from this origin, a typed URL or a client without Sec-Fetch-Site
// signs out at once.
func (s *Service) logout(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		// Ask instead when another site sent the browser here, and for a
		// request that no user made: a HEAD, or a prefetch of a page that
		// links here (Sec-Purpose, or the older Purpose) must not end the
		// session, which sign-out now ends everywhere.
		if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" ||
			r.Method == http.MethodHead || prefetch(r) {
			h.Set("Cache-Control", "no-store")
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("X-Content-Type-Options", "nosniff")
			_, _ = io.WriteString(w, confirmSignOutPage)
			return ErrHandled
		}
	case http.MethodPost:
		if err := crossOrigin().Check(r); err != nil {
			return &Error{Code: CodeForbidden, Status: http.StatusForbidden,
				Msg:     "Sign-out refused: the request came from another site. Open this address yourself to sign out.",
				LinkURL: logoutPath, LinkText: "Sign out", Err: err}
		}
	default:
		h.Set("Allow", "GET, HEAD, POST")
		http.Error(w, "use GET or POST to sign out", http.StatusMethodNotAllowed)
		return ErrHandled
	}
	var provider, logout string
	if p := s.endSession(r); p != nil {
		provider, logout = p.cfg.Name, p.logoutURL(context.WithoutCancel(r.Context()))
	}
	s.clearSessionCookie(w, r)
	if s.bindsSessions(r) {
		// A host-only cookie from before cookie_domain was set.
		http.SetCookie(w, &http.Cookie{Name: "__Host-" + sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
		clearBound(w)
	}
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = io.WriteString(w, signedOutPage(provider, logout))
	return ErrHandled
}
