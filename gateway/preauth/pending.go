package preauth

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Pending sign-ins. Every page load without a session starts a sign-in
// with a pre-login cookie of its own (see startSignIn), which the browser
// keeps for loginCookieLife and sends to the callback with all the others.
// A user who reloads a page, or restores a window of tabs, before signing
// in collects them: with long addresses, twenty make the callback's Cookie
// header outgrow the gateway's head limit (64 KiB, then 431) and what
// proxies and browsers accept, and no sign-in could complete until they
// expired. So a browser holds at most maxPendingSignIns: starting another
// expires the oldest.
//
// The pre-login cookies are sent to the callback path only, so a page load
// cannot see them. The pending cookie (Path=/) lists them instead, each as
// its name's id and its end; a start reads it, adds its own, and expires
// the oldest beyond the bound by name. Starts at the same moment (a window
// of tabs restored) each read the list before the others wrote it, so some
// cookies can miss from the list; the callback, which receives them all,
// expires the oldest beyond the bound and writes the list anew
// (tidyPending).

// The pending sign-ins also bind a sign-in to the browser that started it
// (startedHere). Under TLS a pre-login cookie is __Secure-, which only an
// HTTPS page can set, but another HTTPS host under the same parent domain
// can still set it with Domain=<parent>: an attacker who starts a sign-in
// of his own at the gateway could plant its pre-login cookie in a victim's
// browser from such a host and send the victim to the callback with his
// code and state, signing the victim in as himself (login CSRF). So under
// TLS the callback completes only the sign-ins that the browser's __Host-
// cookies, which no other host can set, say it started here: the pending
// cookie, or the sign-in's own started cookie (startedCookiePfx, Path=/,
// set with the pre-login cookie). The pending cookie alone would not do:
// starts at the same moment each write a list without the others, and the
// browser keeps one of them; each started cookie has a name of its own, so
// none is lost. tidyPending never lists a pre-login cookie that neither
// names: the next callback would complete a planted one. Over plain HTTP
// there is no __Host- cookie and a network attacker can plant any cookie:
// nothing more is checked there.

// maxPendingSignIns bounds the pre-login cookies of a browser. A pre-login
// cookie takes up to about 3.9 KB (a long return address), so eight of
// them and a session split over four cookies take at most 47 KB of the
// callback's Cookie header: within the gateway's 64 KiB head limit with
// room for the app's own cookies, and far from the number of cookies
// browsers keep per site (RFC 6265 asks for at least 50). Eight tabs can be
// signing in at once; a ninth sign-in forgets the first.
const maxPendingSignIns = 8

// pendingCookie lists the pending sign-ins of a browser (see above). Not
// sealed: what it says only decides which of the browser's own pre-login
// cookies the gateway expires; entries that do not parse are left out.
const pendingCookie = "sallyport_pending"

// startedCookiePfx names the started cookie of a sign-in under TLS:
// __Host-sallyport_started_<id>=<end> (see pendingSignIn), Path=/, until
// end. About 55 bytes of each request's Cookie header per pending sign-in.
const startedCookiePfx = "__Host-sallyport_started_"

// pendingSignIn is one entry of the pending cookie: "<id>:<end>", where the
// pre-login cookie's name is loginCookieName(r, id) and end is when it expires
// (Unix seconds). Entries are separated by ".".
type pendingSignIn struct {
	id  string
	end int64
}

// pendingCookieName is the pending cookie's name for r: under TLS it takes
// the __Host- prefix, like the session cookie, so another host cannot plant
// it.
func pendingCookieName(r *http.Request) string {
	if secure(r) {
		return "__Host-" + pendingCookie
	}
	return pendingCookie
}

