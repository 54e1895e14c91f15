//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestEnrollConfigUsesSavedTrust: an agent enrolled at a gateway with a
// self-signed tunnel certificate (pinned, or its certificate as
// --gateway-ca) whose certificate expired enrolls again with `agent
// enroll --config agent.yaml --token-file FILE` and no trust flag: enroll
// trusts the gateway as the agent of that config does, by what the
// earlier enrollment saved in data_dir, and keeps it. The command the
// agent gives when it stops works too. A trust flag given wins over the
// saved trust, and a saved trust the gateway no longer matches is named,
// with what to do. Before, enroll --config without a flag used the system
// roots: "the gateway was reached, but its tunnel certificate is not
// trusted".
func TestEnrollConfigUsesSavedTrust(t *testing.T) {
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// While behind, the gateway's clock is 60 days behind: it issues
	// certificates that expired 30 days ago.
	var behind atomic.Bool
	rig := testrig.New(t, testrig.Options{Gateway: func(c *gateway.Config) {
		c.Store = st
		c.Now = func() time.Time {
			if behind.Load() {
				return time.Now().Add(-60 * 24 * time.Hour)
			}
			return time.Now()
		}
	}})
	fp := tunnelFingerprint(t, rig.Tunnel)
	_, port, _ := net.SplitHostPort(rig.Tunnel)
	tunnelCert := filepath.Join(t.TempDir(), "tunnel-cert.pem")
	c, err := tls.Dial("tcp", rig.Tunnel, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the certificate
	if err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(tunnelCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.ConnectionState().PeerCertificates[0].Raw}), 0o644)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(testrig.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, host, saved string
		trust             []string // the first enrollment's trust flag
	}{
		{"pinned", "127.0.0.1", agent.GatewayPinFile, []string{"--gateway-fingerprint", fp}},
		// The tunnel certificate names localhost.
		{"gateway-ca.pem", "localhost", agent.GatewayCAFile, []string{"--gateway-ca", tunnelCert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "agent")
			cfgFile := filepath.Join(t.TempDir(), "agent.yaml")
			yaml := fmt.Sprintf("gateway: %s:%s\ndata_dir: %s\nallow: [\"127.0.0.1:1\"]\n", tc.host, port, dir)
			if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			enroll := func(args ...string) (string, error) {
				return runCLI(t, append([]string{"agent", "enroll", "--config", cfgFile, "--token-file", tokFile}, args...)...)
			}
			// expire enrolls dir with a certificate that has expired.
			expire := func(args ...string) {
				t.Helper()
				behind.Store(true)
				defer behind.Store(false)
				for _, f := range []string{agent.CertFile, agent.KeyFile} {
					if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
						t.Fatal(err)
					}
				}
				if _, err := enroll(args...); err != nil {
					t.Fatalf("enroll at the gateway in the past: %v", err)
				}
				if c, err := agent.LoadCredentials(dir); err != nil || time.Now().Before(c.Expires()) {
					t.Fatalf("credentials from the gateway in the past: %v", err)
				}
			}
			expire(tc.trust...)

			// The command without a trust flag.
			out, err := enroll()
			if err != nil || !strings.HasPrefix(out, "enrolled: ") {
				t.Fatalf("agent enroll --config --token-file over the expired certificate, the trust saved in %s: %q, %v", tc.saved, out, err)
			}
			if _, err := os.Stat(filepath.Join(dir, tc.saved)); err != nil {
				t.Fatalf("enrolling with the saved trust removed it: %v", err)
			}
			ac, err := config.LoadAgent(cfgFile)
			if err != nil {
				t.Fatal(err)
			}
			settings, err := agentConfig(ac, rig.Log)
			if err != nil {
				t.Fatal(err)
			}
			c, err := tls.Dial("tcp", tc.host+":"+port, settings.TLS)
			if err != nil {
				t.Fatalf("the agent of the config does not trust the gateway after enrolling again: %v", err)
			}
			c.Close()

			// The command the agent gives when it stops with an expired
			// certificate.
			expire()
			settings.ConfigFile = cfgFile
			a, err := agent.New(settings)
			if err != nil {
				t.Fatal(err)
			}
			err = a.Run(context.Background())
			if !errors.Is(err, agent.ErrCertificateExpired) {
				t.Fatalf("agent with an expired certificate: %v", err)
			}
			_, hint, ok := strings.Cut(err.Error(), "then run `")
			hint, _, _ = strings.Cut(hint, "`")
			args := strings.Fields(hint)
			if !ok || len(args) < 3 || args[0] != "sallyport" || strings.ContainsAny(hint, `'"`) {
				t.Fatalf("no command to enroll again in %q", err)
			}
			t.Logf("the agent's command: %s", hint)
			for i, a := range args {
				if a == "FILE" {
					args[i] = tokFile
				}
			}
			if out, err := runCLI(t, args[1:]...); err != nil || !strings.HasPrefix(out, "enrolled: ") {
				t.Fatalf("the agent's command `%s`: %q, %v", hint, out, err)
			}

			// A flag wins over the saved trust.
			expire()
			wrongPin := "sha256:" + strings.Repeat("0", 64)
			if _, err := enroll("--gateway-fingerprint", wrongPin); err == nil ||
				!strings.Contains(err.Error(), "not the pinned "+wrongPin) || !strings.Contains(err.Error(), "check --gateway-fingerprint") {
				t.Fatalf("enroll --config with a wrong --gateway-fingerprint over the saved trust: %v", err)
			}
			// A saved trust that no longer matches is named.
			saved := filepath.Join(dir, tc.saved)
			if tc.saved == agent.GatewayCAFile {
				os.Remove(saved)
				saved = filepath.Join(dir, agent.GatewayPinFile)
			}
			if err := os.WriteFile(saved, []byte(wrongPin+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = enroll()
			t.Logf("%v", err)
			if err == nil || !strings.Contains(err.Error(), "not the pinned "+wrongPin) ||
				!strings.Contains(err.Error(), "saved in "+saved) || !strings.Contains(err.Error(), "remove "+saved) {
				t.Fatalf("enroll --config with a saved pin the gateway does not match: %v", err)
			}
			// A saved trust that cannot be used is named too.
			if err := os.WriteFile(saved, []byte("sha256:zz\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err = enroll(); err == nil || !strings.Contains(err.Error(), "saved in "+saved+": fingerprint") ||
				!strings.Contains(err.Error(), "or remove it") {
				t.Fatalf("enroll --config with a saved pin that is no fingerprint: %v", err)
			}
		})
	}
}
