//go:build !agentonly

package main

import (
	"fmt"
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
	a, err := config.ParseAgent("agent.yaml", []byte("gateway: 127.0.0.1:8443\ntoken: t\nproxy: http://proxy.corp:3128\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The proxy and the default transport reach the agent.
	out, err := agentConfig(a, zap.NewNop())
	if err != nil || out.Proxy != "http://proxy.corp:3128" || out.Transport != "auto" {
		t.Fatalf("agentConfig: proxy %q, transport %q, %v", out.Proxy, out.Transport, err)
	}
}

// TestCertificateFileErrors: a missing or unusable certificate file stops
// start-up with an error naming the config file, line and setting, and the
// file.
func TestCertificateFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not-a-cert.pem")
	writeFile(t, notPEM, "hello")
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct{ name, yaml, want string }{
		{"public tls missing", "public: {tls: {cert_file: " + missing + ", key_file: " + missing + "}}", "gateway.yaml:1: public.tls: "},
		{"tunnel tls not PEM", "tunnel: {tls: {cert_file: " + notPEM + ", key_file: " + notPEM + "}}", "gateway.yaml:1: tunnel.tls: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := config.ParseGateway("gateway.yaml", []byte(tc.yaml+"\ndata_dir: "+dir+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := gatewayConfig(g, zap.NewNop()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, file, want string }{
		{"ca file missing", missing, "agent.yaml:3: gateway_ca_file: "},
		{"ca file not PEM", notPEM, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := config.ParseAgent("agent.yaml", []byte("gateway: 127.0.0.1:8443\ntoken: t\ngateway_ca_file: "+tc.file+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := agentConfig(a, zap.NewNop()); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("error %v, want one naming %q and %s", err, tc.want, tc.file)
			}
		})
	}
}

// TestBackendTLSCAFileErrors: a backend_tls ca_file that is missing or not
// PEM stops start-up with the config file, line and setting, like
// gateway_ca_file (it was "backend tls profile 1: read CA file: …").
func TestBackendTLSCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not-a-cert.pem")
	writeFile(t, notPEM, "hello")
	for _, tc := range []struct{ name, file, want string }{
		{"missing", "no-such-ca.pem", "agent.yaml:4: backend_tls[0].ca_file: open no-such-ca.pem: no such file or directory"},
		{"not PEM", notPEM, "agent.yaml:4: backend_tls[0].ca_file: " + notPEM + ": no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := config.ParseAgent("agent.yaml", []byte("gateway: 127.0.0.1:8443\ntoken: t\nbackend_tls:\n  - {hosts: [\"db:443\"], ca_file: "+tc.file+"}\n"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := agentConfig(a, zap.NewNop()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

// TestTrustedProxiesReachTheGateway: public.trusted_proxies becomes the
// gateway's TrustedProxies.
func TestTrustedProxiesReachTheGateway(t *testing.T) {
	g, err := config.ParseGateway("gateway.yaml", []byte("public: {trusted_proxies: [10.0.0.0/8, 192.0.2.7]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	g.DataDir = t.TempDir()
	out, err := gatewayConfig(g, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(out.TrustedProxies); got != "[10.0.0.0/8 192.0.2.7/32]" {
		t.Errorf("TrustedProxies %s", got)
	}
}
