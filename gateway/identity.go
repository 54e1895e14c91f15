package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway/preauth"
)

// checkPreauth makes sure every route with a Preauth policy can be
// enforced, and gives each route a copy of its policy whose public paths
// are in the normalised form requests are compared in. A public path that
// normalises to something else ("/a/../b", "/a//b") is refused: what the
// administrator wrote must be what is matched.
func checkPreauth(cfg *Config) error {
	routes := make([]Route, len(cfg.Routes))
	copy(routes, cfg.Routes)
	for i := range routes {
		p := routes[i].Preauth
		if p == nil {
			continue
		}
		if cfg.Preauth == nil {
			return fmt.Errorf("gateway: app %q requires sign-in but no pre-authentication is configured", routes[i].App)
		}
		if err := cfg.Preauth.CheckPolicy(p); err != nil {
			return fmt.Errorf("gateway: app %q: %w", routes[i].App, err)
		}
		pol := *p
		pol.PublicPaths = make([]string, len(p.PublicPaths))
		for j, pp := range p.PublicPaths {
			cp, err := normalisePath(pp)
			want := strings.TrimRight(cp.Match, "/")
			if err != nil || want != strings.TrimRight(pp, "/") {
				return fmt.Errorf("gateway: app %q: public path %q is not a normalised path (no //, . or .. segments, backslashes or %%-escapes other than %%2F)",
					routes[i].App, pp)
			}
			pol.PublicPaths[j] = want
		}
		routes[i].Preauth = &pol
	}
	cfg.Routes = routes
	return nil
}

// admit normalises the request path, serves the gateway's own endpoints,
// routes the request and, for apps with pre-authentication, decides whether
// it may pass. It reports false when it has answered the request itself.
// Routing and the policy judge the same normalised path that is forwarded.
func (h *proxyHandler) admit(w http.ResponseWriter, r *http.Request, st *exchangeState) bool {
	if r.Method == http.MethodConnect {
		// The gateway publishes web applications; it is no forward
		// proxy. Relayed, a CONNECT would reach the backend as one, and
		// a 2xx answer would tell the client a tunnel was open.
		st.errCode = CodeBadRequest
		e := NewError(CodeBadRequest, "The gateway does not support CONNECT: it publishes web applications "+
			"and is not a forward proxy. Send the request to the application's URL instead.", nil)
		e.Status = http.StatusNotImplemented
		WriteError(w, r, e)
		return false
	}
	// RawPath, when set, is the path as the client wrote it (EscapedPath
	// would turn a literal backslash into %5C, which means something else).
	raw := r.URL.RawPath
	if raw == "" {
		raw = r.URL.EscapedPath()
	}
	cp, err := normalisePath(raw)
	if err != nil {
		st.errCode = CodeBadRequest
		WriteError(w, r, NewError(CodeBadRequest, "The request path is malformed or ambiguous (a bad %-escape, "+
			"a control character, an encoded backslash, or a dot segment hidden behind %2F, a ;parameter, a second "+
			"decoding or look-alike dots and slashes such as ．．). Fix the URL.", err))
		return false
	}
	// RawPath keeps the client's spelling of characters that need no
	// escape ("/a!b" stays, where escaping Path would send "/a%21b").
	r.URL.Path, r.URL.RawPath = cp.Path, cp.Raw
	pa := h.g.cfg.Preauth
	if pa != nil {
		if handled, err := pa.ServeEndpoint(w, r, cp.Match); handled {
			if answered, counted := preauthEndpoint(cp.Match); counted && !clientLeft(r, err) {
				h.g.metrics.preauthDone(err, answered)
			}
			h.preauthError(w, r, st, err)
			return false
		}
	}
	router := h.g.router.Load()
	st.route = router.Match(r.Host, cp.Match)
	if st.route == nil {
		st.errCode = CodeNoRoute
		WriteError(w, r, NewError(CodeNoRoute, "", nil))
		return false
	}
	// An encoded slash, a ";parameter" and the case of letters are data
	// here, but many backends read them otherwise: they decode %2F (WSGI's
	// PATH_INFO, nginx's $uri, Go before 1.22), drop ";..." from a segment
	// (Tomcat, Jetty, Spring), ignore case (IIS, ASP.NET), decode twice,
	// read a path that is not UTF-8 in a legacy code page (IIS), compose
	// letters (macOS file systems) or simplify them (Windows' best fit).
	// "/admin%2Fusers", "/admin;x/users" or "/ADMIN/users", routed by "/"
	// to an app without sign-in, reached such a backend as "/admin/users",
	// past the app that path_prefix /admin protects.
	if backendReadsElsewhere(router, r.Host, cp.Match, st.route) {
		st.errCode = CodeBadRequest
		WriteError(w, r, NewError(CodeBadRequest, "The request path, as some servers read it (an encoded slash %2F "+
			"as /, without a ;parameter, ignoring upper and lower case, decoded a second time, with its letters "+
			"composed or decomposed alike or simplified to plain ones (a fullwidth or accented letter as its ASCII "+
			"letter), or, when it is not UTF-8, in a legacy code page), belongs to another application than the one "+
			"it is routed to. Write the path as that application's own links do: slashes as /, no ;parameter, the "+
			"same upper and lower case and the same letters, each character escaped once, in UTF-8.", nil))
		return false
	}
	if st.route.Preauth == nil {
		return true
	}
	id, err := pa.Authorize(w, r, st.route.Preauth, cp.Match)
	if !clientLeft(r, err) {
		h.g.metrics.preauthDone(err, preauthStarted)
	}
	if err != nil {
		h.preauthError(w, r, st, err)
		return false
	}
	if id != nil {
		tok, err := pa.Assert(id, st.route.App, st.requestID)
		if err != nil {
			h.preauthError(w, r, st, err)
			return false
		}
		st.identity, st.assertion = id, tok
	}
	return true
}

