package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/promserve"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// The gateway's Prometheus metrics, served on the admin listener's
// /metrics. Every label has a bounded set of values: app names and
// connector groups come from the config, transports and reasons are fixed
// lists, status classes are 1xx–5xx. Hosts, paths, users and addresses
// never become labels.
//
//	sallyport_gateway_exchanges_total{app,class}        exchanges answered without an error code, by status class: relayed
//	                                                    ones, and the gateway's sign-in redirects and endpoints (app "")
//	sallyport_gateway_errors_total{app,code}            exchanges the gateway answered itself, by X-Sallyport-Error code (app "" = no app matched)
//	sallyport_gateway_response_head_seconds{app}        time from request to the backend's response head (relayed exchanges)
//	sallyport_gateway_request_body_bytes_total{app}     request body bytes read from clients
//	sallyport_gateway_response_body_bytes_total{app}    response body bytes written to clients
//	sallyport_gateway_exchanges_in_flight               exchanges being served
//	sallyport_gateway_sessions{group,transport}         live tunnel sessions (0 for every group an app uses)
//	sallyport_gateway_agents{group}                     agents with at least one live session
//	sallyport_gateway_sessions_opened_total{group,transport}
//	sallyport_gateway_sessions_closed_total{group,transport,reason}  reason: drained, lost, silent, revoked, refused, certificate, shutdown
//	sallyport_gateway_session_refusals_total{reason}    sessions refused: revoked, unauthenticated, error (the store did not answer); in the TLS handshake certificate (not of the connector CA, or expired)
//	sallyport_gateway_enrollments_total{outcome}        outcome: ok, invalid, unauthenticated, revoked, rate_limited, error
//	sallyport_gateway_renewals_total{outcome}
//	sallyport_gateway_revocations_total
//	sallyport_gateway_preauth_total{outcome}            (with pre-authentication only) allowed, sign_in_started, signed_in, bind_started, bound, or a refusal code
//	sallyport_gateway_store_stalled                     1 while the store's calls wait for its database or are refused (storestall.go)
//
// Recording an exchange costs no map lookup and no allocation: each app's
// children are resolved when the gateway is built and reached through its
// Route (see appMetrics); a child whose label value is known only at run
// time (a status class, an error code) is resolved on its first use and
// kept (promserve.LazyCounter).

// Session close reasons.
const (
	closeDrained  = "drained"  // the agent announced its shutdown first
	closeLost     = "lost"     // the connection ended without a drain
	closeSilent   = "silent"   // it ended set aside as silent: the agent stopped answering (its host or path died)
	closeRevoked  = "revoked"  // the connector was revoked
	closeRefused  = "refused"  // closed as it was registered (too many sessions; its recheck found it revoked or its certificate retired, or could not be made)
	closeShutdown = "shutdown" // the gateway shut down
	// closeCertificate: the gateway ended it because its client certificate
	// expired, or a renewal retired it (see certlife.go).
	closeCertificate = "certificate"
)

// headBuckets are the response head latency buckets: 1 ms to 60 s.
var headBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// statusClasses are the class labels by status/100; index 0 is any status
// outside 100–599.
var statusClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// errorCodes are the codes errors_total knows, in the order of
// appMetrics.errors; a code not listed counts as "other".
var errorCodes = [...]string{
	CodeNoRoute, CodeNoConnector, CodeBackendUnreachable, CodeBackendNotAllowed, CodeBackendTimeout,
	CodeTunnelFailed, CodeBackend1xxLimit, CodeOverloaded, CodeBadRequest, CodeAuthProviderUnreachable, CodeUnauthenticated,
	CodeForbidden, CodeStateMismatch, CodeSignInFailed, CodeAssertionRejected, CodeClientClosed,
}

func errorCodeIndex(code string) int {
	for i, c := range errorCodes {
		if c == code {
			return i
		}
	}
	return len(errorCodes)
}

func errorCodeLabel(i int) string {
	if i < len(errorCodes) {
		return errorCodes[i]
	}
	return "other"
}

