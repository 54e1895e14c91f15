package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// TestNotTLSGateway: an agent pointed at a port that answers without TLS
// (the gateway's public or admin port) logs an error that says so and
// names the port to use. It used to log only the warning "cannot connect
// to the gateway ... tls: first record does not look like a TLS
// handshake", forever.
func TestNotTLSGateway(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler()) // plain HTTP, as the admin port
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, transport := range []string{TransportGRPC, TransportYamux} {
		t.Run(transport, func(t *testing.T) {
			logs, ok := runAgentUntil(t, Config{Gateway: addr, Transport: transport, Connections: 1,
				Credentials: testCredentials(t, "c1")}, func(e zapcore.Entry) bool {
				return strings.Contains(e.Message, "cannot connect to the gateway")
			}, 15*time.Second)
			if !ok {
				t.Errorf("no connection failure logged; logs: %v", logs.All())
			}
			e := logs.FilterMessageSnippet("cannot connect to the gateway").All()
			if len(e) == 0 {
				return
			}
			if msg := e[0].Message; e[0].Level != zapcore.ErrorLevel || !strings.Contains(msg, "not with TLS") ||
				!strings.Contains(msg, "tunnel.addr (8443 by default)") {
				t.Errorf("logged %s %q, want an error that names the tunnel port", e[0].Level, msg)
			}
		})
	}
}
