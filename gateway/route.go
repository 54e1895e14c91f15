package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway/preauth"
)

// Route publishes one application: requests whose host matches one of Hosts
// and whose path lies under PathPrefix go to Backend through an agent of
// connector group Group.
type Route struct {
	// App is the app's name, used in logs and sent to the agent.
	App string
	// Hosts are the external host names: exact ("app.example.com") or with
	// one leading wildcard label ("*.apps.example.com" matches
	// "a.apps.example.com" but neither "apps.example.com" nor
	// "a.b.apps.example.com"). Case and a trailing dot do not matter. A
	// pattern must not carry a port: the port of a request's host is ignored.
	// At least one is required.
	Hosts []string
	// PathPrefix limits the route to paths under it, matched on whole path
	// segments ("/api" matches "/api" and "/api/x" but not "/apix"). A
	// trailing slash is ignored ("/api/" is "/api"). Empty means "/": every
	// path.
	PathPrefix string
	// Backend is the internal URL the agent calls (http or https). Required.
	Backend *url.URL
	// Group is the connector group whose agents carry the route. Required.
	Group string
	// Timeout bounds the wait for the backend's response head. Zero means
	// the gateway's default.
	Timeout time.Duration
	// PreserveHost sends the client's Host header to the backend. False
	// sends the backend's own host.
	PreserveHost bool
	// BackendHTTP2 makes the agent speak HTTP/2 to the backend even for
	// requests that are not gRPC. False uses HTTP/1.1 except for gRPC.
	BackendHTTP2 bool
	// Preauth, when set, requires users to sign in (preauth: oidc) under
	// this policy; the gateway's Config.Preauth decides. Nil: no sign-in.
	Preauth *preauth.Policy

	metrics *appMetrics // the app's metric children; set by New for the router's copies
}

// Router finds the Route of a request. It is immutable after NewRouter and
// safe for concurrent use; build a new Router to change the routes.
type Router struct {
	// routes are the routes in the order given (normalised copies).
	routes []*Route
	// exact maps a normalised exact host to its routes, longest prefix first.
	exact map[string][]*Route
	// wild maps the part after "*." of a wildcard pattern to its routes,
	// longest prefix first.
	wild map[string][]*Route
	// alone holds the routes that no reading of a path can move to
	// another app (backendReadsElsewhere): every host they serve has no
	// other route (see aloneOnHosts).
	alone map[*Route]bool
	// forms holds each route's prefix in the forms that the readings of
	// a path in other Unicode forms compare with (pathforms.go).
	forms map[*Route]prefixForms
}