// appMetrics are the children of one app.
type appMetrics struct {
	name     string
	classes  [len(statusClasses)]promserve.LazyCounter
	errors   [len(errorCodes) + 1]promserve.LazyCounter
	head     prometheus.Observer
	reqBytes prometheus.Counter
	resBytes prometheus.Counter
}

// gatewayMetrics are the gateway's collectors, registered once in reg.
type gatewayMetrics struct {
	reg *prometheus.Registry

	exchanges *prometheus.CounterVec
	errors    *prometheus.CounterVec
	head      *prometheus.HistogramVec
	reqBytes  *prometheus.CounterVec
	resBytes  *prometheus.CounterVec
	inFlight  prometheus.Gauge

	opened      *prometheus.CounterVec
	closed      *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	enrollments *prometheus.CounterVec
	renewals    *prometheus.CounterVec
	revocations prometheus.Counter
	preauth     *prometheus.CounterVec // nil without pre-authentication

	mu      sync.Mutex
	apps    map[string]*appMetrics // by app name; guarded by mu
	revoked map[string]bool        // connectors revoked by this process; guarded by mu
	// certEnded holds the sessions the gateway is closing for their
	// certificate, until closeReason counts them; guarded by mu.
	certEnded map[string]bool
}

func newGatewayMetrics(g *Gateway) *gatewayMetrics {
	const ns = "sallyport_gateway_"
	m := &gatewayMetrics{
		reg: promserve.NewRegistry(),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "exchanges_total",
			Help: "Exchanges answered without an error code (relayed, or a sign-in redirect or endpoint of the gateway's), by app and status class."}, []string{"app", "class"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "errors_total",
			Help: "Exchanges the gateway answered itself, by app (empty when no app matched) and X-Sallyport-Error code."}, []string{"app", "code"}),
		head: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ns + "response_head_seconds",
			Help:    "Time from the request to the backend's response head, of relayed exchanges.",
			Buckets: headBuckets}, []string{"app"}),
		reqBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "request_body_bytes_total",
			Help: "Request body bytes read from clients, by app."}, []string{"app"}),
		resBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "response_body_bytes_total",
			Help: "Response body bytes written to clients, by app."}, []string{"app"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "exchanges_in_flight",
			Help: "Exchanges being served now."}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "sessions_opened_total",
			Help: "Tunnel sessions registered, by connector group and transport."}, []string{"group", "transport"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "sessions_closed_total",
			Help: "Tunnel sessions ended, by connector group, transport and reason (drained, lost, revoked, refused, certificate, shutdown)."},
			[]string{"group", "transport", "reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "session_refusals_total",
			Help: "Tunnel sessions refused, by reason: at authentication revoked, unauthenticated, or error (the store did " +
				"not answer: the agent retries); in the TLS handshake certificate (a client certificate not of the connector " +
				"CA, or expired)."}, []string{"reason"}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "enrollments_total",
			Help: "Agent enrollments, by outcome (ok, invalid, unauthenticated, revoked, rate_limited, error)."}, []string{"outcome"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "renewals_total",
			Help: "Agent certificate renewals, by outcome (ok, invalid, unauthenticated, revoked, rate_limited, error)."}, []string{"outcome"}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "revocations_total",
			Help: "Connectors revoked through this gateway."}),
		apps:      make(map[string]*appMetrics),
		revoked:   make(map[string]bool),
		certEnded: make(map[string]bool),
	}
	m.reg.MustRegister(m.exchanges, m.errors, m.head, m.reqBytes, m.resBytes, m.inFlight,
		m.opened, m.closed, m.refusals, m.enrollments, m.renewals, m.revocations, &sessionCollector{g: g})
	if _, ok := g.store.(stalledStore); ok {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ns + "store_stalled",
			Help: "1 while calls to the store's database wait for it (one has waited 3 s or more, now or within the last " +
				"store sweep and 10 s) or it refused the last replica heartbeat, although it answers a ping; 0 otherwise. " +
				"/readyz stays 200: the relay does not wait for the database."},
			func() float64 {
				if stalled, _ := g.storeStalled(time.Now()); stalled {
					return 1
				}
				return 0
			}))
	}
	if g.cfg.Preauth != nil {
		m.preauth = prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "preauth_total",
			Help: "Pre-authentication decisions, by outcome: allowed, sign_in_started, signed_in, bind_started, bound, " +
				"or the refusal's error code."},
			[]string{"outcome"})
		m.reg.MustRegister(m.preauth)
	}
	m.bind(g.router.Load())
	return m
}

