package preauth

import (
	"net/http"
	"strings"

	"github.com/sallyport/sallyport/internal/assertion"
)

// Identity headers the gateway sets for apps with preauth oidc.
const (
	HeaderUser      = assertion.HeaderUser   // the provider's subject (sub)
	HeaderEmail     = assertion.HeaderEmail  // verified email, if any
	HeaderGroups    = assertion.HeaderGroups // comma-separated, each group %-encoded
	HeaderAssertion = assertion.Header       // signed JWT with all of the above
)

// otherIdentityHeaders are identity headers other proxies set and apps may
// trust; a client must not be able to send them to an app with preauth oidc.
var otherIdentityHeaders = []string{
	"remote-user", "x-remote-user", "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
	"x-forwarded-preferred-username", "x-forwarded-access-token", "x-auth-request-user",
	"x-auth-request-email", "x-auth-request-groups", "x-auth-request-preferred-username",
	"x-auth-request-access-token",
}

// StripIdentityHeaders removes every header a client could use to claim an
// identity: all X-Sallyport-* headers, and with oidc also the identity
// headers of other proxies, in every spelling that some server takes for
// the same name (case, and any byte other than a letter or digit for "-":
// X_Sallyport_User for CGI, PHP and WSGI, X.Sallyport.User for lighttpd;
// see assertion.FoldEqual).
func StripIdentityHeaders(h http.Header, oidc bool) {
	for k := range h {
		if isIdentityHeader(k, oidc) {
			delete(h, k)
		}
	}
}

func isIdentityHeader(k string, oidc bool) bool {
	if assertion.IsHeader(k) {
		return true
	}
	if !oidc {
		return false
	}
	for _, o := range otherIdentityHeaders {
		if assertion.FoldEqual(k, o) {
			return true
		}
	}
	return false
}

// Assert signs an assertion of id for app (its aud).
func (s *Service) Assert(id *Identity, app, requestID string) (string, error) {
	return s.cfg.Keys.Sign(assertion.Claims{
		Email: id.Email, Name: id.Name, Groups: id.Groups, Provider: id.Provider, Auth: id.Auth, Request: requestID,
		Claims: claimsFor(id.Subject, app),
	})
}

// SetIdentityHeaders sets the identity headers for id with its assertion
// tok. Call it after StripIdentityHeaders and after the reverse proxy
// removed hop-by-hop headers, so that a client naming these headers in
// Connection cannot remove them.
func SetIdentityHeaders(h http.Header, id *Identity, tok string) {
	assertion.SetHeaders(h, id.Subject, id.Email, id.Groups, tok)
}

// StripGatewayCookies removes the gateway's own cookies (session and
// pre-login) from the Cookie headers sent to an app.
func StripGatewayCookies(h http.Header) {
	vals := h.Values("Cookie")
	found := false
	for _, v := range vals {
		if strings.Contains(v, cookieNameMarker) {
			found = true
		}
	}
	if !found {
		return
	}
	var kept []string
	for _, v := range vals {
		for _, part := range strings.Split(v, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if name != "" && !IsGatewayCookie(name) {
				kept = append(kept, strings.TrimSpace(part))
			}
		}
	}
	if len(kept) == 0 {
		h.Del("Cookie")
		return
	}
	h.Set("Cookie", strings.Join(kept, "; "))
}

// DropGatewaySetCookies returns vv, the Set-Cookie fields of an app's
// response, without those that set one of the gateway's cookies (session
// or pre-login, with or without a __Host-/__Secure- prefix). An app that
// needs no sign-in, on the same host or under cookie_domain, could
// otherwise plant a session of the attacker's in a victim's browser
// (session fixation) or a pre-login cookie that completes the attacker's
// sign-in there (login CSRF). vv itself is returned when nothing is
// dropped.
func DropGatewaySetCookies(vv []string) []string {
	for i, v := range vv {
		if !isGatewaySetCookie(v) {
			continue
		}
		kept := append([]string(nil), vv[:i]...)
		for _, w := range vv[i+1:] {
			if !isGatewaySetCookie(w) {
				kept = append(kept, w)
			}
		}
		return kept
	}
	return vv
}

// isGatewaySetCookie reports whether the Set-Cookie value v sets a cookie
// that browsers send as one of the gateway's. That includes a cookie
// without a name ("=sallyport_session=x", or "sallyport_session" without
// "="): browsers keep it and send its value alone, "Cookie:
// sallyport_session=x", which the gateway reads as its session cookie.
func isGatewaySetCookie(v string) bool {
	pair, _, _ := strings.Cut(v, ";")
	name, value, ok := strings.Cut(pair, "=")
	name = strings.TrimSpace(name)
	if !ok {
		name, value = "", pair
	}
	if name == "" {
		name, _, _ = strings.Cut(strings.TrimSpace(value), "=")
		name = strings.TrimSpace(name)
	}
	return IsGatewayCookie(name)
}
