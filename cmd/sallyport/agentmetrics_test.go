package main

import (
	"net"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/config"
)

// TestAgentMetricsAddrInUse: a metrics_addr that cannot be listened on
// stops the agent with the address and what to do.
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
	cfg := &config.Agent{MetricsAddr: ln.Addr().String()}
	stop, err := serveAgentMetrics(cfg, a, zap.NewNop())
	if err == nil {
		stop()
		t.Fatal("serveAgentMetrics on a taken address: no error")
	}
	if msg := err.Error(); !strings.Contains(msg, ln.Addr().String()) || !strings.Contains(msg, "choose a free host:port") {
		t.Fatalf("error %q", msg)
	}
}