// bind gives each route of r its app's children, before r serves (New, and
// SetRoutes on a reload). Every app's children exist from then on, so that
// a dashboard shows an idle app with zeros.
func (m *gatewayMetrics) bind(r *Router) {
	if m == nil {
		return
	}
	for _, rt := range r.routes {
		rt.metrics = m.app(rt.App)
	}
}

// app returns the children of the app called name, made on first use.
func (m *gatewayMetrics) app(name string) *appMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if am := m.apps[name]; am != nil {
		return am
	}
	am := &appMetrics{name: name}
	if name != "" {
		am.head = m.head.WithLabelValues(name)
		am.reqBytes = m.reqBytes.WithLabelValues(name)
		am.resBytes = m.resBytes.WithLabelValues(name)
	}
	m.apps[name] = am
	return am
}

// exchangeDone records one exchange at its end, from what the access log
// line holds. rt is nil when no app matched; headAt is when the response
// head was written (zero when none was, as for an upgrade).
func (m *gatewayMetrics) exchangeDone(rt *Route, f *accessFields, start, headAt time.Time) {
	if m == nil {
		return
	}
	m.inFlight.Dec()
	var am *appMetrics
	switch {
	case rt == nil:
		am = m.app("") // slow path: no app matched
	case rt.metrics != nil:
		am = rt.metrics
	default:
		am = m.app(rt.App) // slow path: a Route no router of the gateway's built (tests)
	}
	if f.ErrCode != "" {
		i := errorCodeIndex(f.ErrCode)
		am.errors[i].Inc(m.errors, am.name, errorCodeLabel(i))
	} else {
		c := f.Status / 100
		if c < 1 || c >= len(statusClasses) {
			c = 0
		}
		am.classes[c].Inc(m.exchanges, am.name, statusClasses[c])
		// Only exchanges that reached an agent have a backend's head; the
		// gateway answers sign-in redirects and its own endpoints itself.
		if !headAt.IsZero() && am.head != nil && f.Agent != "" {
			am.head.Observe(headAt.Sub(start).Seconds())
		}
	}
	if am.reqBytes != nil {
		am.reqBytes.Add(float64(f.BytesIn))
		am.resBytes.Add(float64(f.BytesOut))
	}
}

// exchangeStarted counts an exchange in flight until exchangeDone.
func (m *gatewayMetrics) exchangeStarted() {
	if m != nil {
		m.inFlight.Inc()
	}
}

// sessionCollector reports the live sessions and agents from the registry
// at scrape time, with zeros for each group an app uses (after the last
// reload) and each transport.
type sessionCollector struct{ g *Gateway }

var (
	sessionsDesc = promserve.Desc("sallyport_gateway_sessions",
		"Live tunnel sessions, by connector group and transport.", "group", "transport")
	agentsDesc = promserve.Desc("sallyport_gateway_agents",
		"Agents with at least one live tunnel session, by connector group.", "group")
	transports = [...]string{"grpc", "quic", "yamux"}
)

func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- agentsDesc
}

