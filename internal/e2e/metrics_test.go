package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/testrig"
)

// series is one scrape: the value of each series, keyed by its name and
// labels as the text format prints them (labels sorted by name).
type series map[string]float64

// parseMetrics reads the Prometheus text format.
func parseMetrics(t *testing.T, r io.Reader) series {
	t.Helper()
	out := series{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// with returns the keys of the series of one metric name, sorted.
func (s series) with(name string) []string {
	var keys []string
	for k := range s {
		if k == name || strings.HasPrefix(k, name+"{") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// scrape gets url (a /metrics endpoint) without any credentials.
func scrape(t *testing.T, url string) series {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s = %d %s", url, res.StatusCode, b)
	}
	return parseMetrics(t, res.Body)
}

// scrapeUntil scrapes until ok holds (a session's end is counted by a
// goroutine that waits for it, just after the registry lets go of it).
func scrapeUntil(t *testing.T, url string, ok func(series) bool) series {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s := scrape(t, url)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never matched; last scrape:\n%v", s)
		}
		<-tick.C
	}
}

func wantSeries(t *testing.T, s series, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		got, ok := s[k]
		if !ok {
			t.Errorf("no series %s", k)
		} else if got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

func wantKeys(t *testing.T, s series, name string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := s.with(name); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s series:\n%s\nwant:\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

const metricsAdminToken = "metrics-admin-token"

// metricsRig is a gateway with an admin listener and two apps: "web" in
// the default group, and "lonely" in group "nobody", which no agent
// serves.
func metricsRig(t *testing.T) (*testrig.Rig, string) {
	t.Helper()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/missing" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "gone")
			return
		}
		io.WriteString(w, "hello")
	}))
	t.Cleanup(backend.Close)
	rig := testrig.New(t, testrig.Options{
		Routes: []gateway.Route{
			{App: "web", Hosts: []string{"web.test"}, Backend: testrig.MustURL(t, backend.URL)},
			{App: "lonely", Hosts: []string{"lonely.test"}, Group: "nobody", Backend: testrig.MustURL(t, backend.URL)},
		},
		Gateway: func(c *gateway.Config) {
			c.AdminAddr = "127.0.0.1:0"
			c.AdminToken = metricsAdminToken
		},
	})
	return rig, rig.AdminURL() + "/metrics"
}

// send makes one request to the rig and returns its status.
func send(t *testing.T, rig *testrig.Rig, method, host, path, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, rig.URL+path, strings.NewReader(body))
	req.Host = host
	res, err := rig.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestMetricsGateway relays a known set of exchanges and checks the
