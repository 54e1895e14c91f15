package agent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// TestMetricsOff: without Config.Metrics nothing is collected and the
// backend's client is handed over as it is.
func TestMetricsOff(t *testing.T) {
	a, err := New(Config{Gateway: "127.0.0.1:1", Allow: []string{"127.0.0.1:*"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.MetricsHandler() != nil || a.metrics != nil {
		t.Fatal("metrics without Config.Metrics")
	}
	req := httptest.NewRequest("GET", "http://127.0.0.1:9/", nil)
	rt, err := a.backend(req, &tunnelv1.RequestHead{App: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rt.(*meteredTransport); ok {
		t.Fatal("the backend client is measured without Config.Metrics")
	}
}

// TestMetricsExchanges: backend answers count by status class, refusals and
// failures by the agent's error code, each with the app; every backend call
// is timed.
func TestMetricsExchanges(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer backend.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := closed.Addr().String()
	closed.Close()
	a, err := New(Config{Gateway: "127.0.0.1:1", Allow: []string{"127.0.0.1:*"}, Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.backends.CloseIdleConnections()
	call := func(app, url string) {
		t.Helper()
		req := httptest.NewRequest("GET", url, nil)
		req.RequestURI = ""
		rt, err := a.backend(req, &tunnelv1.RequestHead{App: app})
		if err != nil {
			return // refused: counted
		}
		if res, err := rt.RoundTrip(req); err == nil {
			res.Body.Close()
		}
	}
	call("web", backend.URL+"/")
	call("web", backend.URL+"/")
	call("web", backend.URL+"/missing")
	call("web", "http://10.0.0.1:80/") // not in the allow list
	call("api", "http://"+dead+"/")    // nothing listens
	got := map[[2]string]float64{}
	for _, app := range []string{"web", "api"} {
		for _, o := range append(outcomeClasses[:], errorOutcomes[:]...) {
			if v := testutil.ToFloat64(a.metrics.exchanges.WithLabelValues(app, o)); v != 0 {
				got[[2]string{app, o}] = v
			}
		}
	}
	wantCounts := map[[2]string]float64{
		{"web", "2xx"}: 2, {"web", "4xx"}: 1, {"web", CodeBackendNotAllowed}: 1, {"api", CodeBackendUnreachable}: 1,
	}
	if len(got) != len(wantCounts) {
		t.Errorf("exchanges %v, want %v", got, wantCounts)
	}
	for k, v := range wantCounts {
		if got[k] != v {
			t.Errorf("exchanges%v = %v, want %v", k, got[k], v)
		}
	}
	// The backend calls (not the refusal) are timed.
	if n := histogramCounts(t, a); n["web"] != 3 || n["api"] != 1 {
		t.Errorf("backend_seconds counts %v, want web 3, api 1", n)
	}
	// The handler serves them, with the sessions (none) by transport.
	w := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body := w.Body.String()
	for _, s := range []string{
		`sallyport_agent_exchanges_total{app="web",outcome="2xx"} 2`,
		`sallyport_agent_sessions{transport="quic"} 0`,
		"go_goroutines ", "process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, s) {
			t.Errorf("/metrics lacks %q", s)
		}
	}
	if strings.Contains(body, "sallyport_agent_certificate_expiry_timestamp_seconds ") {
		t.Error("a certificate expiry before the agent has a certificate")
	}
}

func histogramCounts(t *testing.T, a *Agent) map[string]uint64 {
	t.Helper()
	mfs, err := a.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "sallyport_agent_backend_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
		}
	}
	return out
}

// TestMetricsAppLimit: app label values are bounded; apps past the limit
// count as "other".
func TestMetricsAppLimit(t *testing.T) {
	a, err := New(Config{Gateway: "127.0.0.1:1", Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxMetricApps + 10 {
		a.metrics.app("app-" + strings.Repeat("x", i))
	}
	if n := len(a.metrics.apps); n != maxMetricApps+1 {
		t.Fatalf("%d apps, want %d and other", n, maxMetricApps)
	}
	if a.metrics.app("one-more") != a.metrics.apps["other"] {
		t.Fatal("an app past the limit is not counted as other")
	}
}

// nopTransport answers every request with the same response.
type nopTransport struct{ res *http.Response }

func (t nopTransport) RoundTrip(*http.Request) (*http.Response, error) { return t.res, nil }

// TestMeteredTransportAllocs: measuring a backend call allocates nothing
// once the app is known (the wrapper is pooled).
func TestMeteredTransportAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./agent/)")
	}
	a, err := New(Config{Gateway: "127.0.0.1:1", Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	next := nopTransport{res: &http.Response{StatusCode: 200}}
	req := httptest.NewRequest("GET", "http://backend/", nil)
	call := func() {
		if _, err := metered(next, a.metrics.app("web")).RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	call()
	if allocs := testing.AllocsPerRun(200, call); allocs > 0 {
		t.Fatalf("%v allocations per measured backend call, want 0", allocs)
	}
	if got := testutil.ToFloat64(a.metrics.exchanges.WithLabelValues("web", "2xx")); got != 202 { // AllocsPerRun calls once more to warm up
		t.Fatalf("exchanges{web,2xx} = %v, want 202", got)
	}
}

// TestMeteredTransportRelaysInformational: measuring a backend call keeps
// what the tunnel server asks of the client under it, whether it relays
// informational responses itself (the agent's own HTTP/1.1 client does,
// so the exchange needs no client trace).
func TestMeteredTransportRelaysInformational(t *testing.T) {
	a, err := New(Config{Gateway: "127.0.0.1:1", Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	get := httptest.NewRequest("GET", "http://backend/", nil)
	post := httptest.NewRequest("POST", "http://backend/", strings.NewReader("x"))
	own := &h1Sync{Fallback: nopTransport{}}
	for _, tc := range []struct {
		next http.RoundTripper
		req  *http.Request
		want bool
	}{
		{own, get, true},
		{own, post, false}, // goes to net/http's Transport: the trace relays
		{nopTransport{}, get, false},
	} {
		rt := metered(tc.next, a.metrics.app("web"))
		r, ok := rt.(tunnel.InformationalRelayer)
		if got := ok && r.RelaysInformational(tc.req); got != tc.want {
			t.Errorf("metered(%T) for %s relays informational responses: %v, want %v", tc.next, tc.req.Method, got, tc.want)
		}
	}
}
