package main

import (
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/config"
)

// TestExamples keeps the example files the README points to loadable and
// accepted by the commands.
func TestExamples(t *testing.T) {
	g, err := config.LoadGateway("../../examples/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g.DataDir = t.TempDir()
	gc, err := gatewayConfig(g, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if len(gc.Routes) != 1 || gc.TunnelTLS == nil || len(gc.Tokens) != 1 {
		t.Fatalf("gateway example: %d routes, tls %v, %d tokens", len(gc.Routes), gc.TunnelTLS != nil, len(gc.Tokens))
	}
	a, err := config.LoadAgent("../../examples/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if a.Token != g.Tunnel.Tokens[0].Token {
		t.Fatal("the example agent's token does not match the example gateway's")
	}
	// The agent trusts the certificate the gateway just wrote.
	a.GatewayCAFile = filepath.Join(g.DataDir, "tunnel-cert.pem")
	ac, err := agentConfig(a, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if ac.TLS.RootCAs == nil || ac.Connections != 2 || len(ac.Allow) != 1 {
		t.Fatalf("agent example: %+v", ac)
	}
}

// TestUnsupportedSettingsRefused: settings whose features this build lacks
// stop start-up instead of being ignored.
func TestUnsupportedSettingsRefused(t *testing.T) {
	g, err := config.ParseGateway("gateway.yaml", []byte(`
oidc:
  providers: [{name: corp, issuer: "https://login.example.com/", client_id: x, client_secret_env: S}]
apps:
  - {name: a, hosts: [a.test], backend: "http://127.0.0.1:1", group: g, preauth: oidc}
`))
	if err != nil {
		t.Fatal(err)
	}
	g.DataDir = t.TempDir()
	if _, err := gatewayConfig(g, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "preauth") {
		t.Fatalf("preauth oidc accepted: %v", err)
	}
	a, err := config.ParseAgent("agent.yaml", []byte("gateway: 127.0.0.1:8443\ntoken: t\nproxy: http://proxy.corp:3128\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentConfig(a, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "proxy") {
		t.Fatalf("proxy accepted: %v", err)
	}
}