// preauthError answers a refusal of the pre-authentication (nothing to do
// for preauth.ErrHandled: the answer was written).
//
// A failure whose request's context has ended is the client's leaving, not
// the provider's failure: client-closed, no answer, no warning, and not
// counted in preauth_total (clientLeft).
func (h *proxyHandler) preauthError(w http.ResponseWriter, r *http.Request, st *exchangeState, err error) {
	if err == nil || errors.Is(err, preauth.ErrHandled) {
		return
	}
	if clientLeft(r, err) {
		// The provider call ended with the request: the browser left
		// (closed the tab during the sign-in's code exchange), which says
		// nothing about the provider.
		st.errCode = CodeClientClosed
		if r.Context().Value(http.ServerContextKey) != nil {
			// No response at all, as exchangeFailed: a client that only
			// half-closed would read net/http's empty 200 OK.
			panic(http.ErrAbortHandler)
		}
		return
	}
	var pe *preauth.Error
	var e *Error
	if errors.As(err, &pe) {
		e = NewError(pe.Code, pe.Msg, pe.Err)
		e.Status, e.LinkURL, e.LinkText = pe.Status, pe.LinkURL, pe.LinkText
		if pe.WWWAuthenticate != "" {
			w.Header().Set("WWW-Authenticate", pe.WWWAuthenticate)
		}
	} else {
		e = NewError(CodeSignInFailed, "Signing in failed inside the gateway. Try again.", err)
		e.Status = http.StatusInternalServerError
	}
	st.errCode = e.Code
	if e.Code == CodeAuthProviderUnreachable || e.Status >= 500 {
		h.g.log.Warn("pre-authentication failed", zap.String("code", e.Code), zap.Error(err),
			zap.String("request_id", st.requestID))
	}
	WriteError(w, r, e)
}

