package gateway

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// metricsRig is a gateway with one app, "a" at app.test in group "g",
// whose only session answers every request at once with status; metered
// says whether it has metrics.
func metricsRig(t *testing.T, status int32, metered bool) *Gateway {
	t.Helper()
	s := &answerSession{answer: &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: status}, End: true}}
	s.done = make(chan struct{})
	router, err := NewRouter([]Route{{App: "a", Hosts: []string{"app.test"}, Group: "g",
		Backend: &url.URL{Scheme: "http", Host: "backend:80"}}})
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{registry: NewRegistry(), log: zap.NewNop()}
	g.router.Store(router)
	g.registry.Add(s)
	if metered {
		g.metrics = newGatewayMetrics(g)
	}
	g.handler = newProxyHandler(g)
	return g
}

// discardWriter is a ResponseWriter that keeps nothing and allocates
// nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// TestMetricsExchangeAllocs: recording an exchange's metrics adds no
// allocation to it (the app's children are resolved up front; the status
// class child on first use).
func TestMetricsExchangeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./gateway/)")
	}
	count := func(metered bool) float64 {
		g := metricsRig(t, 200, metered)
		r := httptest.NewRequest("GET", "http://app.test/x", nil)
		r.RemoteAddr = "192.0.2.7:5555"
		w := &discardWriter{h: make(http.Header)}
		serve := func() {
			clear(w.h)
			g.handler.ServeHTTP(w, r)
		}
		serve()
		return testing.AllocsPerRun(200, serve)
	}
	without, with := count(false), count(true)
	t.Logf("%.1f allocations per exchange without metrics, %.1f with", without, with)
	if with > without {
		t.Fatalf("metrics add %.1f allocations per exchange", with-without)
	}
}

// TestMetricsExchange: relayed exchanges count by app and status class,
// with their latency; answers of the gateway's own by code (no app for an
// unknown host); bytes and the in-flight gauge.
func TestMetricsExchange(t *testing.T) {
	g := metricsRig(t, 404, true)
	serve := func(host, body string) {
		r := httptest.NewRequest("POST", "http://"+host+"/x", strings.NewReader(body))
		g.handler.ServeHTTP(httptest.NewRecorder(), r)
	}
	serve("app.test", "hello")
	serve("app.test", "")
	serve("other.test", "")
	m := g.metrics
	if got := testutil.ToFloat64(m.exchanges.WithLabelValues("a", "4xx")); got != 2 {
		t.Errorf("exchanges{a,4xx} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("", CodeNoRoute)); got != 1 {
		t.Errorf("errors{\"\",no-route} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.reqBytes.WithLabelValues("a")); got != 5 {
		t.Errorf("request bytes of a = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.inFlight); got != 0 {
		t.Errorf("in flight after the exchanges = %v, want 0", got)
	}
	if n := testutil.CollectAndCount(m.exchanges); n != 1 {
		t.Errorf("%d exchange series, want 1 (only the class seen)", n)
	}
	// The histogram counts the relayed exchanges.
	if got := histogramCount(t, m, "a"); got != 2 {
		t.Errorf("response_head_seconds{a} count = %d, want 2", got)
	}
}

// histogramCount is the sample count of app's response head histogram.
func histogramCount(t *testing.T, m *gatewayMetrics, app string) uint64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sallyport_gateway_response_head_seconds" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "app" && l.GetValue() == app {
					return mm.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	t.Fatalf("no response_head_seconds for app %q", app)
	return 0
}

// TestGRPCOutcome: the outcome label of an enrollment or renewal answer.
func TestGRPCOutcome(t *testing.T) {
	for err, want := range map[error]string{
		nil: "ok",
		status.Error(grpccodes.InvalidArgument, "csr"):      "invalid",
		status.Error(grpccodes.Unauthenticated, "token"):    "unauthenticated",
		status.Error(grpccodes.PermissionDenied, "revoked"): "revoked",
		status.Error(grpccodes.ResourceExhausted, "wait"):   "rate_limited",
		status.Error(grpccodes.Internal, "store"):           "error",
	} {
		if got := grpcOutcome(err); got != want {
			t.Errorf("grpcOutcome(%v) = %q, want %q", err, got, want)
		}
	}
}
