package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// TestAgentGatewayStoreDownLogged: an agent whose session the gateway
// refuses because its database does not answer logs that (WARN, retrying,
// do not enroll again), not that its certificate was refused.
func TestAgentGatewayStoreDownLogged(t *testing.T) {
	addr, clientTLS := refusingSessionGateway(t, errors.New(storeDownAnswer))
	logs, ok := runAgentUntil(t, Config{Gateway: addr, TLS: clientTLS, Transport: TransportYamux, Connections: 1,
		Credentials: testCredentials(t, "c1")}, func(e zapcore.Entry) bool {
		return strings.Contains(e.Message, "database does not answer")
	}, 20*time.Second)
	if !ok {
		t.Fatalf("not logged; logs: %v", logs.All())
	}
	e := logs.FilterMessageSnippet("database does not answer").All()[0]
	if e.Level != zapcore.WarnLevel || !strings.Contains(e.Message, "do not enroll again") {
		t.Errorf("logged %s %q", e.Level, e.Message)
	}
	if n := logs.FilterMessageSnippet("refused this agent's certificate").Len(); n != 0 {
		t.Errorf("also logged as a refused certificate: %v", logs.All())
	}
}
