//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
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
	var list []json.RawMessage
	out, err := runCLI(t, append([]string{"connector", "list", "--json"}, admin...)...)
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Fatalf("connectors: %q, %v", out, err)
	}
}
