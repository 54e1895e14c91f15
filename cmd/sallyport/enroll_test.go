//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
)

// enrollRig is a gateway with a store and an admin API, for single-use
// tokens; admin are the flags that reach its admin API.
func enrollRig(t *testing.T) (rig *testrig.Rig, admin []string) {
	t.Helper()
	const adminTok = "enroll-admin-Secret-5c1e"
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rig = testrig.New(t, testrig.Options{Gateway: func(c *gateway.Config) {
		c.Store, c.AdminAddr, c.AdminToken = st, "127.0.0.1:0", adminTok
	}})
	tokFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokFile, []byte(adminTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
	return rig, []string{"--admin-url", rig.AdminURL(), "--admin-token-file", tokFile}
}

func singleUseToken(t *testing.T, admin []string) string {
	t.Helper()
	out, err := runCLI(t, append([]string{"token", "create", "--group", testrig.Group, "--uses", "1"}, admin...)...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// TestEnrollUnusableDataDir: `agent enroll`, and `agent` with a token,
// refuse a data dir that cannot hold the credentials before they send the
// token, so the single-use token is still unused and no connector exists.
// They used to find out only when saving, after the gateway had spent it.
func TestEnrollUnusableDataDir(t *testing.T) {
	rig, admin := enrollRig(t)
	token := singleUseToken(t, admin)
	fp := tunnelFingerprint(t, rig.Tunnel)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "a-file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A symbolic link to a directory that is not there (a volume not
	// mounted): the agent finds no certificate in it, and cannot create it.
	link := filepath.Join(tmp, "link")
	if err := os.Symlink(filepath.Join(tmp, "not-mounted", "agent"), link); err != nil {
		t.Fatal(err)
	}
	bad := []string{file, filepath.Join(file, "sub"), link}
	if os.Geteuid() != 0 { // root writes into a read-only directory
		ro := filepath.Join(tmp, "read-only")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		bad = append(bad, ro)
	}
	for _, dir := range bad {
		_, err := runCLI(t, "agent", "enroll", "--gateway", rig.Tunnel, "--token", token, "--data-dir", dir, "--gateway-fingerprint", fp)
		if err == nil || !strings.Contains(err.Error(), "data dir "+dir+" cannot hold") || !strings.Contains(err.Error(), "still unused") {
			t.Errorf("agent enroll --data-dir %s: %v", dir, err)
		}
		tc, err := agent.PinnedTLS(fp)
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(agent.Config{Gateway: rig.Tunnel, TLS: tc, Token: token, DataDir: dir, Allow: []string{"127.0.0.1:1"}, Log: rig.Log})
		if err != nil {
			t.Fatal(err)
		}
		// Run stops at once: retrying cannot make the directory writable.
		// (A data_dir under a file already fails to load credentials.)
		err = a.Run(context.Background())
		if dir == link && !errors.As(err, new(*agent.DataDirError)) || err == nil {
			t.Errorf("agent with data_dir %s: %v", dir, err)
		}
	}

	out, err := runCLI(t, append([]string{"connector", "list", "--json"}, admin...)...)
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("connectors after the refused enrollments: %q, %v", out, err)
	}
	// The single-use token still works.
	good := filepath.Join(tmp, "good")
	if out, err := runCLI(t, "agent", "enroll", "--gateway", rig.Tunnel, "--token", token, "--data-dir", good, "--gateway-fingerprint", fp); err != nil ||
		!strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll with the token afterwards = %q, %v", out, err)
	}
	if entries, _ := os.ReadDir(good); len(entries) != 4 { // key, certificate, CA bundle, pin: no leftover check file
		t.Errorf("data dir after enroll holds %v", entries)
	}
}

// TestEnrollMessages: `agent enroll` says what happened and what to do: a
// gateway that was reached but not trusted is not "cannot reach"; a wrong
// pin names the fingerprint the gateway presented; a refused token points
// to `sallyport token create`.
func TestEnrollMessages(t *testing.T) {
	rig, admin := enrollRig(t)
	token := singleUseToken(t, admin)
	fp := tunnelFingerprint(t, rig.Tunnel)
	dir := func() string { return filepath.Join(t.TempDir(), "agent") }
	enroll := func(args ...string) error {
		_, err := runCLI(t, append([]string{"agent", "enroll", "--gateway", rig.Tunnel, "--data-dir", dir()}, args...)...)
		return err
	}
	wrongPin := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"not trusted", []string{"--token", token},
			[]string{"was reached", "not trusted", "unknown authority", fp, "--gateway-fingerprint", "--gateway-ca", "logs at start-up"}},
		{"wrong pin", []string{"--token", token, "--gateway-fingerprint", wrongPin},
			[]string{"presented a certificate with fingerprint " + fp + ", not the pinned " + wrongPin, "check --gateway-fingerprint", "logs at start-up"}},
		{"unknown token", []string{"--token", "spt_doesnotexist", "--gateway-fingerprint", fp},
			[]string{"enrollment token unknown", "sallyport token create"}},
	} {
		err := enroll(tc.args...)
		if err == nil {
			t.Errorf("%s: enrolled", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant %q in it", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("%s: %v\nthe gateway was reached", tc.name, err)
		}
	}
	if err := enroll("--token", token, "--gateway-fingerprint", fp); err != nil {
		t.Fatal(err)
	}
	if err := enroll("--token", token, "--gateway-fingerprint", fp); err == nil ||
		!strings.Contains(err.Error(), "already used") || !strings.Contains(err.Error(), "sallyport token create") {
		t.Fatalf("enroll with a used token: %v", err)
	}
	// Nothing listens on port 1: say where to look.
	if _, err := runCLI(t, "agent", "enroll", "--gateway", "127.0.0.1:1", "--data-dir", dir(), "--token", token, "--gateway-fingerprint", fp); err == nil ||
		!strings.Contains(err.Error(), "cannot reach the gateway") || !strings.Contains(err.Error(), "check --gateway") ||
		!strings.Contains(err.Error(), "that the gateway runs") {
		t.Fatalf("enroll at a closed port: %v", err)
	}
	var list []json.RawMessage
	out, err := runCLI(t, append([]string{"connector", "list", "--json"}, admin...)...)
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Fatalf("connectors: %q, %v", out, err)
	}
}