// gateway's /metrics (no token) for exact counts and label sets; the
// session gauges follow an agent coming and leaving, and a revoked one.
func TestMetricsGateway(t *testing.T) {
	rig, url := metricsRig(t)
	tr := rig.Transport
	s := scrape(t, url)
	wantSeries(t, s, map[string]float64{
		`sallyport_gateway_sessions{group="default",transport="` + tr + `"}`: 0,
		`sallyport_gateway_sessions{group="nobody",transport="grpc"}`:        0,
		`sallyport_gateway_agents{group="default"}`:                          0,
		`sallyport_gateway_exchanges_in_flight`:                              0,
	})
	if len(s.with("go_goroutines")) != 1 || len(s.with("process_resident_memory_bytes")) != 1 {
		t.Error("no Go or process metrics")
	}

	a := rig.StartAgent(func(c *agent.Config) { c.Metrics = true })
	for range 2 {
		if code := send(t, rig, "GET", "web.test", "/", ""); code != 200 {
			t.Fatalf("GET = %d", code)
		}
	}
	if code := send(t, rig, "POST", "web.test", "/", "abc"); code != 200 {
		t.Fatalf("POST = %d", code)
	}
	if code := send(t, rig, "GET", "web.test", "/missing", ""); code != 404 {
		t.Fatalf("GET /missing = %d", code)
	}
	if code := send(t, rig, "GET", "lonely.test", "/", ""); code != 503 {
		t.Fatalf("GET lonely = %d", code)
	}
	if code := send(t, rig, "GET", "unknown.test", "/", ""); code != 404 {
		t.Fatalf("GET unknown host = %d", code)
	}

	s = scrape(t, url)
	wantKeys(t, s, "sallyport_gateway_exchanges_total",
		`sallyport_gateway_exchanges_total{app="web",class="2xx"}`,
		`sallyport_gateway_exchanges_total{app="web",class="4xx"}`)
	wantKeys(t, s, "sallyport_gateway_errors_total",
		`sallyport_gateway_errors_total{app="lonely",code="no-connector"}`,
		`sallyport_gateway_errors_total{app="",code="no-route"}`)
	wantSeries(t, s, map[string]float64{
		`sallyport_gateway_exchanges_total{app="web",class="2xx"}`:                        3,
		`sallyport_gateway_exchanges_total{app="web",class="4xx"}`:                        1,
		`sallyport_gateway_errors_total{app="lonely",code="no-connector"}`:                1,
		`sallyport_gateway_errors_total{app="",code="no-route"}`:                          1,
		`sallyport_gateway_request_body_bytes_total{app="web"}`:                           3,
		`sallyport_gateway_response_body_bytes_total{app="web"}`:                          3*5 + 4,
		`sallyport_gateway_response_head_seconds_count{app="web"}`:                        4,
		`sallyport_gateway_response_head_seconds_count{app="lonely"}`:                     0,
		`sallyport_gateway_exchanges_in_flight`:                                           0,
		`sallyport_gateway_sessions{group="default",transport="` + tr + `"}`:              1,
		`sallyport_gateway_agents{group="default"}`:                                       1,
		`sallyport_gateway_sessions_opened_total{group="default",transport="` + tr + `"}`: 1,
		`sallyport_gateway_enrollments_total{outcome="ok"}`:                               1,
	})
	if got := s[`sallyport_gateway_response_head_seconds_bucket{app="web",le="60"}`]; got != 4 {
		t.Errorf("response_head_seconds{web} le=60 bucket = %v, want 4", got)
	}
	if n := len(s.with("sallyport_gateway_sessions_closed_total")); n != 0 {
		t.Errorf("%d closed-session series before any session ended", n)
	}

	// The agent's own metrics, for the same exchanges.
	checkAgentMetrics(t, rig, a, tr)

	// The agent leaves: it drains first.
	a.Stop()
	closedDrained := `sallyport_gateway_sessions_closed_total{group="default",reason="drained",transport="` + tr + `"}`
	s = scrapeUntil(t, url, func(s series) bool { return s[closedDrained] == 1 })
	wantSeries(t, s, map[string]float64{
		`sallyport_gateway_sessions{group="default",transport="` + tr + `"}`: 0,
		`sallyport_gateway_agents{group="default"}`:                          0,
	})

	// A revoked agent's session counts as revoked, and its reconnect as
	// refused.
	b := rig.StartAgent(nil)
	live := rig.G.Registry().Sessions()
	if len(live) != 1 {
		t.Fatalf("%d sessions, want 1", len(live))
	}
	if _, _, err := rig.G.Revoke(context.Background(), live[0].ConnectorID); err != nil {
		t.Fatal(err)
	}
	if err := b.Exited(t); err == nil {
		t.Fatal("the revoked agent did not stop with an error")
	}
	closedRevoked := `sallyport_gateway_sessions_closed_total{group="default",reason="revoked",transport="` + tr + `"}`
	s = scrapeUntil(t, url, func(s series) bool { return s[closedRevoked] == 1 })
	wantSeries(t, s, map[string]float64{
		`sallyport_gateway_revocations_total`:                                             1,
		`sallyport_gateway_sessions_opened_total{group="default",transport="` + tr + `"}`: 2,
		`sallyport_gateway_sessions{group="default",transport="` + tr + `"}`:              0,
		`sallyport_gateway_session_refusals_total{reason="revoked"}`:                      1,
		`sallyport_gateway_enrollments_total{outcome="ok"}`:                               2,
		`sallyport_gateway_store_stalled`:                                                 0,
	})
}

// checkAgentMetrics checks the agent's /metrics after TestMetricsGateway's
// exchanges: one session, 3×2xx and 1×404 for app web with their backend
// times, and its certificate's expiry as the gateway recorded it.
func checkAgentMetrics(t *testing.T, rig *testrig.Rig, a *testrig.Agent, transport string) {
	t.Helper()
	srv := httptest.NewServer(a.A.MetricsHandler())
	defer srv.Close()
	s := scrape(t, srv.URL)
	wantKeys(t, s, "sallyport_agent_exchanges_total",
		`sallyport_agent_exchanges_total{app="web",outcome="2xx"}`,
		`sallyport_agent_exchanges_total{app="web",outcome="4xx"}`)
	want := map[string]float64{
		`sallyport_agent_exchanges_total{app="web",outcome="2xx"}`: 3,
		`sallyport_agent_exchanges_total{app="web",outcome="4xx"}`: 1,
		`sallyport_agent_backend_seconds_count{app="web"}`:         4,
		`sallyport_agent_sessions{transport="` + transport + `"}`:  1,
	}
	for _, other := range []string{"grpc", "quic", "yamux"} {
		if other != transport {
			want[`sallyport_agent_sessions{transport="`+other+`"}`] = 0
		}
	}
	wantSeries(t, s, want)

	req, _ := http.NewRequest("GET", rig.AdminURL()+"/api/v1/connectors", nil)
	req.Header.Set("Authorization", "Bearer "+metricsAdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var cs []gateway.APIConnector
	if err := json.NewDecoder(res.Body).Decode(&cs); err != nil || len(cs) != 1 {
		t.Fatalf("connectors: %v, %v", cs, err)
	}
	wantSeries(t, s, map[string]float64{
		`sallyport_agent_certificate_expiry_timestamp_seconds`: float64(cs[0].CertExpires.Unix()),
	})
}

// TestMetricsNoToken: /metrics needs no admin token, while the admin API
// still does.
func TestMetricsNoToken(t *testing.T) {
	rig, url := metricsRig(t)
	if s := scrape(t, url); len(s.with("sallyport_gateway_sessions")) == 0 {
		t.Error("no session gauges without a token")
	}
	res, err := http.Get(rig.AdminURL() + "/api/v1/connectors")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("admin API without a token = %d, want 401", res.StatusCode)
	}
}

