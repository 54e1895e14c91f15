package preauth

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Session binding under cookie_domain. With cookie_domain and TLS the
// session cookie is __Secure-sallyport_session with Domain=<cookie_domain>,
// which any HTTPS host under the same registrable domain can set as well
// (Domain=<parent>, and with a longer Path so that browsers send it first):
// an attacker who signed in himself could plant his session in a victim's
// browser, and the victim would use the apps as him (session fixation). So
// there a session counts on a host only if the host's own
// __Host-sallyport_bound cookie, which no other host can set, names it:
//
//   - A session carries its ID (session.ID) and its home, the host whose
//     callback made it (session.Home); renewals keep both. That callback
//     binds the home to the session (setBound).
//   - Every cookie of the session's name is read, in any order, chunks
//     joined (sessionValues): the session used is the one the bound
//     cookie names (openBound), so a planted duplicate never wins.
//   - A page load on a host that has not bound the browser's session yet
//     (another app under cookie_domain, visited for the first time) goes
//     to the session's home, bindPath, with a sealed request (bindRequest:
//     a nonce, the host, the page to return to), and leaves a per-attempt
//     __Host-sallyport_binding_<id> cookie (id derived from the nonce) on
//     the host. The home mints a ticket for the session that ITS bound
//     cookie names, valid bindTicketLife, and sends the browser back to
//     the host's boundPath with it. The host binds that session if the
//     ticket opens, has not expired, names the host, carries the nonce of
//     one of its binding cookies, and names one of the session cookies it
//     receives; then returns to the page.
//   - A home that cannot vouch (no session bound there, or the planted
//     session's home) says so in the ticket; the host tries the home of
//     the next session cookie, and when none is left it signs the user in
//     itself, which binds it to the new session. A ticket that is refused
//     (another browser's, expired, another host's, tampered with) binds
//     nothing and gets an error page.
//   - Requests that are not page loads on an unbound host are treated as
//     without a session. Sessions without a home (made by earlier
//     versions) never count: their users sign in again. Sign-out clears
//     the host's bound cookie.
//
// Hosts outside cookie_domain, and plain HTTP, are not concerned: their
// session cookie is __Host- (only the host sets it) or anyone's anyway.

const (
	// boundCookie names, on one host, the session that host accepts.
	boundCookie = "__Host-sallyport_bound"
	// bindingCookiePfx names the pending binding of a host:
	// __Host-sallyport_binding_<id>=<end>, id = stateID(nonce).
	bindingCookiePfx = "__Host-sallyport_binding_"
	bindPath         = "/.sallyport/auth/bind"
	boundPath        = "/.sallyport/auth/bound"
	// bindingLife bounds a binding's round trip: the binding cookie and
	// the request last that long.
	bindingLife = 2 * time.Minute
	// bindTicketLife is how long a ticket is valid from its minting, on
	// the minting replica's clock; the host accepts it refreshClockSkew
	// longer, since that replica's clock may be behind its own.
	bindTicketLife = 30 * time.Second
	// maxBindHomes bounds the homes a binding tries, maxSessionValues the
	// joined session cookie values opened per request, maxSameName the
	// cookies of one name read: the last ones the browser sends, where
	// its Path=/ cookies are (see sessionValues). maxSameName chunks of
	// each name join into at most maxSessionValues values.
	maxBindHomes     = 4
	maxSameName      = 2
	maxSessionValues = maxSameName * (1 + maxSameName + maxSameName*maxSameName + maxSameName*maxSameName*maxSameName)
	// maxBindReturn bounds the return address carried through a binding
	// (longer: its path only, then "/").
	maxBindReturn = 2048
)

// BindPath and BoundPath are the binding's steps, on every host under
// cookie_domain (the gateway's metrics count their answers).
const (
	BindPath  = bindPath
	BoundPath = boundPath
)

