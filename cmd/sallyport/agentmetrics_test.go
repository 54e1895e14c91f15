package main

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/config"
)

// TestAgentMetricsRefuseRebinding: the agent's metrics_addr, like the
// gateway's /metrics, answers a loopback request only for a Host that
// names this machine: a web page whose name its owner points at 127.0.0.1
// (DNS rebinding) could otherwise read it from a browser on the agent's
// machine. A scrape by address keeps working.
func TestAgentMetricsRefuseRebinding(t *testing.T) {
	a, err := agent.New(agent.Config{Gateway: "127.0.0.1:1", Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	stop, err := serveAgentMetrics(&config.Agent{MetricsAddr: "127.0.0.1:0"}, a, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	served := logs.FilterMessage("serving metrics").All()
	if len(served) != 1 {
		t.Fatalf("no 'serving metrics' line: %v", logs.All())
	}
	u, err := url.Parse(served[0].ContextMap()["metrics"].(string))
	if err != nil {
		t.Fatal(err)
	}
	get := func(host string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", u.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("evil.example:" + u.Port()); code != http.StatusForbidden || !strings.Contains(body, "127.0.0.1:"+u.Port()) {
		t.Errorf("GET /metrics with Host evil.example: %d %.120q; want 403 saying to request 127.0.0.1:%s", code, body, u.Port())
	}
	if n := logs.FilterMessageSnippet("named another host").Len(); n != 1 {
		t.Errorf("%d log lines about the refused Host, want 1", n)
	}
	if code, body := get(u.Host); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics with Host %s: %d %.120q; want 200 with the metrics", u.Host, code, body)
	}
}

// TestAgentMetricsAddrInUse: a metrics_addr that cannot be listened on
// stops the agent with the address and what to do, and the error names
// the config file and the line of metrics_addr, as every other config
// error does. It used to be `metrics_addr "127.0.0.1:18191": listen tcp …`,
// without file or line.
func TestAgentMetricsAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := agent.New(agent.Config{Gateway: "127.0.0.1:1", Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.ParseAgent("agent.yaml", []byte("gateway: 127.0.0.1:1\ntoken: t\nmetrics_addr: \""+ln.Addr().String()+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	stop, err := serveAgentMetrics(cfg, a, zap.NewNop())
	if err == nil {
		stop()
		t.Fatal("serveAgentMetrics on a taken address: no error")
	}
	want := "agent.yaml:3: metrics_addr: listen tcp " + ln.Addr().String() + ": bind: address already in use; choose a free host:port"
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q\nwant it to begin %q", err, want)
	}
}