// TestMetricsPreauth: with pre-authentication, sign-ins and refusals are
// counted by outcome, and refusals as the gateway's own answers.
func TestMetricsPreauth(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{Emails: []string{"alice@example.com"}}, nil, func(c *gateway.Config) {
		c.AdminAddr = "127.0.0.1:0"
	})
	url := a.AdminURL() + "/metrics"
	// An API client without a token.
	if res, _ := getH(t, a.Client(), a.URL+"/api", map[string]string{"Accept": "application/json"}); res.StatusCode != 401 {
		t.Fatalf("API call without a token = %d", res.StatusCode)
	}
	if res, _ := a.signIn(a.browser(), "/page", alice); res.StatusCode != 200 {
		t.Fatalf("alice after sign-in = %d", res.StatusCode)
	}
	if res, _ := a.signIn(a.browser(), "/page", mallory); res.StatusCode != 403 {
		t.Fatalf("mallory after sign-in = %d", res.StatusCode)
	}
	s := scrape(t, url)
	wantKeys(t, s, "sallyport_gateway_preauth_total",
		`sallyport_gateway_preauth_total{outcome="allowed"}`,
		`sallyport_gateway_preauth_total{outcome="forbidden"}`,
		`sallyport_gateway_preauth_total{outcome="sign_in_started"}`,
		`sallyport_gateway_preauth_total{outcome="signed_in"}`,
		`sallyport_gateway_preauth_total{outcome="unauthenticated"}`)
	wantSeries(t, s, map[string]float64{
		`sallyport_gateway_preauth_total{outcome="allowed"}`:               1,
		`sallyport_gateway_preauth_total{outcome="forbidden"}`:             1,
		`sallyport_gateway_preauth_total{outcome="sign_in_started"}`:       2,
		`sallyport_gateway_preauth_total{outcome="signed_in"}`:             2,
		`sallyport_gateway_preauth_total{outcome="unauthenticated"}`:       1,
		`sallyport_gateway_errors_total{app="app",code="forbidden"}`:       1,
		`sallyport_gateway_errors_total{app="app",code="unauthenticated"}`: 1,
		`sallyport_gateway_exchanges_total{app="app",class="2xx"}`:         1,
		`sallyport_gateway_response_head_seconds_count{app="app"}`:         1, // the redirects reached no agent
	})
}

// TestMetricsReload: apps added by a reload get their series (zeros) and
// their group its session gauges at once; an exchange to one counts.
func TestMetricsReload(t *testing.T) {
	rig, url := metricsRig(t)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "fresh")
	}))
	defer backend.Close()
	if err := rig.G.SetRoutes([]gateway.Route{
		{App: "web", Hosts: []string{"web.test"}, Group: testrig.Group, Backend: testrig.MustURL(t, backend.URL)},
		{App: "fresh", Hosts: []string{"fresh.test"}, Group: "later", Backend: testrig.MustURL(t, backend.URL)},
	}); err != nil {
		t.Fatal(err)
	}
	s := scrape(t, url)
	wantSeries(t, s, map[string]float64{
		`sallyport_gateway_response_head_seconds_count{app="fresh"}`: 0,
		`sallyport_gateway_sessions{group="later",transport="grpc"}`: 0,
	})
	if len(s.with(`sallyport_gateway_sessions{group="nobody"`)) != 0 {
		t.Error("session gauges for a group no app uses any more")
	}
	if code := send(t, rig, "GET", "fresh.test", "/", ""); code != 503 {
		t.Fatalf("GET fresh without agents = %d", code)
	}
	wantSeries(t, scrape(t, url), map[string]float64{
		`sallyport_gateway_errors_total{app="fresh",code="no-connector"}`: 1,
	})
}
