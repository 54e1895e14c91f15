package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/groupname"
	"github.com/sallyport/sallyport/internal/promserve"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/tunnel"
)

// The admin API (JSON, `Authorization: Bearer <admin token>`):
//
//	GET    /healthz                        200 while the process runs (no token)
//	GET    /readyz                         200 while serving with a working store (no token)
//	GET    /metrics                        Prometheus metrics (no token; see metrics.go; over
//	                                       loopback only for a Host of this machine, see promserve.RebindingGuard)
//	GET    /api/v1/tokens                  [APIToken] (never the secret; with its state now)
//	POST   /api/v1/tokens                  APITokenRequest → 201 APIToken with the secret, once
//	DELETE /api/v1/tokens/{id}             204; 404 unknown
//	GET    /api/v1/connectors              [APIConnector]
//	POST   /api/v1/connectors/{id}/revoke  200 APIRevoked (already_revoked when it was); 404 unknown
//
// A missing or wrong admin token gets 401 with no detail. Other errors are
// {"error": "..."}, also for an unknown path under /api/ (404) and a wrong
// method (405, with Allow). A request body is one JSON object of at most
// 64 KiB (413 beyond), with nothing after it.

// APIToken is an enrollment token as the admin API shows it.
type APIToken struct {
	ID      string     `json:"id"`
	Token   string     `json:"token,omitempty"` // only in the answer to POST
	Group   string     `json:"group"`
	Uses    int        `json:"uses"`    // most uses; 0 = unlimited
	Used    int        `json:"used"`    // agents enrolled with it (config tokens: counted since schema version 7)
	Expires *time.Time `json:"expires"` // null = never
	Created *time.Time `json:"created"` // null for config tokens
	Source  string     `json:"source"`  // "api" or "config"
	State   string     `json:"state"`   // TokenUsable, TokenExpired or TokenUsedUp, by the gateway's clock
}

// The states of an enrollment token (APIToken.State).
const (
	TokenUsable  = "usable"  // an agent may enroll with it now
	TokenExpired = "expired" // past its expiry (whether or not uses are left)
	TokenUsedUp  = "used-up" // every use spent
)

// tokenState is the state of t at now, as Enroll would judge it: expiry
// first, then uses.
func tokenState(t store.Token, now time.Time) string {
	switch t.Check(now) {
	case store.ErrTokenExpired:
		return TokenExpired
	case store.ErrTokenUsedUp:
		return TokenUsedUp
	}
	return TokenUsable
}

// APITokenRequest creates a token: TTL as a Go duration ("1h"; default 1h,
// "0s" = never expires), Uses (default 1, 0 = unlimited).
type APITokenRequest struct {
	Group string `json:"group"`
	TTL   string `json:"ttl,omitempty"`
	Uses  *int   `json:"uses,omitempty"`
}

// APIConnector is an enrolled connector with its live sessions.
type APIConnector struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Group          string     `json:"group"`
	Version        string     `json:"version"`
	Platform       string     `json:"platform"`
	RemoteAddr     string     `json:"remote_addr"` // of its newest session; "" when offline
	Sessions       int        `json:"sessions"`
	SetAside       int        `json:"set_aside"`       // of Sessions, those of an earlier process set aside (SessionStatus.Superseded)
	ConnectedSince *time.Time `json:"connected_since"` // its oldest live session; null when offline
	CertExpires    time.Time  `json:"cert_expires"`
	Enrolled       time.Time  `json:"enrolled"`
	Revoked        *time.Time `json:"revoked"` // null unless revoked
}

// APIError is the body of an error answer (except 401).
type APIError struct {
	Error string `json:"error"`
}

// Limits of admin requests.
const (
	maxAdminBody = 64 << 10
	maxTokenTTL  = 366 * 24 * time.Hour
)