// ErrBindStarted and ErrBound are ErrHandled (errors.Is) that tell the
// gateway's metrics what the answer was: ErrBindStarted, a page load sent
// to a session's home to be vouched for (by Authorize, or by boundPath
// asking the next home); ErrBound, boundPath bound its host and sent the
// browser back to the page.
var (
	ErrBindStarted = fmt.Errorf("%w: sent to the session's home host to be bound", ErrHandled)
	ErrBound       = fmt.Errorf("%w: the host was bound to the session", ErrHandled)
)

// bindsSessions reports whether sessions must be bound on r's host: the
// session cookie is shared through cookie_domain and is __Secure-.
func (s *Service) bindsSessions(r *http.Request) bool {
	return secure(r) && s.cookieDomain(r) != ""
}

// inCookieDomain reports whether host (with or without a port) is
// cookie_domain or under it, and a name a redirect can go to: letters,
// digits, '-', '_' and dots, and a numeric port. (The hosts it is asked
// about are earlier requests' Host headers, carried in sealed values; Go's
// HTTP/1 and HTTP/2 servers refuse many odd ones, but not all, as '%' or
// '!'.)
func (s *Service) inCookieDomain(host string) bool {
	d := s.cfg.CookieDomain
	name, port, hasPort := strings.Cut(host, ":")
	if d == "" || name == "" || hasPort && (port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "") {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	h := strings.ToLower(strings.TrimSuffix(name, "."))
	return h == d || strings.HasSuffix(h, "."+d)
}

// boundState is the sealed content of a host's bound cookie.
type boundState struct {
	ID   string `json:"i"` // the session's ID
	Host string `json:"h"` // the host that set it
}

// boundID returns the session ID r's host has bound ("" when none).
func (s *Service) boundID(r *http.Request) string {
	c, err := r.Cookie(boundCookie)
	if err != nil {
		return ""
	}
	var b boundState
	if s.sealer.open("bound", c.Value, &b) != nil || b.Host != strings.ToLower(r.Host) {
		return ""
	}
	return b.ID
}

// setBound binds r's host to ss, for as long as ss lasts.
func (s *Service) setBound(w http.ResponseWriter, r *http.Request, ss *session) error {
	value, err := s.sealer.seal("bound", boundState{ID: ss.ID, Host: strings.ToLower(r.Host)})
	if err != nil {
		return err
	}
	age := int(time.Unix(ss.Expires, 0).Sub(s.now()) / time.Second)
	http.SetCookie(w, &http.Cookie{Name: boundCookie, Value: value, Path: "/", MaxAge: max(age, 1),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	return nil
}

// clearBound makes the browser drop r's host's bound cookie.
func clearBound(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: boundCookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode})
}

// bindable reports whether ss can be bound: made by a version that records
// its ID and home.
func (ss *session) bindable() bool { return ss.ID != "" && ss.Home != "" }

// sessionValues returns what r's session cookies can join into, the last
// sent first: the last maxSameName cookies of the session's name (another
// host may have set one too), each one alone and, when it fills a whole
// chunk, followed by each combination of the last maxSameName chunk
// cookies NAME_1… (duplicates too), the longest joins first. Browsers send
// cookies with longer paths first: another host can put any number of
// cookies of a name before the gateway's (Path=/), which would crowd them
// out of the first ones, but after them at most one per parent domain of
// cookie_domain (Domain=<parent>, Path=/). present reports whether r
// carries a cookie of the name at all.
func (s *Service) sessionValues(r *http.Request) (values []string, present bool) {
	base := s.sessionCookieName(r)
	var parts [maxChunks][]string
	for i := range maxChunks {
		cs := r.CookiesNamed(chunkName(base, i))
		for j := len(cs) - 1; j >= 0 && len(parts[i]) < maxSameName; j-- {
			if v := cs[j].Value; v != "" && len(v) <= maxCookieValue {
				parts[i] = append(parts[i], v)
			}
		}
	}
	var join func(prefix string, i int)
	join = func(prefix string, i int) {
		// A part shorter than a chunk ends the value (setSessionCookie
		// fills every chunk but the last).
		if i < maxChunks && len(prefix) == i*maxCookieValue {
			for _, p := range parts[i] {
				if len(values) == maxSessionValues {
					return
				}
				join(prefix+p, i+1)
			}
		}
		if len(values) < maxSessionValues {
			values = append(values, prefix)
		}
	}
	for _, v := range parts[0] {
		join(v, 1)
	}
	return values, len(parts[0]) > 0
}

// boundSessions is what r's session cookies hold on a host that binds
// sessions.
type boundSessions struct {
	bound  *session   // the session the host's bound cookie names; nil: none
	others []*session // the other sessions that can be bound and have not ended, in order
	opened bool       // some cookie opened as a session
}

// readBound opens r's session cookies (see sessionValues) and sorts them.
// Of several that the bound cookie names, one that has not ended wins.
func (s *Service) readBound(r *http.Request) (boundSessions, bool) {
	var out boundSessions
	values, present := s.sessionValues(r)
	id := s.boundID(r)
	seen := map[string]bool{}
	for _, v := range values {
		var ss session
		if s.sealer.open("session", v, &ss) != nil {
			continue
		}
		out.opened = true
		if !ss.bindable() {
			continue
		}
		live := s.ended(&ss) == ""
		switch {
		case ss.ID == id && (out.bound == nil || live && s.ended(out.bound) != ""):
			out.bound = &ss
		case ss.ID != id && live && !seen[ss.ID]:
			seen[ss.ID] = true
			out.others = append(out.others, &ss)
		}
	}
	return out, present
}

// openBound is openSession on a host that binds sessions: the session its
// bound cookie names; else nil and "unbound" when r carries sessions that
// the host can bind, "invalid" when no cookie of the name opens, and ""
// otherwise (none, or only sessions of earlier versions, which do not
// count: the user signs in again).
func (s *Service) openBound(r *http.Request) (*session, string) {
	bs, present := s.readBound(r)
	switch {
	case bs.bound != nil:
		return bs.bound, ""
	case len(bs.others) > 0:
		return nil, whyUnbound
	case present && !bs.opened:
		return nil, "invalid"
	}
	return nil, ""
}

// whyUnbound: r carries a session that its host has not bound (yet).
const whyUnbound = "unbound"

// bindHomes returns the hosts that may vouch for one of r's sessions: the
// homes of the sessions r carries and its host has not bound, in order,
// without r's host itself (which has no bound session to vouch for).
func (s *Service) bindHomes(r *http.Request) []string {
	bs, _ := s.readBound(r)
	self := strings.ToLower(r.Host)
	var homes []string
	for _, ss := range bs.others {
		h := strings.ToLower(ss.Home)
		if h == self || !s.inCookieDomain(h) || slices.Contains(homes, h) {
			continue
		}
		if homes = append(homes, h); len(homes) == maxBindHomes {
			break
		}
	}
	return homes
}

// bindTicket is a binding's request (to the home, sealed as "bind request")
// and its answer (from the home, sealed as "bind ticket").
type bindTicket struct {
	// ID is the session the home vouches for; "" in a request, and in a
	// ticket from a home that has no session bound.
	ID       string `json:"i,omitempty"`
	Nonce    string `json:"n"` // names the binding cookie of the host
	Host     string `json:"h"` // the host to bind
	Return   string `json:"r"` // the host's page to return to
	Provider string `json:"p"` // the app's provider (to sign in with when no home vouches)
	// Homes are the hosts to ask in turn (see bindHomes, run on the page:
	// the binding's own paths may not get every cookie the page gets, as
	// one with a longer Path), Home the index of the one asked.
	Homes   []string `json:"hs"`
	Home    int      `json:"k"`
	Expires int64    `json:"x"`
}

// startBinding sends a page load on a host that has not bound r's session
// to the session's home (see above). It reports false, having written
// nothing, when no home can be asked.
func (s *Service) startBinding(w http.ResponseWriter, r *http.Request, p *provider) (bool, error) {
	homes := s.bindHomes(r)
	if len(homes) == 0 {
		return false, nil
	}
	ret := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		ret += "?" + r.URL.RawQuery
	}
	req := bindTicket{Nonce: randomToken(16), Host: strings.ToLower(r.Host), Return: shortReturn(ret),
		Provider: p.cfg.Name, Homes: homes, Expires: s.now().Add(bindingLife).Unix()}
	http.SetCookie(w, &http.Cookie{Name: bindingCookiePfx + stateID(req.Nonce), Value: strconv.FormatInt(req.Expires, 10),
		Path: "/", MaxAge: int(bindingLife / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	return true, s.askHome(w, r, req)
}

// askHome redirects to the home req.Homes[req.Home] with req
// (ErrBindStarted).
func (s *Service) askHome(w http.ResponseWriter, r *http.Request, req bindTicket) error {
	q, err := s.sealer.seal("bind request", req)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "https://"+req.Homes[req.Home]+bindPath+"?q="+url.QueryEscape(q), http.StatusFound)
	return ErrBindStarted
}

// shortReturn is ret if it is a safe return address (safeReturn) short
// enough to carry through a binding; else its path, else "/".
func shortReturn(ret string) string {
	if !safeReturn(ret) {
		return "/"
	}
	if len(ret) > maxBindReturn {
		ret, _, _ = strings.Cut(ret, "?")
	}
	if len(ret) > maxBindReturn {
		return "/"
	}
	return ret
}

// bindRefused is the answer to a binding step that does not belong to a
// binding this browser started here, or arrives too late. Nothing is bound;
// the link goes back to the page, which starts a binding of its own.
func bindRefused(why string, ret string, err error) *Error {
	if !safeReturn(ret) {
		ret = "/"
	}
	return &Error{Code: CodeStateMismatch, Status: http.StatusBadRequest, Err: err, LinkURL: ret, LinkText: "Continue",
		Msg: "Your sign-in could not be carried over to this address: " + why + ". Nothing was changed. " +
			"Continue to the page to try again; if another site sent you here, this protected you from being " +
			"signed in to someone else's account."}
}

// bind serves bindPath on a session's home: it answers the request in the
// query with a ticket for the session that this host has bound (or one
// saying there is none), sent to the asking host's boundPath.
func (s *Service) bind(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return bindRefused("the request was not a page load", "/", errBindMethod)
	}
	if !s.bindsSessions(r) {
		return bindRefused("this address does not share sign-ins (no cookie_domain, or not HTTPS)", "/", errBindNotShared)
	}
	var req bindTicket
	if err := s.sealer.open("bind request", r.URL.Query().Get("q"), &req); err != nil {
		return bindRefused("the link is damaged", "/", err)
	}
	if !s.inCookieDomain(req.Host) {
		return bindRefused("the link names an address outside the shared domain", "/", errBindHost)
	}
	back := "https://" + req.Host
	if s.now().Unix() >= req.Expires+int64(refreshClockSkew/time.Second) {
		return bindRefused("it took too long", back+shortReturn(req.Return), errBindExpired)
	}
	t := req
	t.Expires = s.now().Add(bindTicketLife).Unix()
	if ss, why := s.openBound(r); ss != nil && s.ended(ss) == "" {
		t.ID = ss.ID
	} else {
		s.log.Info("session binding: this host has no session bound to vouch for; the other host tries another or signs in",
			zap.String("host", r.Host), zap.String("for", req.Host), zap.String("why", why))
	}
	value, err := s.sealer.seal("bind ticket", t)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, back+boundPath+"?t="+url.QueryEscape(value), http.StatusFound)
	return ErrHandled
}

