package main

import (
	"testing"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/config"
)

// TestAgentAcceptsWhatTheConfigAccepts: every pattern form the config
// accepts in allow and backend_tls[].hosts starts an agent. Before the fix
// the agent refused CIDRs in backend_tls at start-up, without file or line,
// after the config had accepted them.
func TestAgentAcceptsWhatTheConfigAccepts(t *testing.T) {
	const yaml = `gateway: 127.0.0.1:8443
token: t
allow: ["app.corp:443", "*.corp:*", "10.0.0.5:8443", "[fd00::1]:443", "10.0.0.0/8", "10.0.0.0/8:443", "fd00::/8:443", "[fd00::/8]:443"]
backend_tls:
  - hosts: ["app.corp:443", "*.corp:*", "10.0.0.5:8443", "[fd00::1]:443", "10.0.0.0/8", "10.0.0.0/8:443", "fd00::/8:443", "[fd00::]/8:443"]
    insecure_skip_verify: true
`
	cfg, err := config.ParseAgent("agent.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	settings, err := agentConfig(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	settings.DataDir = t.TempDir()
	if _, err := agent.New(settings); err != nil {
		t.Fatalf("agent.New: %v", err)
	}
}