// AdminHandler is the admin API (see the table above).
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n")) //nolint:errcheck // client gone
	})
	mux.HandleFunc("GET /readyz", g.readyz)
	// Like the health checks, the metrics need no token: scrapers rarely
	// carry one, and they name no secrets. The admin listener belongs on a
	// private address (127.0.0.1 by default). They name every app and
	// connector group, though, so a web page must not read them through
	// DNS rebinding (see promserve.RebindingGuard); the health checks say only
	// "ok" or "ready", and load balancers and probes reach them by any name.
	if g.metrics != nil {
		hostname, _ := os.Hostname()
		mux.Handle("GET /metrics", promserve.RebindingGuard(promserve.Handler(g.metrics.reg), hostname,
			func(r *http.Request, port string) {
				// The path as sent, as in the access log: decoded, a
				// path can hide a %2F or put control characters in a log.
				path := r.URL.EscapedPath()
				g.log.Warn("admin listener: a request for "+path+" over loopback named another host; refused "+
					"(a guard against DNS rebinding; only the first is logged). If it is your metrics scraper, "+
					"have it scrape 127.0.0.1:"+port+" or localhost:"+port,
					zap.String("host", r.Host), zap.String("path", path))
			}))
	}
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/tokens", g.listTokens)
	api.HandleFunc("POST /api/v1/tokens", g.createToken)
	api.HandleFunc("DELETE /api/v1/tokens/{id}", g.deleteToken)
	api.HandleFunc("GET /api/v1/connectors", g.listConnectors)
	api.HandleFunc("POST /api/v1/connectors/{id}/revoke", g.revokeConnector)
	mux.Handle("/api/", g.requireAdmin(jsonMuxErrors(api)))
	return mux
}

// jsonMuxErrors answers the mux's own 404 (no such path) and 405 (wrong
// method) as APIError bodies instead of net/http's text/plain.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			// A route matched: its handler writes JSON itself. Through the
			// mux, which sets the request's path values ({id}); h alone
			// would see none.
			mux.ServeHTTP(w, r)
			return
		}
		// No pattern: h is the mux's 404 or 405 handler (which also sets
		// Allow); let it choose the status, then replace its body.
		h.ServeHTTP(&muxErrorWriter{ResponseWriter: w, r: r}, r)
	})
}

// muxErrorWriter turns the status a ServeMux error handler writes into a
// JSON error and drops the handler's plain-text body.
type muxErrorWriter struct {
	http.ResponseWriter
	r     *http.Request
	wrote bool
}

func (w *muxErrorWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	w.Header().Del("X-Content-Type-Options")
	switch code {
	case http.StatusMethodNotAllowed:
		writeError(w.ResponseWriter, code, "method %s is not allowed on %s; allowed: %s",
			w.r.Method, w.r.URL.Path, w.Header().Get("Allow"))
	case http.StatusNotFound:
		writeError(w.ResponseWriter, code, "no admin API endpoint %s %s; the endpoints are under /api/v1/tokens and /api/v1/connectors",
			w.r.Method, w.r.URL.Path)
	default:
		writeError(w.ResponseWriter, code, "%s", http.StatusText(code))
	}
}

func (w *muxErrorWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return len(b), nil // the mux's plain-text body, replaced by the JSON above
}

// requireAdmin lets through requests with the admin token, compared in
// constant time as SHA-256 digests; others get 401 without detail.
func (g *Gateway) requireAdmin(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(g.cfg.AdminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearerToken(r.Header.Get("Authorization"))
		got := sha256.Sum256([]byte(tok))
		if !ok || g.cfg.AdminToken == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sallyport"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		next.ServeHTTP(w, r)
	})
}

// bearerToken returns the token of an Authorization header of the Bearer
// scheme. The scheme is case-insensitive and may be followed by several
// spaces (RFC 9110 section 11.1, RFC 6750 section 2.1): clients and proxies
// that send "bearer" must not get a 401 that looks like a wrong token.
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(tok, " "), true
}

// storePingTimeout bounds a ping of the store: /readyz's, an admin call's
// check whether the store is down, the stall check's.
const storePingTimeout = 2 * time.Second