// Errors of refused binding steps, for logs and tests.
var (
	errBindMethod     = errBind("method is not GET or HEAD")
	errBindNotShared  = errBind("host does not bind sessions")
	errBindHost       = errBind("ticket is for another host")
	errBindExpired    = errBind("ticket or request has expired")
	errBindNoBinding  = errBind("no binding cookie of this browser carries the ticket's nonce")
	errBindNoProvider = errBind("ticket names an unknown provider")
)

type errBind string

func (e errBind) Error() string { return "session binding: " + string(e) }

// bound serves boundPath on the host being bound: it checks the ticket and
// binds the session it names, then returns to the page (see above).
func (s *Service) bound(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return bindRefused("the request was not a page load", "/", errBindMethod)
	}
	if !s.bindsSessions(r) {
		return bindRefused("this address does not share sign-ins (no cookie_domain, or not HTTPS)", "/", errBindNotShared)
	}
	var t bindTicket
	if err := s.sealer.open("bind ticket", r.URL.Query().Get("t"), &t); err != nil {
		return bindRefused("the link is damaged", "/", err)
	}
	now := s.now().Unix()
	switch {
	case t.Host != strings.ToLower(r.Host):
		return bindRefused("the link was made for another address", "/", errBindHost)
	case now >= t.Expires+int64(refreshClockSkew/time.Second) ||
		t.Expires > now+int64((bindTicketLife+refreshClockSkew)/time.Second):
		return bindRefused("it took too long", t.Return, errBindExpired)
	case !s.binding(r, t.Nonce):
		// Another browser's ticket, or this browser's binding has ended.
		s.log.Warn("session binding refused: the ticket does not belong to a binding this browser started on this host, "+
			"as when another site sends a user here to sign them in to someone else's account",
			zap.String("host", r.Host), zap.String("user_agent", truncate(r.UserAgent(), 200)))
		return bindRefused("this browser did not ask for it", t.Return, errBindNoBinding)
	}
	if t.ID != "" {
		bs, _ := s.readBound(r)
		for _, ss := range bs.others {
			if ss.ID == t.ID {
				if err := s.setBound(w, r, ss); err != nil {
					return err
				}
				expireBinding(w, t.Nonce)
				s.log.Info("session bound to this host", zap.String("host", r.Host), zap.String("subject", ss.Subject))
				w.Header().Set("Cache-Control", "no-store")
				http.Redirect(w, r, shortReturn(t.Return), http.StatusFound)
				return ErrBound
			}
		}
		if bs.bound != nil && bs.bound.ID == t.ID { // bound meanwhile (another tab)
			expireBinding(w, t.Nonce)
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, shortReturn(t.Return), http.StatusFound)
			return ErrBound
		}
	}
	// The home had no session bound, or one this browser does not send
	// here: ask the next home (the binding cookie lasts on), or sign in
	// here, which binds this host to the new session.
	if next := t.Home + 1; next >= 0 && next < min(len(t.Homes), maxBindHomes) && s.inCookieDomain(t.Homes[next]) {
		req := t
		req.ID, req.Home, req.Expires = "", next, s.now().Add(bindingLife).Unix()
		http.SetCookie(w, &http.Cookie{Name: bindingCookiePfx + stateID(req.Nonce), Value: strconv.FormatInt(req.Expires, 10),
			Path: "/", MaxAge: int(bindingLife / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
		return s.askHome(w, r, req)
	}
	expireBinding(w, t.Nonce)
	p := s.providers[t.Provider]
	if p == nil {
		return bindRefused("the application's sign-in provider is no longer configured", t.Return, errBindNoProvider)
	}
	page := *r
	u, err := url.ParseRequestURI(shortReturn(t.Return))
	if err != nil {
		u = &url.URL{Path: "/"}
	}
	page.URL = u
	return s.startSignIn(w, &page, p)
}

// binding reports whether r carries the binding cookie of nonce, not ended.
func (s *Service) binding(r *http.Request, nonce string) bool {
	if nonce == "" {
		return false
	}
	c, err := r.Cookie(bindingCookiePfx + stateID(nonce))
	if err != nil {
		return false
	}
	e, err := strconv.ParseInt(c.Value, 10, 64)
	now := s.now().Unix()
	return err == nil && e > now && e <= now+int64((bindingLife+refreshClockSkew)/time.Second)
}

// expireBinding makes the browser drop the binding cookie of nonce.
func expireBinding(w http.ResponseWriter, nonce string) {
	http.SetCookie(w, &http.Cookie{Name: bindingCookiePfx + stateID(nonce), Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: true, SameSite: http.SameSiteLaxMode})
}