// NewRouter checks routes and builds a Router from copies of them. It fails
// on a route without hosts, backend or group, on a malformed host pattern or
// path prefix, and on two routes sharing a (host, path prefix) pair.
func NewRouter(routes []Route) (*Router, error) {
	r := &Router{
		exact: make(map[string][]*Route),
		wild:  make(map[string][]*Route),
	}
	type key struct{ host, prefix string }
	seen := make(map[key]string) // (pattern, prefix) → app that claimed it
	var errs []error
	for i := range routes {
		rt, err := checkRoute(routes[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("route %d (%q): %w", i, routes[i].App, err))
			continue
		}
		r.routes = append(r.routes, rt)
		for _, h := range rt.Hosts {
			k := key{h, rt.PathPrefix}
			if other, dup := seen[k]; dup {
				errs = append(errs, fmt.Errorf("route %d (%q): host %q with path prefix %q is already used by app %q",
					i, rt.App, h, rt.PathPrefix, other))
				continue
			}
			seen[k] = rt.App
			if suffix, ok := strings.CutPrefix(h, "*."); ok {
				r.wild[suffix] = append(r.wild[suffix], rt)
			} else {
				r.exact[h] = append(r.exact[h], rt)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r.alone = make(map[*Route]bool)
	r.forms = make(map[*Route]prefixForms, len(r.routes))
	for _, rt := range r.routes {
		if r.aloneOnHosts(rt) {
			r.alone[rt] = true
		}
		r.forms[rt] = newPrefixForms(rt.PathPrefix)
	}
	for _, m := range []map[string][]*Route{r.exact, r.wild} {
		for _, list := range m {
			// Longest prefix first so that Match can stop at the first hit;
			// prefixes of one host are distinct, so the order is total.
			sort.Slice(list, func(a, b int) bool {
				pa, pb := list[a].PathPrefix, list[b].PathPrefix
				if len(pa) != len(pb) {
					return len(pa) > len(pb)
				}
				return pa < pb
			})
		}
	}
	return r, nil
}

// aloneOnHosts reports whether every request that Match can route to rt
// comes with a host whose routes (the exact host's and its wildcard's,
// those that foldsElsewhere and Match look at) are rt alone, and whether
// rt's prefix reads as itself however a path is read: it holds no "%",
// ";" or "//" (the config refuses an encoded slash, ";" and "//" in a
// path_prefix; NewRouter takes them, and such a prefix gets the full
// check). Then every reading of a path routed to rt (see
// backendReadsElsewhere) keeps rt's prefix, and no other app is there.
func (r *Router) aloneOnHosts(rt *Route) bool {
	if p := rt.PathPrefix; strings.ContainsAny(p, "%;") || strings.Contains(p, "//") {
		return false
	}
	only := func(list []*Route) bool {
		for _, o := range list {
			if o != rt {
				return false
			}
		}
		return true
	}
	for _, h := range rt.Hosts {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if !only(r.wild[suffix]) {
				return false
			}
			// An exact host one label longer is looked at with the wildcard.
			for e, list := range r.exact {
				if i := strings.IndexByte(e, '.'); i > 0 && e[i+1:] == suffix && !only(list) {
					return false
				}
			}
			continue
		}
		if !only(r.exact[h]) {
			return false
		}
		if i := strings.IndexByte(h, '.'); i > 0 && !only(r.wild[h[i+1:]]) {
			return false
		}
	}
	return true
}

// checkRoute validates in and returns a normalised copy that the Router owns.
func checkRoute(in Route) (*Route, error) {
	rt := in
	if len(in.Hosts) == 0 {
		return nil, errors.New("no hosts")
	}
	rt.Hosts = make([]string, 0, len(in.Hosts))
	for _, h := range in.Hosts {
		n, err := normalisePattern(h)
		if err != nil {
			return nil, err
		}
		rt.Hosts = append(rt.Hosts, n)
	}
	p, err := normalisePrefix(in.PathPrefix)
	if err != nil {
		return nil, err
	}
	rt.PathPrefix = p
	if in.Backend == nil {
		return nil, errors.New("no backend")
	}
	if s := in.Backend.Scheme; s != "http" && s != "https" {
		return nil, fmt.Errorf("backend %q: scheme must be http or https", in.Backend.Redacted())
	}
	if in.Backend.Host == "" {
		return nil, fmt.Errorf("backend %q: no host", in.Backend.Redacted())
	}
	b := *in.Backend
	rt.Backend = &b
	if in.Group == "" {
		return nil, errors.New("no connector group")
	}
	if in.Timeout < 0 {
		return nil, fmt.Errorf("negative timeout %v", in.Timeout)
	}
	return &rt, nil
}

// normalisePattern lower-cases a host pattern, drops a trailing dot and
// checks its form.
func normalisePattern(h string) (string, error) {
	orig := h
	h = strings.TrimSuffix(asciiLower(strings.TrimSpace(h)), ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1] // IPv6 literal
	} else if strings.Count(h, ":") == 1 {
		return "", fmt.Errorf("host %q: must not carry a port (ports are ignored when matching)", orig)
	}
	rest, _ := strings.CutPrefix(h, "*.")
	switch {
	case rest == "":
		return "", fmt.Errorf("host %q: empty", orig)
	case strings.Contains(rest, "*"):
		return "", fmt.Errorf("host %q: a wildcard must be the whole first label, as in *.example.com", orig)
	case strings.ContainsAny(rest, "/?#@ \t[]"):
		return "", fmt.Errorf("host %q: invalid character", orig)
	case strings.HasPrefix(rest, ".") || strings.Contains(rest, ".."):
		return "", fmt.Errorf("host %q: empty label", orig)
	}
	return h, nil
}

// normalisePrefix makes "" into "/" and drops a trailing slash.
func normalisePrefix(p string) (string, error) {
	if p == "" || p == "/" {
		return "/", nil
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path prefix %q: must start with /", p)
	}
	if strings.ContainsAny(p, "?#") {
		return "", fmt.Errorf("path prefix %q: must not hold a query or fragment", p)
	}
	p = strings.TrimRight(p, "/")
	if p == "" {
		return "/", nil
	}
	return p, nil
}

// Match returns the route of a request for host (as in the Host header or
// :authority, with or without port) and path (the decoded URL path), or nil.
// Exact host patterns beat wildcard ones: the routes of the exact host are
// tried first and those of the wildcard only when none of their prefixes
// match. Within a host pattern the longest matching path prefix wins.
//
// path is matched as given: the gateway passes the normalised path
// (normalisePath), so "/public/../private" routes as "/private". The returned Route
// is shared; callers must not modify it.
func (r *Router) Match(host, path string) *Route {
	host = hostOnly(host)
	// Fast path: browsers and HTTP/2 clients send lower-case hosts, so the
	// slicing above is all the work and nothing allocates. Slow path: an
	// upper-case letter needs a lower-cased copy.
	if hasUpper(host) {
		host = asciiLower(host)
	}
	if path == "" {
		path = "/"
	}
	if rt := matchPrefix(r.exact[host], path); rt != nil {
		return rt
	}
	// One leading wildcard label: drop exactly the first label and look the
	// rest up, so "a.b.example.com" never reaches "*.example.com".
	if i := strings.IndexByte(host, '.'); i > 0 {
		return matchPrefix(r.wild[host[i+1:]], path)
	}
	return nil
}

// matchPrefix returns the first route in list (longest prefix first) whose
// prefix holds path.
func matchPrefix(list []*Route, path string) *Route {
	for _, rt := range list {
		if underPrefix(rt.PathPrefix, path) {
			return rt
		}
	}
	return nil
}

// underPrefix reports whether path lies under prefix on a segment boundary.
// prefix is normalised: "/" or without a trailing slash.
func underPrefix(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// hostOnly strips the port from a Host header value, the brackets from an
// IPv6 literal and one trailing dot. It only slices, never allocates.
func hostOnly(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[1:i]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		h = h[:i] // one colon: a port; more: a bare IPv6 address
	}
	return strings.TrimSuffix(h, ".")
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// asciiLower lower-cases ASCII letters only: host names on the wire are
// ASCII (internationalised names travel as punycode).
func asciiLower(s string) string {
	if !hasUpper(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// SetRoutes replaces the published apps while the gateway runs: requests
// routed from then on see the new routes, exchanges in flight finish with
// the route they started with. routes are checked as New checks them; on
// an error nothing changes. Pre-authentication cannot be added this way:
// a route with a Preauth policy needs Config.Preauth from the start, and
// its provider must be one of those configured then.
func (g *Gateway) SetRoutes(routes []Route) error {
	cfg := g.cfg
	cfg.Routes = routes
	for i := range routes {
		if routes[i].Preauth != nil && cfg.Preauth == nil {
			return fmt.Errorf("gateway: app %q requires sign-in, but the gateway started without pre-authentication "+
				"because no app used it; restart the gateway to add the first app with sign-in", routes[i].App)
		}
	}
	if err := checkPreauth(&cfg); err != nil {
		return err
	}
	next, err := NewRouter(cfg.Routes)
	if err != nil {
		return fmt.Errorf("gateway: apps: %w", err)
	}
	g.metrics.bind(next)
	prev := g.router.Swap(next)
	added, removed, changed := diffRoutes(prev.routes, next.routes)
	g.log.Info("apps reloaded", zap.Int("apps", len(next.routes)),
		zap.Strings("added", added), zap.Strings("removed", removed), zap.Strings("changed", changed))
	// A group that an app uses now is watched for its agents from now on,
	// also when its sessions came before the app (groupChanged ignores
	// groups no app uses, and says nothing of a group whose count stays).
	seen := map[string]bool{}
	for _, r := range next.routes {
		if !seen[r.Group] {
			seen[r.Group] = true
			g.groupChanged(r.Group)
		}
	}
	return nil
}

// diffRoutes names the apps added, removed and changed from prev to next.
// An app that several routes publish counts as changed when any of them did.
func diffRoutes(prev, next []*Route) (added, removed, changed []string) {
	byApp := func(rs []*Route) map[string][]*Route {
		m := map[string][]*Route{}
		for _, r := range rs {
			m[r.App] = append(m[r.App], r)
		}
		return m
	}
	p, n := byApp(prev), byApp(next)
	for app, rs := range n {
		old, ok := p[app]
		switch {
		case !ok:
			added = append(added, app)
		case !reflect.DeepEqual(old, rs):
			changed = append(changed, app)
		}
	}
	for app := range p {
		if _, ok := n[app]; !ok {
			removed = append(removed, app)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}