// TestEnrollThroughProxy: `agent enroll` reaches the gateway through the
// outbound proxy by the agent's own rules: the agent config's proxy
// (--config), --proxy, else HTTPS_PROXY unless NO_PROXY names the gateway.
// A proxy that refuses the credentials gets a message that says so and
// hides the password, and the token stays unused. enroll used to ignore
// the config's proxy, so on a network where only the proxy reaches the
// gateway it could not enroll.
func TestEnrollThroughProxy(t *testing.T) {
	rig, admin := enrollRig(t)
	fp := tunnelFingerprint(t, rig.Tunnel)
	proxy := testrig.StartConnectProxy(t, testrig.ProxyOptions{User: "agent", Pass: "pr0xy-Secret", Upstream: rig.Tunnel})
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("NO_PROXY", "")
	writeConfig := func(proxyURL string) string {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		yaml := fmt.Sprintf("gateway: %s\ndata_dir: %s\nproxy: %s\nname: probe-agent\nallow: [\"127.0.0.1:1\"]\n",
			rig.Tunnel, filepath.Join(t.TempDir(), "agent"), proxyURL)
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	enroll := func(args ...string) (string, error) {
		return runCLI(t, append([]string{"agent", "enroll", "--gateway-fingerprint", fp}, args...)...)
	}
	carried := func(want ...string) {
		t.Helper()
		if got := proxy.Carried(); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("the proxy carried CONNECTs to %q, want %q", got, want)
		}
	}

	// A proxy that does not answer.
	closed := "http://agent:pr0xy-Secret@127.0.0.1:1"
	_, err := enroll("--gateway", rig.Tunnel, "--token", "spt_unused", "--data-dir", filepath.Join(t.TempDir(), "agent"), "--proxy", closed)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the gateway: connect to proxy http://agent:xxxxx@127.0.0.1:1") ||
		strings.Contains(err.Error(), "pr0xy-Secret") {
		t.Fatalf("enroll through a proxy that is not there: %v", err)
	}

	// A wrong password: 407, said as such, the token still unused.
	token := singleUseToken(t, admin)
	_, err = enroll("--config", writeConfig(proxy.URL("agent", "wr0ng-Secret")), "--token", token)
	if err == nil || !strings.Contains(err.Error(), "407 Proxy Authentication Required") ||
		!strings.Contains(err.Error(), "check the user and password") || strings.Contains(err.Error(), "wr0ng-Secret") ||
		!strings.Contains(err.Error(), "still unused") {
		t.Fatalf("enroll through a proxy refusing the password: %v", err)
	}
	carried()

	// The config's proxy.
	out, err := enroll("--config", writeConfig(proxy.URL("agent", "pr0xy-Secret")), "--token", token)
	if err != nil || !strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll --config with proxy: %q, %v", out, err)
	}
	carried(rig.Tunnel)

	// --proxy.
	out, err = enroll("--gateway", rig.Tunnel, "--token", singleUseToken(t, admin), "--data-dir", filepath.Join(t.TempDir(), "agent"),
		"--proxy", proxy.URL("agent", "pr0xy-Secret"))
	if err != nil || !strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll --proxy: %q, %v", out, err)
	}
	carried(rig.Tunnel, rig.Tunnel)

	// HTTPS_PROXY, for a gateway name only the proxy knows; NO_PROXY
	// naming it makes the connection direct (and so fail here).
	const gw = "gw.sallyport.test:8443"
	t.Setenv("HTTPS_PROXY", proxy.URL("agent", "pr0xy-Secret"))
	out, err = enroll("--gateway", gw, "--token", singleUseToken(t, admin), "--data-dir", filepath.Join(t.TempDir(), "agent"))
	if err != nil || !strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll with HTTPS_PROXY: %q, %v", out, err)
	}
	carried(rig.Tunnel, rig.Tunnel, gw)
	t.Setenv("NO_PROXY", "sallyport.test")
	if _, err := enroll("--gateway", gw, "--token", singleUseToken(t, admin), "--data-dir", filepath.Join(t.TempDir(), "agent")); err == nil {
		t.Fatal("enrolled directly at a gateway name that does not resolve")
	}
	carried(rig.Tunnel, rig.Tunnel, gw)

	var list []struct{ Name string }
	out, err = runCLI(t, append([]string{"connector", "list", "--json"}, admin...)...)
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 3 || list[0].Name != "probe-agent" {
		t.Fatalf("connectors: %q, %v", out, err)
	}
}