func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), storePingTimeout)
	defer cancel()
	if !g.serving.Load() {
		http.Error(w, g.notServing(), http.StatusServiceUnavailable)
		return
	}
	if err := g.store.Ping(ctx); err != nil {
		// Once per outage: a load balancer probes every few seconds.
		if !g.readyStoreDown.Swap(true) {
			g.log.Warn("readiness: the store does not answer; /readyz answers 503 until it does", zap.Error(err))
		}
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	if g.readyStoreDown.Swap(false) {
		g.log.Info("readiness: the store answers again")
	}
	w.Write([]byte("ready\n")) //nolint:errcheck // client gone
}

// notServing says why /readyz answers 503 while the store is not asked:
// the gateway shuts down (from the start of its shutdown delay: the admin
// listener answers only once Serve has begun serving, so a gateway that
// listens and does not serve is stopping), or it has not started serving
// (AdminHandler mounted elsewhere before Serve).
func (g *Gateway) notServing() string {
	if g.stopping() {
		return "shutting down"
	}
	g.mu.Lock()
	listening := g.adminLn != nil
	g.mu.Unlock()
	if listening {
		return "shutting down"
	}
	return "not serving"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck // client gone
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, APIError{Error: fmt.Sprintf(format, args...)})
}

// readJSON decodes the request body, one JSON object with only known fields
// and nothing after it, into v. On failure it answers 400, or 413 for a
// body over maxAdminBody, and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(r.Body)
	if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than the limit of %d KiB; send a single small JSON object", tooBig.Limit>>10)
		return false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the request body: %v", err)
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		writeError(w, http.StatusBadRequest, "the request body is empty; send one JSON object with the documented fields, "+
			`e.g. {"group": "default"} (Content-Type: application/json)`)
		return false
	}
	if err := exactKeys(body, v); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: %s", jsonErrorText(err))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: %s", jsonErrorText(err))
		return false
	}
	if rest := bytes.TrimSpace(body[dec.InputOffset():]); len(rest) > 0 {
		writeError(w, http.StatusBadRequest, "bad JSON body: unexpected data after the JSON object at offset %d; send exactly one JSON object", dec.InputOffset())
		return false
	}
	return true
}

// jsonErrorText says what is wrong with a request body in the API's own
// terms: encoding/json names a field by the Go struct and its Go type
// ("cannot unmarshal string into Go struct field APITokenRequest.uses of
// type int"), and a body that stops early as just "unexpected EOF".
func jsonErrorText(err error) string {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		t := typeErr.Type
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		want := "a JSON " + t.Kind().String()
		switch t.Kind() {
		case reflect.Int, reflect.Int64, reflect.Int32:
			want = "a whole number within range"
		case reflect.String:
			want = `a string (in quotes, e.g. "1h")`
		}
		return fmt.Sprintf("field %q: want %s, not a JSON %s", typeErr.Field, want, typeErr.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON object ends early (a missing closing brace or quote?)"
	}
	return err.Error()
}