func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ group, transport string }
	sessions := make(map[key]int)
	agents := make(map[string]map[string]bool) // group → agent ids
	for _, r := range c.g.router.Load().routes {
		for _, t := range transports {
			sessions[key{r.Group, t}] += 0
		}
		agents[r.Group] = nil
	}
	for _, s := range c.g.registry.Sessions() {
		sessions[key{s.Group, s.Transport}]++
		if s.Superseded {
			continue // its agent counts by its new process
		}
		if agents[s.Group] == nil {
			agents[s.Group] = make(map[string]bool)
		}
		agents[s.Group][agentKey(s.SessionInfo)] = true
	}
	keys := make([]key, 0, len(sessions))
	for k := range sessions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].group != keys[j].group {
			return keys[i].group < keys[j].group
		}
		return keys[i].transport < keys[j].transport
	})
	for _, k := range keys {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(sessions[k]), k.group, k.transport)
	}
	for group, ids := range agents {
		ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, float64(len(ids)), group)
	}
}

// onSession is the transports' OnSession hook: it registers the session
// (addSession) and counts it opened, and closed with its reason once it
// ends; either way its group's redundancy is looked at (groupChanged).
func (g *Gateway) onSession(s tunnel.Session) {
	kept := g.addSession(s)
	m := g.metrics
	info := s.Info()
	m.opened.WithLabelValues(info.Group, info.Transport).Inc()
	if !kept {
		// addSession closed it: one session too many, or revoked meanwhile.
		// (Once registered, a session may also be closed before this line,
		// by a revocation that found it: that one counts as revoked.)
		m.closed.WithLabelValues(info.Group, info.Transport, closeRefused).Inc()
		return
	}
	g.groupChanged(info.Group)
	go func() {
		g.awaitEnd(s)
		m.closed.WithLabelValues(info.Group, info.Transport, g.closeReason(s, info)).Inc()
		g.groupChanged(info.Group)
	}()
}

// awaitEnd returns when s has ended. When its agent announces its shutdown
// first, the group is looked at then: the agent gets no new exchanges from
// that moment, and its session may take the drain grace (30 s) to end, so
// a group left without agents is said at once, and a single agent's grace
// starts then.
func (g *Gateway) awaitEnd(s tunnel.Session) {
	select {
	case <-s.Draining():
		g.groupChanged(s.Info().Group)
		<-s.Done()
	case <-s.Done():
	}
}

// closeReason classifies how a session that has ended came to end.
func (g *Gateway) closeReason(s tunnel.Session, info tunnel.SessionInfo) string {
	g.metrics.mu.Lock()
	revoked := info.ConnectorID != "" && g.metrics.revoked[info.ConnectorID]
	cert := g.metrics.certEnded[info.ID]
	delete(g.metrics.certEnded, info.ID)
	g.metrics.mu.Unlock()
	switch {
	case revoked:
		return closeRevoked
	case cert:
		return closeCertificate
	case isClosed(g.stopped):
		// Agents drain when the gateway asks them to: once the shutdown
		// delay (if any) is over, not during it.
		return closeShutdown
	case isClosed(s.Draining()):
		return closeDrained
	}
	if ss, ok := s.(silentSession); ok && ss.Silent() {
		// The liveness watch closed it, or the connection ended while the
		// agent did not answer: not a crash that reset the connection.
		return closeSilent
	}
	return closeLost
}

// sessionCertEnded marks a session the gateway closes because of its
// certificate, so that its end counts as closeCertificate.
func (m *gatewayMetrics) sessionCertEnded(id string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.certEnded[id] = true
	m.mu.Unlock()
}

// connectorRevoked marks a connector revoked, so that its sessions, closed
// next, count as revoked, and counts the revocation when this gateway's
// call revoked it (first), not when it found it revoked already.
func (m *gatewayMetrics) connectorRevoked(id string, first bool) {
	if m == nil {
		return
	}
	if first {
		m.revocations.Inc()
	}
	m.mu.Lock()
	m.revoked[id] = true
	m.mu.Unlock()
}

// refusalCertificate is the refusal reason of a client certificate refused
// in the TLS handshake (see verifyTunnelConn).
const refusalCertificate = "certificate"

// refusalStoreDown is the refusal reason of a session the gateway could
// not check because its store did not answer (tunnel.ErrUnavailable; the
// agent retries): not an authentication failure.
const refusalStoreDown = "error"

