//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/store"
)

const preauthYAML = `
oidc:
  providers: [{name: corp, issuer: "https://login.example.com/", client_id: x, client_secret_env: SALLYPORT_TEST_SECRET}]
  cookie_domain: example.com
apps:
  - {name: a, hosts: [a.example.com], backend: "http://127.0.0.1:1", group: g, preauth: oidc,
     policy: {domains: [example.com]}, public_paths: [/health]}
  - {name: b, hosts: [b.example.com], backend: "http://127.0.0.1:1", group: g}
`

func TestPreauthConfig(t *testing.T) {
	g, err := config.ParseGateway("gateway.yaml", []byte(preauthYAML))
	if err != nil {
		t.Fatal(err)
	}
	g.DataDir = filepath.Join(t.TempDir(), "data")
	if _, err := gatewayConfig(g, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "SALLYPORT_TEST_SECRET") {
		t.Fatalf("missing secret: %v", err)
	}
	t.Setenv("SALLYPORT_TEST_SECRET", "s3cret")
	out, err := gatewayConfig(g, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if out.Preauth == nil || out.Routes[0].Preauth == nil || out.Routes[0].Preauth.Provider != "corp" ||
		out.Routes[0].Preauth.Domains[0] != "example.com" || out.Routes[1].Preauth != nil {
		t.Fatalf("routes: %+v", out.Routes)
	}
	for _, f := range []string{sessionKeyFile, assertionKeysFile} {
		st, err := os.Stat(filepath.Join(g.DataDir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, st, err)
		}
	}
	key1, _ := os.ReadFile(filepath.Join(g.DataDir, sessionKeyFile))
	keys1, _ := os.ReadFile(filepath.Join(g.DataDir, assertionKeysFile))
	// A restart keeps the keys: sessions and published keys survive.
	if _, err := gatewayConfig(g, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	key2, _ := os.ReadFile(filepath.Join(g.DataDir, sessionKeyFile))
	keys2, _ := os.ReadFile(filepath.Join(g.DataDir, assertionKeysFile))
	if string(key1) != string(key2) || string(keys1) != string(keys2) {
		t.Error("keys changed across a restart")
	}
	// The gateway accepts the result.
	out.TunnelTLS = testTLS(t)
	st, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out.Store = st
	if _, err := gateway.New(out); err != nil {
		t.Fatal(err)
	}
	// A public path written in a form that would be normalised is refused.
	out.Routes[0].Preauth.PublicPaths = []string{"/health/../admin"}
	if _, err := gateway.New(out); err == nil || !strings.Contains(err.Error(), "/health/../admin") {
		t.Fatalf("unnormalised public path: %v", err)
	}
}

func TestPreauthSecretFile(t *testing.T) {
	dir := t.TempDir()
	g, err := config.ParseGateway("gateway.yaml", []byte(strings.Replace(preauthYAML, "client_secret_env: SALLYPORT_TEST_SECRET",
		"client_secret_file: "+filepath.Join(dir, "secret"), 1)))
	if err != nil {
		t.Fatal(err)
	}
	g.DataDir = dir
	if _, err := gatewayConfig(g, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "client_secret_file") {
		t.Fatalf("missing file: %v", err)
	}
	writeFile(t, filepath.Join(dir, "secret"), "  \n")
	if _, err := gatewayConfig(g, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
	writeFile(t, filepath.Join(dir, "secret"), "s3cret\n")
	if _, err := gatewayConfig(g, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
}

// testTLS is a self-signed tunnel TLS config.
func testTLS(t *testing.T) *tls.Config {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}