// TestTokenListCountsConfigTokens: `sallyport token list` shows how many
// agents enrolled with a token of the gateway config (tunnel.tokens), as it
// does for tokens from `token create`. It used to show 0 for them however
// many had enrolled.
func TestTokenListCountsConfigTokens(t *testing.T) {
	rig, admin := enrollRig(t)
	fp := tunnelFingerprint(t, rig.Tunnel)
	used := func() string {
		t.Helper()
		out, err := runCLI(t, append([]string{"token", "list"}, admin...)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[0] == "config-0" {
				return f[2]
			}
		}
		t.Fatalf("token list shows no config-0:\n%s", out)
		return ""
	}
	if got := used(); got != "0" {
		t.Fatalf("config-0 used %s times before any enrollment", got)
	}
	for range 2 {
		if _, err := runCLI(t, "agent", "enroll", "--gateway", rig.Tunnel, "--token", testrig.Token,
			"--data-dir", filepath.Join(t.TempDir(), "agent"), "--gateway-fingerprint", fp); err != nil {
			t.Fatal(err)
		}
	}
	if got := used(); got != "2" {
		t.Fatalf("config-0 used %s times after two enrollments, want 2", got)
	}
}

// TestEnrollInput: a token pasted with spaces or a line break around it,
// or read from --token-file (where a text editor ends it with a newline),
// enrolls: tokens never contain white space, and the gateway used to call
// such a token unknown. A gateway address without a port, or an IPv6
// address without brackets, is refused with how to write it; an IPv6
// gateway in brackets enrolls.
func TestEnrollInput(t *testing.T) {
	rig, admin := enrollRig(t)
	fp := tunnelFingerprint(t, rig.Tunnel)
	enroll := func(args ...string) (string, error) {
		return runCLI(t, append([]string{"agent", "enroll", "--data-dir", filepath.Join(t.TempDir(), "agent"), "--gateway-fingerprint", fp}, args...)...)
	}
	if out, err := enroll("--gateway", rig.Tunnel, "--token", " "+singleUseToken(t, admin)+"\n"); err != nil || !strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll with a token between white space: %q, %v", out, err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(singleUseToken(t, admin)+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := enroll("--gateway", rig.Tunnel, "--token-file", tokFile); err != nil || !strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll --token-file: %q, %v", out, err)
	}
	if err := os.WriteFile(tokFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := enroll("--gateway", rig.Tunnel, "--token-file", tokFile); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("enroll with an empty --token-file: %v", err)
	}
	if _, err := enroll("--gateway", rig.Tunnel, "--token", "x", "--token-file", tokFile); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("enroll with --token and --token-file: %v", err)
	}

	for addr, want := range map[string]string{
		"gw.example.com":              "has no port: give the gateway's tunnel address as host:port, e.g. gw.example.com:8443",
		"gw.example.com:":             "e.g. gw.example.com:8443",
		"[2001:db8::1]":               "has no port: give the gateway's tunnel address as host:port, e.g. [2001:db8::1]:8443",
		"2001:db8::1:8443":            "write an IPv6 address in brackets before the port",
		":8443":                       "has no host",
		"https://gw.example.com:8443": "without a scheme",
	} {
		if _, err := enroll("--gateway", addr, "--token", "spt_unused"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("enroll --gateway %s: %v\nwant %q in it", addr, err, want)
		}
	}

	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no IPv6 loopback (::1) on this machine, so enrolling at an IPv6 address is not tested: %v", err)
		}
		t.Skipf("no IPv6 loopback: %v (under CI this fails)", err)
	}
	ln.Close()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v6 := testrig.New(t, testrig.Options{Gateway: func(c *gateway.Config) { c.Store, c.TunnelAddr = st, "[::1]:0" }})
	if out, err := runCLI(t, "agent", "enroll", "--gateway", v6.Tunnel, "--token", testrig.Token, "--data-dir", filepath.Join(t.TempDir(), "agent"),
		"--gateway-fingerprint", tunnelFingerprint(t, v6.Tunnel)); err != nil || !strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll at %s: %q, %v", v6.Tunnel, out, err)
	}
}