// exactKeys checks that body is a JSON object whose keys are json field
// names of the struct v points to, spelt exactly so, each once.
// encoding/json alone matches keys without regard to case and lets the
// last of repeated keys win, so {"group":"a","GROUP":"b"} created a token
// for group b while a proxy, an audit log or a reader of the request saw
// group a.
func exactKeys(body []byte, v any) error {
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			known[name] = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if err != nil {
			return err
		}
		return errors.New("want a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		switch {
		case !known[key]:
			return fmt.Errorf("unknown field %q (field names are lowercase, as documented)", key)
		case seen[key]:
			return fmt.Errorf("field %q given twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// internalError answers a failed store call of op: 503 when the store
// does not answer (as /readyz judges it: the error says so, or a ping
// fails), so that the client tries again later; 500 otherwise.
func (g *Gateway) internalError(w http.ResponseWriter, op string, err error) {
	if g.storeDown(err) {
		g.log.Error("admin API: "+op+": the store (database) does not answer", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, "%s failed: the gateway's store (database) does not answer; "+
			"see the gateway log, and try again once it does", op)
		return
	}
	g.log.Error("admin API: "+op, zap.Error(err))
	writeError(w, http.StatusInternalServerError, "%s failed; see the gateway log", op)
}

// storeDown reports whether err, from a store call, is the store not
// answering: the error says so, or a ping (as /readyz's) fails too.
func (g *Gateway) storeDown(err error) bool {
	if store.Unavailable(err) {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), storePingTimeout)
	defer cancel()
	return g.store.Ping(ctx) != nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (g *Gateway) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := g.store.Tokens(r.Context())
	if err != nil {
		g.internalError(w, "list tokens", err)
		return
	}
	var configUses map[[32]byte]int
	if cs, ok := g.store.(configTokenStore); ok && len(g.tokens) > 0 {
		if configUses, err = cs.ConfigTokenUses(r.Context()); err != nil {
			g.internalError(w, "list tokens", err)
			return
		}
	}
	now := g.now()
	out := make([]APIToken, 0, len(toks)+len(g.tokens))
	for i, t := range g.tokens { // unlimited and never expire
		out = append(out, APIToken{ID: fmt.Sprintf("config-%d", i), Group: t.group, Used: configUses[t.sum], Source: "config",
			State: TokenUsable})
	}
	for _, t := range toks {
		out = append(out, APIToken{ID: t.ID, Group: t.Group, Uses: t.MaxUses, Used: t.Used,
			Expires: timePtr(t.Expires), Created: timePtr(t.Created), Source: "api", State: tokenState(t, now)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) createToken(w http.ResponseWriter, r *http.Request) {
	var req APITokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !groupname.Valid(req.Group) {
		writeError(w, http.StatusBadRequest, "group %q: want %s", req.Group, groupname.Rule)
		return
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < 0 || d > maxTokenTTL {
			writeError(w, http.StatusBadRequest, "ttl %q: want a duration such as 1h or 24h, at most 8784h (0s = never expires)", req.TTL)
			return
		}
		ttl = d
	}
	uses := 1
	if req.Uses != nil {
		uses = *req.Uses
		if uses < 0 || uses > 1000000 {
			writeError(w, http.StatusBadRequest, "uses %d: want 0 (unlimited) to 1000000", uses)
			return
		}
	}
	now := g.now()
	secret := NewToken()
	t := store.Token{ID: newID(), Hash: sha256.Sum256([]byte(secret)), Group: req.Group, MaxUses: uses, Created: now}
	if ttl > 0 {
		t.Expires = now.Add(ttl)
	}
	if err := g.store.CreateToken(r.Context(), t); err != nil {
		g.internalError(w, "create token", err)
		return
	}
	if !g.usesGroup(req.Group) {
		g.log.Warn("enrollment token created for a group that no app uses", zap.String("group", req.Group))
	}
	g.log.Info("enrollment token created", zap.String("token_id", t.ID), zap.String("group", t.Group),
		zap.Int("uses", uses), zap.Duration("ttl", ttl))
	writeJSON(w, http.StatusCreated, APIToken{ID: t.ID, Token: secret, Group: t.Group, Uses: uses,
		Expires: timePtr(t.Expires), Created: timePtr(now), Source: "api", State: tokenState(t, now)})
}

func (g *Gateway) deleteToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if i, ok := configTokenIndex(id, len(g.tokens)); ok {
		// Tokens are read from the config at start only: SIGHUP reloads apps.
		writeError(w, http.StatusConflict, "token %q is entry %d of tunnel.tokens in the gateway config: remove it "+
			"there and restart the gateway (a SIGHUP reloads only apps)", id, i)
		return
	}
	err := g.store.DeleteToken(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "no token with id %q (config tokens are removed from the gateway config)", id)
	case err != nil:
		g.internalError(w, "delete token", err)
	default:
		g.log.Info("enrollment token deleted", zap.String("token_id", id))
		w.WriteHeader(http.StatusNoContent)
	}
}

// configTokenIndex tells whether id names one of n config tokens, as
// listTokens does ("config-0" …), and which.
func configTokenIndex(id string, n int) (int, bool) {
	digits, ok := strings.CutPrefix(id, "config-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(digits)
	if err != nil || i < 0 || i >= n || strconv.Itoa(i) != digits {
		return 0, false
	}
	return i, true
}

func (g *Gateway) connectorView(c store.Connector, live []SessionStatus) APIConnector {
	out := APIConnector{ID: c.ID, Name: c.Name, Group: c.Group, Version: c.Version, Platform: c.Platform,
		CertExpires: c.CertExpires.UTC(), Enrolled: c.Enrolled.UTC(), Revoked: timePtr(c.Revoked)}
	var newest time.Time
	newestAgent := ""
	for _, s := range live {
		if s.ConnectorID != c.ID {
			continue
		}
		out.Sessions++
		if out.ConnectedSince == nil || s.Started.Before(*out.ConnectedSince) {
			out.ConnectedSince = timePtr(s.Started)
		}
		if !s.Started.Before(newest) {
			newest, newestAgent = s.Started, s.AgentID
			out.RemoteAddr = s.RemoteAddr
			if plainFields(s.Version, s.Platform) { // from the agent's hello
				out.Version, out.Platform = s.Version, s.Platform
			}
		}
	}
	// Set aside: the sessions of a process other than the one that
	// connected last. A later process that drains (it stops) has its own
	// sessions marked superseded while the earlier one serves again; they
	// are not set aside for a later process, and saying so would be false
	// just when an operator looks.
	for _, s := range live {
		if s.ConnectorID == c.ID && s.Superseded && s.AgentID != newestAgent {
			out.SetAside++
		}
	}
	return out
}

func (g *Gateway) listConnectors(w http.ResponseWriter, r *http.Request) {
	cs, err := g.store.Connectors(r.Context())
	if err != nil {
		g.internalError(w, "list connectors", err)
		return
	}
	live := g.registry.Sessions()
	out := make([]APIConnector, 0, len(cs))
	for _, c := range cs {
		out = append(out, g.connectorView(c, live))
	}
	writeJSON(w, http.StatusOK, out)
}

// APIRevoked is the answer to a revoke: the connector, and whether it was
// revoked already before this call (its revoked time is the first one).
type APIRevoked struct {
	APIConnector
	AlreadyRevoked bool `json:"already_revoked,omitempty"`
}

func (g *Gateway) revokeConnector(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, _, first, err := g.revoke(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "no connector with id %q; see `sallyport connector list`", id)
	case err != nil:
		g.internalError(w, "revoke connector", err)
	default:
		writeJSON(w, http.StatusOK, APIRevoked{APIConnector: g.connectorView(c, nil), AlreadyRevoked: !first})
	}
}

// revoke revokes connector id (see Revoke) and reports whether this call
// revoked it (first) rather than finding it revoked already. Only the
// first is logged "connector revoked" and counted in
// sallyport_gateway_revocations_total. Either closes the sessions of the
// connector that this replica holds: one revoked through another replica
// is closed here at once rather than at this replica's next store sweep.
func (g *Gateway) revoke(ctx context.Context, id string) (c store.Connector, n int, first bool, err error) {
	// One revoked already is not written again: a read-only standby (or a
	// replica whose writes are refused) can still answer already_revoked
	// and close its sessions. If the read fails, the write says why.
	if c, err = g.store.Connector(ctx, id); err != nil || c.Revoked.IsZero() {
		c, first, err = g.store.RevokeConnectorFirst(ctx, id, g.now())
	}
	if err != nil {
		return c, 0, false, err
	}
	g.metrics.connectorRevoked(id, first)
	n = g.registry.CloseConnector(id, fmt.Errorf("%w: connector %s", tunnel.ErrRevoked, id))
	switch {
	case first:
		g.log.Info("connector revoked", zap.String("connector", id), zap.String("name", c.Name),
			zap.String("group", c.Group), zap.Int("sessions_closed", n))
	case n > 0:
		g.log.Info("closed the sessions of a connector revoked before", zap.String("connector", id),
			zap.Int("sessions_closed", n))
	}
	return c, n, first, nil
}

// usesGroup reports whether an app is bound to group.
func (g *Gateway) usesGroup(group string) bool {
	for _, r := range g.router.Load().routes {
		if r.Group == group {
			return true
		}
	}
	return false
}
