package gateway

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
)

// TestAdminMetricsRefuseRebinding: /metrics needs no token, so a web page
// whose DNS name its owner points at 127.0.0.1 (DNS rebinding) could read
// it from the browser of anyone on the gateway's machine: every app and
// connector group. Over loopback the admin listener serves /metrics only
// to requests that name this machine; scrapers by IP address, localhost or
// the host name keep working, and so do the health checks and the API
// (which needs the token).
func TestAdminMetricsRefuseRebinding(t *testing.T) {
	base, _ := newAdminServer(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	hostname, _ := os.Hostname()
	get := func(path, host string, token bool) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if token {
			req.Header.Set("Authorization", "Bearer "+testAdminToken)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b strings.Builder
		if _, err := io.Copy(&b, res.Body); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, b.String()
	}
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port,
		"localhost.evil.example:" + port, "Evil.Example.:" + port} {
		code, body := get("/metrics", host, false)
		if code != http.StatusForbidden || !strings.Contains(body, "does not name this machine") ||
			!strings.Contains(body, "127.0.0.1:"+port) {
			t.Errorf("GET /metrics with Host %q over loopback: %d %.120q; want 403 saying to request 127.0.0.1:%s", host, code, body, port)
		}
		if code, _ := get("/healthz", host, false); code != http.StatusOK {
			t.Errorf("GET /healthz with Host %q: %d, want 200 (health checks stay open)", host, code)
		}
		if code, _ := get("/api/v1/tokens", host, true); code != http.StatusOK {
			t.Errorf("GET /api/v1/tokens with the token and Host %q: %d, want 200 (the token is the guard)", host, code)
		}
	}
	ok := []string{"127.0.0.1:" + port, "127.0.0.1", "localhost:" + port, "LOCALHOST.:" + port,
		"[::1]:" + port, "[::1]", "prometheus.localhost:" + port, "192.0.2.7:" + port}
	if hostname != "" {
		ok = append(ok, hostname+":"+port, strings.ToUpper(hostname))
	}
	for _, host := range ok {
		if code, body := get("/metrics", host, false); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
			t.Errorf("GET /metrics with Host %q: %d %.200q; want 200 with the metrics", host, code, body)
		}
	}
}