// readPending returns the pending sign-ins that r lists and that have not
// ended, oldest first: at most twice the bound from the pending cookie,
// and under TLS at most twice the bound more from started cookies.
func (s *Service) readPending(r *http.Request) []pendingSignIn {
	now := s.now().Unix()
	var list []pendingSignIn
	parse := func(id, end string) {
		e, ok := s.pendingEnd(end, now)
		if !ok || !validLoginID(id) {
			return
		}
		if !slices.ContainsFunc(list, func(p pendingSignIn) bool { return p.id == id }) {
			list = append(list, pendingSignIn{id: id, end: e})
		}
	}
	if c, err := r.Cookie(pendingCookieName(r)); err == nil {
		for entry := range strings.SplitSeq(c.Value, ".") {
			if len(list) == 2*maxPendingSignIns {
				break
			}
			id, end, _ := strings.Cut(entry, ":")
			parse(id, end)
		}
	}
	if secure(r) {
		bound := len(list) + 2*maxPendingSignIns
		for _, c := range r.Cookies() {
			if len(list) == bound {
				break
			}
			if id, ok := strings.CutPrefix(c.Name, startedCookiePfx); ok {
				parse(id, c.Value)
			}
		}
	}
	slices.SortStableFunc(list, func(a, b pendingSignIn) int { return cmp.Compare(a.end, b.end) })
	return list
}

// startedHere reports whether the browser that sent r started the sign-in
// whose pre-login cookie is id here: under TLS, whether its __Host-
// cookies name id (see above). Over plain HTTP, always.
func (s *Service) startedHere(r *http.Request, id string) bool {
	if !secure(r) {
		return true
	}
	return s.startedCookie(r, id) || slices.ContainsFunc(s.readPending(r), func(p pendingSignIn) bool { return p.id == id })
}

// startedCookie reports whether r carries the started cookie of id, not
// ended: looked up by name, so however many the browser holds.
func (s *Service) startedCookie(r *http.Request, id string) bool {
	c, err := r.Cookie(startedCookiePfx + id)
	if err != nil {
		return false
	}
	_, ok := s.pendingEnd(c.Value, s.now().Unix())
	return ok
}

// pendingEnd parses the end of a pending sign-in: it has not passed, and is
// at most loginCookieLife ahead (a planted entry cannot outlive a real
// pre-login cookie), give or take the clocks of replicas (refreshClockSkew):
// another replica may have started the sign-in a moment ago.
func (s *Service) pendingEnd(end string, now int64) (int64, bool) {
	e, err := strconv.ParseInt(end, 10, 64)
	return e, err == nil && e > now && e <= now+loginCookieLife+int64(refreshClockSkew/time.Second)
}