// setIdentity runs once hop-by-hop headers (including any the client named
// in Connection) were removed, by outRequest or by the ReverseProxy before
// Rewrite, so the headers set here always reach the app. Client-sent identity headers are removed
// for every app; so are the gateway's cookies when it signs users in (a
// browser sends the session cookie to every app on its host or
// cookie_domain, and an app without sign-in must not be able to replay
// it). Apps with pre-authentication get the signed-in user's identity.
func (h *proxyHandler) setIdentity(out, in *http.Request, st *exchangeState) {
	h.setIdentityHeaders(out.Header, st)
	scrubRequestTrailers(out, in, st)
}

// setIdentityHeaders is setIdentity's part for the header map.
func (h *proxyHandler) setIdentityHeaders(hdr http.Header, st *exchangeState) {
	oidc := st.route.Preauth != nil
	preauth.StripIdentityHeaders(hdr, oidc)
	if h.g.cfg.Preauth != nil {
		preauth.StripGatewayCookies(hdr)
	}
	if oidc && st.identity != nil {
		preauth.SetIdentityHeaders(hdr, st.identity, st.assertion)
	}
}

// scrubRequestTrailers is setIdentity's part for the trailers of a request
// body.
func scrubRequestTrailers(out, in *http.Request, st *exchangeState) {
	if b := out.Body; b != nil && b != http.NoBody && in.Trailer != nil {
		// Only declared trailers reach the app (the relay shares the
		// map net/http fills), so a request without any needs no scrub.
		// The declared names go with the head; the values, which net/http
		// puts back in the map at the body's end, when it ends.
		oidc := st.route.Preauth != nil
		scrubTrailers(in.Trailer, oidc)
		out.Body = &trailerScrubber{ReadCloser: b, in: in, oidc: oidc}
	}
}

// upgradeResponse is the ReverseProxy's ModifyResponse (the upgrade path:
// WebSockets): as writeResponse does on the relay path, it drops an app's
// Set-Cookie for one of the gateway's cookies once the gateway signs users
// in, whether the backend switched protocols (101) or answered otherwise.
// Without it, an app without sign-in could plant an attacker's session
// (session fixation) or pre-login cookie (login CSRF) in a visitor's
// browser by answering any request that carries "Connection: Upgrade".
func (h *proxyHandler) upgradeResponse(res *http.Response) error {
	if h.g.cfg.Preauth == nil {
		return nil
	}
	if vv, ok := res.Header["Set-Cookie"]; ok {
		if vv = preauth.DropGatewaySetCookies(vv); len(vv) == 0 {
			delete(res.Header, "Set-Cookie")
		} else {
			res.Header["Set-Cookie"] = vv
		}
	}
	return nil
}

// trailerScrubber removes identity headers from the request's trailers:
// the server fills the trailer map (shared with the outgoing request) when
// the body reaches its end, so that is when they are removed, before the
// relay sends them.
type trailerScrubber struct {
	io.ReadCloser
	in   *http.Request
	oidc bool // the app's preauth: strip other proxies' identity headers too
}

func (t *trailerScrubber) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF {
		scrubTrailers(t.in.Trailer, t.oidc)
	}
	return n, err
}

// scrubTrailers removes from request trailers what a client must not send
// an app: identity headers (oidc: other proxies' too) and the gateway's
// forwarding headers, in any spelling, X-Request-Id too: the request id is
// the gateway's, in the head (isForwardedHeader leaves that spelling to
// outRequest, which replaces it there).
func scrubTrailers(tr http.Header, oidc bool) {
	preauth.StripIdentityHeaders(tr, oidc)
	delete(tr, RequestIDHeader)
	for k := range tr {
		if isForwardedHeader(k) {
			delete(tr, k)
		}
	}
}

// clientLeft reports whether err, a failure of pre-authentication, came
// with r's client gone: the provider calls end with the request.
func clientLeft(r *http.Request, err error) bool {
	return err != nil && !errors.Is(err, preauth.ErrHandled) && r.Context().Err() != nil
}