// TestEnrollAgainReplacesGatewayTrust: enrolling a data dir again (after
// removing the certificate and key, as enroll says to) at a gateway with
// another tunnel certificate leaves the agent trusting that gateway the
// way this enrollment did. The trust file of the earlier enrollment used
// to stay, and gateway-ca.pem wins over gateway-fingerprint, so the agent
// refused the gateway it had just enrolled at.
func TestEnrollAgainReplacesGatewayTrust(t *testing.T) {
	old, _ := enrollRig(t)
	moved, _ := enrollRig(t) // the gateway reinstalled: a new self-signed certificate
	oldCA := filepath.Join(t.TempDir(), "old-tunnel-cert.pem")
	c, err := tls.Dial("tcp", old.Tunnel, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the certificate
	if err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(oldCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.ConnectionState().PeerCertificates[0].Raw}), 0o644)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "agent")
	// The old gateway's certificate names localhost, not 127.0.0.1.
	_, port, _ := net.SplitHostPort(old.Tunnel)
	if _, err := runCLI(t, "agent", "enroll", "--gateway", "localhost:"+port, "--token", testrig.Token, "--data-dir", dir, "--gateway-ca", oldCA); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{agent.CertFile, agent.KeyFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := runCLI(t, "agent", "enroll", "--gateway", moved.Tunnel, "--token", testrig.Token, "--data-dir", dir,
		"--gateway-fingerprint", tunnelFingerprint(t, moved.Tunnel)); err != nil {
		t.Fatal(err)
	}
	settings, err := agentConfig(&config.Agent{Gateway: moved.Tunnel, DataDir: dir}, moved.Log)
	if err != nil {
		t.Fatal(err)
	}
	c, err = tls.Dial("tcp", moved.Tunnel, settings.TLS)
	if err != nil {
		t.Fatalf("the agent does not trust the gateway it enrolled at: %v", err)
	}
	c.Close()
}