// validLoginID reports whether id can end a pre-login cookie's name (see
// stateID): 16 lowercase hex digits.
func validLoginID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := range len(id) {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// addPending records the sign-in whose pre-login cookie is id (see
// loginCookieName) and ends at end in r's list (and under TLS in its
// started cookie), expires the oldest pre-login cookies beyond the bound,
// and writes the list.
func (s *Service) addPending(w http.ResponseWriter, r *http.Request, id string, end int64) {
	if secure(r) {
		http.SetCookie(w, &http.Cookie{Name: startedCookiePfx + id, Value: strconv.FormatInt(end, 10), Path: "/",
			MaxAge: max(int(time.Unix(end, 0).Sub(s.now())/time.Second), 1), HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	}
	list := s.readPending(r)
	list = slices.DeleteFunc(list, func(p pendingSignIn) bool { return p.id == id })
	list = append(list, pendingSignIn{id: id, end: end})
	s.writePending(w, r, s.forgetOldest(w, r, list))
}

// forgetOldest expires the pre-login cookies of list (oldest first) beyond
// maxPendingSignIns, and returns those that are left.
func (s *Service) forgetOldest(w http.ResponseWriter, r *http.Request, list []pendingSignIn) []pendingSignIn {
	extra := len(list) - maxPendingSignIns
	if extra <= 0 {
		return list
	}
	for _, p := range list[:extra] {
		expireLoginCookie(w, r, loginCookieName(r, p.id))
		if secure(r) {
			// Listed by a version before the __Secure- prefix (or by
			// such a replica): its cookie has the plain name.
			expireLoginCookie(w, r, loginCookiePfx+p.id)
			expireStarted(w, r, p.id)
		}
	}
	return list[extra:]
}

// writePending sets r's list to list, until the last of them ends; an
// empty list removes the cookie.
func (s *Service) writePending(w http.ResponseWriter, r *http.Request, list []pendingSignIn) {
	name := pendingCookieName(r)
	if len(list) == 0 {
		if _, err := r.Cookie(name); err == nil {
			http.SetCookie(w, &http.Cookie{Name: name, Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode})
		}
		return
	}
	var b strings.Builder
	var last int64
	for i, p := range list {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p.id)
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(p.end, 10))
		last = max(last, p.end)
	}
	age := int(time.Unix(last, 0).Sub(s.now()) / time.Second)
	http.SetCookie(w, &http.Cookie{Name: name, Value: b.String(), Path: "/", MaxAge: max(age, 1),
		HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode})
}

// maxLoginCookiesRead bounds the pre-login cookies that tidyPending opens
// and expires in one request: a head of 64 KiB could carry thousands.
const maxLoginCookiesRead = 4 * maxPendingSignIns

// tidyPending runs at the callback, which receives every pre-login cookie
// of the browser: it expires those that cannot complete a sign-in (they do
// not open, have ended, or, under TLS, were not started here) and the
// oldest beyond maxPendingSignIns, and
// writes the list of the others. used is the pre-login cookie the callback
// itself uses up (it expires that one).
func (s *Service) tidyPending(w http.ResponseWriter, r *http.Request, used string) {
	now := s.now().Unix()
	pfx := loginCookieName(r, "")
	seen := map[string]bool{used: true}
	// Under TLS only the sign-ins that r's __Host- cookies name: the others
	// cannot complete (startedHere), and listing one would let a planted
	// pre-login cookie complete the next callback.
	var listed map[string]bool
	if secure(r) {
		listed = map[string]bool{}
		for _, p := range s.readPending(r) {
			listed[p.id] = true
		}
	}
	var list []pendingSignIn
	for _, c := range r.Cookies() {
		if pfx != loginCookiePfx && strings.HasPrefix(c.Name, loginCookiePfx) && !seen[c.Name] {
			// Under TLS one without the __Secure- prefix completes no
			// sign-in (see loginCookieName): one set by an older version,
			// or planted. It goes, so that it does not weigh on the
			// callback's head for the rest of its 10 minutes.
			seen[c.Name] = true
			if len(seen) > maxLoginCookiesRead {
				break
			}
			expireLoginCookie(w, r, c.Name)
			continue
		}
		if !strings.HasPrefix(c.Name, pfx) || seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		if len(seen) > maxLoginCookiesRead {
			break
		}
		var ls loginState
		id := strings.TrimPrefix(c.Name, pfx)
		if err := s.sealer.open("login", c.Value, &ls); err != nil || ls.Expires <= now || !validLoginID(id) ||
			listed != nil && !listed[id] && !s.startedCookie(r, id) {
			expireLoginCookie(w, r, c.Name)
			continue
		}
		list = append(list, pendingSignIn{id: id, end: ls.Expires})
	}
	slices.SortStableFunc(list, func(a, b pendingSignIn) int { return cmp.Compare(a.end, b.end) })
	s.writePending(w, r, s.forgetOldest(w, r, list))
	if listed != nil {
		// The started cookies of the sign-ins left out (used, ended,
		// without a pre-login cookie); forgetOldest expired those of the
		// oldest.
		n := 0
		for _, c := range r.Cookies() {
			id, ok := strings.CutPrefix(c.Name, startedCookiePfx)
			if !ok || slices.ContainsFunc(list, func(p pendingSignIn) bool { return p.id == id }) {
				continue
			}
			if n++; n > maxLoginCookiesRead {
				break
			}
			expireStarted(w, r, id)
		}
	}
}

// expireStarted makes the browser drop the started cookie of id.
func expireStarted(w http.ResponseWriter, r *http.Request, id string) {
	http.SetCookie(w, &http.Cookie{Name: startedCookiePfx + id, Path: "/", MaxAge: -1, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode})
}

// expireLoginCookie makes the browser drop the pre-login cookie name.
func expireLoginCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: callbackPath, MaxAge: -1,
		HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode})
}