// authenticateCounted is the transports' Authenticate hook:
// authenticateSession, with its refusals counted.
func (g *Gateway) authenticateCounted(state *tls.ConnectionState, token string) (tunnel.Identity, error) {
	id, err := g.authenticateSession(state, token)
	if err != nil {
		reason := "unauthenticated"
		switch {
		case errors.Is(err, tunnel.ErrRevoked):
			reason = closeRevoked
		case errors.Is(err, tunnel.ErrUnavailable):
			reason = refusalStoreDown // not the agent's credential
		}
		g.metrics.refusals.WithLabelValues(reason).Inc()
	}
	return id, err
}

// grpcOutcome is the outcome label of an Enroll or Renew answer.
func grpcOutcome(err error) string {
	switch status.Code(err) {
	case grpccodes.OK:
		return "ok"
	case grpccodes.InvalidArgument:
		return "invalid"
	case grpccodes.Unauthenticated:
		return "unauthenticated"
	case grpccodes.PermissionDenied:
		return closeRevoked
	case grpccodes.ResourceExhausted:
		return "rate_limited"
	}
	return "error"
}

// meteredEnroll counts the outcomes of the enrollment service.
type meteredEnroll struct {
	*enrollService
}

func (e meteredEnroll) Enroll(ctx context.Context, req *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	res, err := e.enrollService.Enroll(ctx, req)
	e.g.metrics.enrollments.WithLabelValues(grpcOutcome(err)).Inc()
	return res, err
}

func (e meteredEnroll) Renew(ctx context.Context, req *tunnelv1.RenewRequest) (*tunnelv1.RenewResponse, error) {
	res, err := e.enrollService.Renew(ctx, req)
	e.g.metrics.renewals.WithLabelValues(grpcOutcome(err)).Inc()
	return res, err
}

// Pre-authentication outcomes besides refusal codes.
const (
	preauthAllowed     = "allowed"         // Authorize let the request pass
	preauthStarted     = "sign_in_started" // a browser was sent to the provider
	preauthSignedIn    = "signed_in"       // a sign-in callback completed
	preauthBindStarted = "bind_started"    // a page load was sent to its session's home host to be bound
	preauthBound       = "bound"           // a host was bound to the browser's session (preauth.BoundPath)
	preauthUncounted   = ""                // an intermediate step's answer: not counted
)

// preauthEndpoint reports whether preauth_total counts the answers of the
// pre-authentication endpoint at path, and the outcome of its plain
// preauth.ErrHandled: the callback's is a completed sign-in; at BoundPath
// no home vouched and the browser was sent to the provider; BindPath's
// answer (a ticket) is counted where it lands, at BoundPath, and only its
// refusals here. Sign-out and the JWKS are not counted.
func preauthEndpoint(path string) (handled string, counted bool) {
	switch path {
	case preauth.CallbackPath:
		return preauthSignedIn, true
	case preauth.BoundPath:
		return preauthStarted, true
	case preauth.BindPath:
		return preauthUncounted, true
	}
	return "", false
}

// preauthDone counts one pre-authentication decision: err is what
// Authorize or a pre-authentication endpoint returned, handled the outcome
// of a plain preauth.ErrHandled (the answer was written: a redirect; ""
// counts nothing). preauth.ErrBindStarted and preauth.ErrBound say theirs.
func (m *gatewayMetrics) preauthDone(err error, handled string) {
	if m == nil || m.preauth == nil {
		return
	}
	outcome := preauthAllowed
	var pe *preauth.Error
	switch {
	case err == nil:
	case errors.Is(err, preauth.ErrBindStarted):
		outcome = preauthBindStarted
	case errors.Is(err, preauth.ErrBound):
		outcome = preauthBound
	case errors.Is(err, preauth.ErrHandled):
		if handled == preauthUncounted {
			return
		}
		outcome = handled
	case errors.As(err, &pe):
		outcome = pe.Code
	default:
		outcome = CodeSignInFailed
	}
	m.preauth.WithLabelValues(outcome).Inc()
}