// TestEnrollConfigKeepsItsCAFile: `agent enroll --config` whose config's
// gateway_ca_file is the data directory's own copy of the gateway's
// certificate (saved by an earlier enrollment) keeps it. Enrolling again
// removed both trust files of the directory, so the agent could no longer
// start with that config.
func TestEnrollConfigKeepsItsCAFile(t *testing.T) {
	rig, _ := enrollRig(t)
	ca := filepath.Join(t.TempDir(), "tunnel-cert.pem")
	c, err := tls.Dial("tcp", rig.Tunnel, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the certificate
	if err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.ConnectionState().PeerCertificates[0].Raw}), 0o644)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "agent")
	_, port, _ := net.SplitHostPort(rig.Tunnel) // the certificate names localhost
	if _, err := runCLI(t, "agent", "enroll", "--gateway", "localhost:"+port, "--token", testrig.Token, "--data-dir", dir, "--gateway-ca", ca); err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(dir, agent.GatewayCAFile)
	for _, f := range []string{agent.CertFile, agent.KeyFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	yaml := fmt.Sprintf("gateway: localhost:%s\ndata_dir: %s\ngateway_ca_file: %s\nallow: [\"127.0.0.1:1\"]\n", port, dir, copied)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "agent", "enroll", "--config", cfg, "--token", testrig.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(copied); err != nil {
		t.Fatalf("enrolling again with the config removed the CA file it names: %v", err)
	}
}

// TestEnrollReplacesExpiredCertificate: an agent whose certificate expired
// stops and says to run `sallyport agent enroll … --data-dir DIR`; that
// command now replaces the expired certificate instead of refusing the
// directory because it holds one. A valid certificate is still kept.
func TestEnrollReplacesExpiredCertificate(t *testing.T) {
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// A gateway whose clock is 60 days behind issues certificates that
	// expired 30 days ago.
	past := testrig.New(t, testrig.Options{Gateway: func(c *gateway.Config) {
		c.Store, c.Now = st, func() time.Time { return time.Now().Add(-60 * 24 * time.Hour) }
	}})
	rig, _ := enrollRig(t)
	dir := filepath.Join(t.TempDir(), "agent")
	enroll := func(r *testrig.Rig) (string, error) {
		return runCLI(t, "agent", "enroll", "--gateway", r.Tunnel, "--token", testrig.Token, "--data-dir", dir,
			"--gateway-fingerprint", tunnelFingerprint(t, r.Tunnel))
	}
	if _, err := enroll(past); err != nil {
		t.Fatal(err)
	}
	expired, err := agent.LoadCredentials(dir)
	if err != nil || time.Now().Before(expired.Expires()) {
		t.Fatalf("credentials from the gateway in the past: %v, %v", expired, err)
	}
	out, err := enroll(rig)
	if err != nil || !strings.HasPrefix(out, "enrolled: ") {
		t.Fatalf("enroll over an expired certificate: %q, %v", out, err)
	}
	now, err := agent.LoadCredentials(dir)
	if err != nil || now.ConnectorID == expired.ConnectorID || !time.Now().Before(now.Expires()) {
		t.Fatalf("credentials after enrolling again: %+v, %v", now, err)
	}
	if _, err := enroll(rig); err == nil || !strings.Contains(err.Error(), "already holds an agent certificate (connector "+now.ConnectorID) {
		t.Fatalf("enroll over a valid certificate: %v", err)
	}
}
