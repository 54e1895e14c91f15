package agent

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sallyport/sallyport/internal/promserve"
	"github.com/sallyport/sallyport/tunnel"
)

// The agent's Prometheus metrics (Config.Metrics; MetricsHandler serves
// them). Labels have bounded values: app names come from the gateway's
// config (at most maxMetricApps of them, later ones count as "other"),
// outcomes are status classes or the agent's error codes.
//
//	sallyport_agent_sessions{transport}                  tunnel sessions up (grpc, quic, yamux)
//	sallyport_agent_exchanges_total{app,outcome}         exchanges by outcome: the backend's status class (2xx…), an error code
//	                                                     (backend-not-allowed, backend-unreachable, backend-timeout,
//	                                                     assertion-rejected), or canceled (the gateway gave up first)
//	sallyport_agent_backend_seconds{app}                 time of the backend call to its response head
//	sallyport_agent_certificate_expiry_timestamp_seconds when the agent's client certificate expires (unix time)
//
// Nothing is collected without Config.Metrics: an agent without a metrics
// listener spends neither memory nor time on them.

// maxMetricApps bounds the app label values of an agent.
const maxMetricApps = 256

// backendBuckets are the backend call latency buckets: 1 ms to 60 s.
var backendBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// outcomeClasses are the exchange outcomes of backend answers, by
// status/100; index 0 is any status outside 100–599.
var outcomeClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// errorOutcomes are the outcomes of exchanges that got no answer, in the
// order of agentApp.errors.
var errorOutcomes = [...]string{CodeBackendNotAllowed, CodeBackendUnreachable, CodeBackendTimeout,
	CodeAssertionRejected, CodeBackend1xxLimit, "canceled"}

const outcomeCanceled = len(errorOutcomes) - 1

func errorOutcome(code string) int {
	for i, c := range errorOutcomes {
		if c == code {
			return i
		}
	}
	return 1 // ClassifyBackendError's default
}

// agentApp are the children of one app: the latency histogram's resolved
// when the app is first seen, each outcome's on its first use.
type agentApp struct {
	name    string
	vec     *prometheus.CounterVec
	classes [len(outcomeClasses)]promserve.LazyCounter
	errors  [len(errorOutcomes)]promserve.LazyCounter
	backend prometheus.Observer
}

// agentMetrics are the agent's collectors, registered once in reg.
type agentMetrics struct {
	reg       *prometheus.Registry
	exchanges *prometheus.CounterVec
	backend   *prometheus.HistogramVec

	mu   sync.RWMutex
	apps map[string]*agentApp // guarded by mu; at most maxMetricApps and "other"
}

func newAgentMetrics(a *Agent) *agentMetrics {
	const ns = "sallyport_agent_"
	m := &agentMetrics{
		reg: promserve.NewRegistry(),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "exchanges_total",
			Help: "Exchanges served, by app and outcome: the backend's status class, the agent's error code, or canceled."},
			[]string{"app", "outcome"}),
		backend: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ns + "backend_seconds",
			Help: "Time of the backend call to its response head, by app.", Buckets: backendBuckets}, []string{"app"}),
		apps: make(map[string]*agentApp),
	}
	m.reg.MustRegister(m.exchanges, m.backend, &agentCollector{a: a})
	return m
}

// app returns the children of app. Fast path: a read-locked map lookup,
// without allocating; the first exchange of an app resolves them.
func (m *agentMetrics) app(name string) *agentApp {
	m.mu.RLock()
	am := m.apps[name]
	m.mu.RUnlock()
	if am != nil {
		return am
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if am := m.apps[name]; am != nil {
		return am
	}
	if len(m.apps) >= maxMetricApps {
		name = "other"
		if am := m.apps[name]; am != nil {
			return am
		}
	}
	am = &agentApp{name: name, vec: m.exchanges, backend: m.backend.WithLabelValues(name)}
	m.apps[name] = am
	return am
}

// refused counts an exchange the agent refused before calling the backend.
func (am *agentApp) refused(err error) {
	code, _ := ClassifyBackendError(err)
	am.failed(errorOutcome(code))
}

// failed counts an exchange with the error outcome of index i.
func (am *agentApp) failed(i int) { am.errors[i].Inc(am.vec, am.name, errorOutcomes[i]) }

// called counts a backend call that took d.
func (am *agentApp) called(req *http.Request, res *http.Response, err error, d time.Duration) {
	am.backend.Observe(d.Seconds())
	switch {
	case err == nil:
		c := res.StatusCode / 100
		if c < 1 || c >= len(outcomeClasses) {
			c = 0
		}
		am.classes[c].Inc(am.vec, am.name, outcomeClasses[c])
	case req.Context().Err() != nil:
		am.failed(outcomeCanceled)
	default:
		am.refused(err)
	}
}

// meteredTransport measures one backend call. It comes from a pool and
// goes back when its RoundTrip starts (the tunnel server calls RoundTrip
// once), so that measuring makes no garbage.
type meteredTransport struct {
	next http.RoundTripper
	app  *agentApp
}

var meteredTransports = sync.Pool{New: func() any { return new(meteredTransport) }}

func metered(next http.RoundTripper, app *agentApp) http.RoundTripper {
	t := meteredTransports.Get().(*meteredTransport)
	t.next, t.app = next, app
	return t
}

// RelaysInformational passes on next's answer (tunnel.InformationalRelayer):
// a measured agent's own HTTP/1.1 client must keep relaying informational
// responses itself, without the client trace that costs net/http's
// clients four allocations per exchange.
func (t *meteredTransport) RelaysInformational(req *http.Request) bool {
	r, ok := t.next.(tunnel.InformationalRelayer)
	return ok && r.RelaysInformational(req)
}

func (t *meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	next, app := t.next, t.app
	*t = meteredTransport{}
	meteredTransports.Put(t)
	start := time.Now()
	res, err := next.RoundTrip(req)
	app.called(req, res, err, time.Since(start))
	return res, err
}

// agentCollector reports the sessions and the certificate's expiry at
// scrape time.
type agentCollector struct{ a *Agent }

var (
	agentSessionsDesc = promserve.Desc("sallyport_agent_sessions",
		"Tunnel sessions up, by transport.", "transport")
	certExpiryDesc = promserve.Desc("sallyport_agent_certificate_expiry_timestamp_seconds",
		"When the agent's client certificate expires, in unix seconds (absent before enrollment).")
)

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- agentSessionsDesc
	ch <- certExpiryDesc
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{TransportGRPC: 0, TransportQUIC: 0, TransportYamux: 0}
	for _, s := range c.a.SessionStatuses() {
		counts[s.Transport]++
	}
	for _, t := range [...]string{TransportGRPC, TransportQUIC, TransportYamux} {
		ch <- prometheus.MustNewConstMetric(agentSessionsDesc, prometheus.GaugeValue, float64(counts[t]), t)
	}
	if cr := c.a.creds.Load(); cr != nil && cr.Cert.Leaf != nil {
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(cr.Expires().Unix()))
	}
}

// MetricsHandler serves the agent's Prometheus metrics (see metrics.go),
// or is nil without Config.Metrics.
func (a *Agent) MetricsHandler() http.Handler {
	if a.metrics == nil {
		return nil
	}
	return promserve.Handler(a.metrics.reg)
}
