//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel"
)

// runCLI runs the sallyport command in process and returns its stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(append(args, "--log-level", "error"))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// tunnelFingerprint reads the fingerprint of the certificate served at addr.
func tunnelFingerprint(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the certificate
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return selfsigned.Fingerprint(c.ConnectionState().PeerCertificates[0])
}

// TestTrustCommands drives the admin and enrollment commands as an
// operator would: create a token, enroll with a pinned fingerprint, run the
// agent from its data_dir alone, list and revoke connectors, rotate the CA
// while the gateway runs.
func TestTrustCommands(t *testing.T) {
	const adminTok = "cli-admin-Secret-91b2"
	dataDir := t.TempDir()
	st, err := store.Open(context.Background(), dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rig := testrig.New(t, testrig.Options{Gateway: func(c *gateway.Config) {
		c.Store, c.AdminAddr, c.AdminToken = st, "127.0.0.1:0", adminTok
	}})
	admin := []string{"--admin-url", rig.AdminURL()}
	tokFile := filepath.Join(t.TempDir(), "admin-token")
	os.WriteFile(tokFile, []byte(adminTok+"\n"), 0o600)

	t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
	if _, err := runCLI(t, append([]string{"token", "list"}, admin...)...); err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Fatalf("token list without a token: %v", err)
	}
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "wrong")
	if _, err := runCLI(t, append([]string{"token", "list"}, admin...)...); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("token list with a wrong token: %v", err)
	}
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
	admin = append(admin, "--admin-token-file", tokFile)

	out, err := runCLI(t, append([]string{"token", "create", "--group", testrig.Group, "--ttl", "1h", "--uses", "1"}, admin...)...)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out)
	if !strings.HasPrefix(token, "spt_") || strings.Count(out, "\n") != 1 {
		t.Fatalf("token create printed %q; want only the token", out)
	}
	out, err = runCLI(t, append([]string{"token", "list"}, admin...)...)
	if err != nil || strings.Contains(out, token) || !strings.Contains(out, "config") || !strings.Contains(out, "api") {
		t.Fatalf("token list = %q, %v", out, err)
	}

	agentDir := filepath.Join(t.TempDir(), "agent")
	fp := tunnelFingerprint(t, rig.Tunnel)
	bad := "sha256:" + strings.Repeat("0", 64)
	if _, err := runCLI(t, "agent", "enroll", "--gateway", rig.Tunnel, "--token", token, "--data-dir", agentDir, "--gateway-fingerprint", bad); err == nil ||
		!strings.Contains(err.Error(), "not the pinned") {
		t.Fatalf("enroll with a wrong pin: %v", err)
	}
	out, err = runCLI(t, "agent", "enroll", "--gateway", rig.Tunnel, "--token", token, "--data-dir", agentDir, "--gateway-fingerprint", fp)
	if err != nil || !strings.HasPrefix(out, "enrolled: connector ") {
		t.Fatalf("enroll = %q, %v", out, err)
	}
	if _, err := runCLI(t, "agent", "enroll", "--gateway", rig.Tunnel, "--token", token, "--data-dir", agentDir); err == nil ||
		!strings.Contains(err.Error(), "already holds") {
		t.Fatalf("second enroll into the same data_dir: %v", err)
	}

	// The agent runs from its data_dir alone: no token, no gateway_ca_file
	// (the pin saved by enroll is used).
	acfg := &config.Agent{Gateway: rig.Tunnel, DataDir: agentDir, Allow: []string{"127.0.0.1:1"}}
	if err := acfg.Validate(); err != nil {
		t.Fatal(err)
	}
	settings, err := agentConfig(acfg, rig.Log)
	if err != nil {
		t.Fatal(err)
	}
	a := rig.StartAgent(func(c *agent.Config) { c.Token, c.DataDir, c.TLS = "", settings.DataDir, settings.TLS })
	rig.WaitSessions(testrig.Group, 1)

	out, err = runCLI(t, append([]string{"connector", "list", "--json"}, admin...)...)
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("connector list --json = %q, %v", out, err)
	}
	for _, k := range []string{"id", "name", "group", "version", "sessions", "cert_expires", "platform", "remote_addr", "connected_since"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("connector list --json: no %q in %v", k, list[0])
		}
	}
	id, _ := list[0]["id"].(string)
	if list[0]["sessions"] != float64(1) || id != a.A.Certificate().ConnectorID {
		t.Fatalf("connector list --json = %v", list[0])
	}
	out, err = runCLI(t, append([]string{"connector", "list"}, admin...)...)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "CERT EXPIRES") {
		t.Fatalf("connector list = %q, %v", out, err)
	}

	// Rotating the CA while the gateway runs: new enrollments get the new
	// CA, and the running agent's certificate stays valid.
	out, err = runCLI(t, "gateway", "ca", "rotate", "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, "2 CA(s) in the trust bundle") {
		t.Fatalf("ca rotate = %q, %v", out, err)
	}
	creds, err := agent.Enroll(context.Background(), agent.EnrollConfig{
		Gateway: rig.Tunnel, TLS: &tls.Config{RootCAs: rig.Roots, ServerName: "localhost"}, Token: testrig.Token,
	})
	if err != nil || bytes.Count(creds.CABundle, []byte("BEGIN CERTIFICATE")) != 2 ||
		creds.Cert.Leaf.Issuer.String() == a.A.Certificate().Cert.Leaf.Issuer.String() {
		t.Fatalf("enroll after rotation: %v (issuer %s)", err, creds.Cert.Leaf.Issuer)
	}
	rig.G.Registry().CloseConnector(id, errors.New("test: reconnect"))
	rig.WaitSessions(testrig.Group, 1)

	out, err = runCLI(t, append([]string{"connector", "revoke", id}, admin...)...)
	if err != nil || !strings.Contains(out, "revoked connector "+id) {
		t.Fatalf("revoke = %q, %v", out, err)
	}
	if err := a.Exited(t); !errors.Is(err, tunnel.ErrRevoked) {
		t.Fatalf("agent after revoke: %v", err)
	}
	if _, err := runCLI(t, append([]string{"connector", "revoke", "nope"}, admin...)...); err == nil || !strings.Contains(err.Error(), "no connector") {
		t.Fatalf("revoke unknown: %v", err)
	}
	out, err = runCLI(t, "gateway", "ca", "rotate", "--retire-previous", "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, "removed 1 previous") {
		t.Fatalf("ca rotate --retire-previous = %q, %v", out, err)
	}
	if _, err := runCLI(t, "gateway", "ca", "rotate"); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("ca rotate without a data_dir: %v", err)
	}
	if _, err := runCLI(t, "agent", "enroll", "--gateway", rig.Tunnel); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("enroll without a token: %v", err)
	}
}
