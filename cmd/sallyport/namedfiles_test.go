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
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
)

// TestFailedStartLeavesNoStore: a gateway whose config names a file that
// cannot be read (admin.token_file, a TLS file) stops before it creates
// its store: a start from the wrong working directory, where relative
// paths miss, must leave no sallyport.db there for the next start to take
// as its own. The store used to be created first, then the start failed on
// the token file.
func TestFailedStartLeavesNoStore(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"token file", "admin:\n  token_file: admin-token-missing\n", "admin.token_file: open admin-token-missing"},
		{"tunnel tls", "tunnel:\n  tls:\n    cert_file: tunnel-missing.pem\n    key_file: tunnel-missing-key.pem\n", "tunnel.tls: open tunnel-missing.pem"},
		{"public tls", "public:\n  tls:\n    cert_file: public-missing.pem\n    key_file: public-missing-key.pem\n", "public.tls: open public-missing.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
			dir := t.TempDir()
			dataDir := filepath.Join(dir, "data")
			path := filepath.Join(dir, "gateway.yaml")
			cfg := "data_dir: " + dataDir + "\npublic:\n  addr: 127.0.0.1:0\ntunnel:\n  addr: 127.0.0.1:0\nadmin:\n  addr: 127.0.0.1:0\n"
			if err := os.WriteFile(path, []byte(mergeYAML(cfg, tc.yaml)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := runCLI(t, "gateway", "--config", path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v; want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dataDir, store.FileName)); err == nil {
				t.Errorf("the failed start left %s behind", filepath.Join(dataDir, store.FileName))
			}
		})
	}
}

// mergeYAML puts the keys of extra (one top-level section) into base,
// replacing base's section of the same name.
func mergeYAML(base, extra string) string {
	section, _, _ := strings.Cut(extra, "\n")
	var out []string
	lines := strings.Split(strings.TrimSuffix(base, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] == section {
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "  ") {
				i++
			}
			continue
		}
		out = append(out, lines[i])
	}
	return strings.Join(out, "\n") + "\n" + extra
}

// TestNewStoreDecidedByCA: a sallyport.db under a relative data_dir that
// holds no connector CA yet (a start that failed once it had created the
// file) draws the warning about a new store when the gateway is about to
// create the CA; once the CA is there, no warning. The warning used to be
// decided by whether the file existed, so the start that created the CA
// in the wrong directory said so only at info.
func TestNewStoreDecidedByCA(t *testing.T) {
	ctx := context.Background()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(t.TempDir(), "gw")
	rel, err := filepath.Rel(wd, abs)
	if err != nil {
		t.Fatal("the temporary directory has no path relative to the working directory:", err)
	}
	st, err := store.Open(ctx, abs) // the file exists from now on, without a CA
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := &config.Gateway{DataDir: rel}
	core, logs := observer.New(zapcore.InfoLevel)
	noteDataDir(cfg, zap.New(core))(hasCA(ctx, st))
	if n := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("new store in data_dir, a relative path").Len(); n != 1 {
		t.Errorf("warnings for a store file without a CA under a relative data_dir = %d, want 1; logs: %v", n, logs.All())
	}

	// The gateway creates the CA (and its tunnel certificate); the next
	// start is an ordinary one.
	if _, err := gateway.New(gateway.Config{TunnelTLS: &tls.Config{}, Store: st}); err != nil {
		t.Fatal(err)
	}
	writeTunnelCert(t, abs)
	core, logs = observer.New(zapcore.InfoLevel)
	noteDataDir(cfg, zap.New(core))(hasCA(ctx, st))
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 0 || logs.FilterMessageSnippet("data_dir is a relative path").Len() != 1 {
		t.Errorf("logs for a store with its CA = %v, want one info line naming the relative data_dir", logs.All())
	}
}

// TestSelfSignedTunnelCertOnSharedStore: a gateway on a PostgreSQL store
// (shared by replicas) without tunnel.tls warns that its self-signed
// tunnel certificate is its own, so agents that pin or trust it fail at
// the other replicas; on SQLite it stays an info line. It used to be an
// info line on both.
func TestSelfSignedTunnelCertOnSharedStore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store config.Store
		warn  bool
	}{
		{"postgres", config.Store{Postgres: "postgres://gw@db.internal/gw"}, true},
		{"sqlite", config.Store{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			cfg := &config.Gateway{DataDir: t.TempDir(), Store: tc.store}
			if _, err := tunnelCertificate(cfg, zap.New(core)); err != nil {
				t.Fatal(err)
			}
			warns := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("tunnel.tls is unset").All()
			if got := len(warns) == 1; got != tc.warn {
				t.Fatalf("warned about a self-signed tunnel certificate = %v, want %v; logs: %v", got, tc.warn, logs.All())
			}
			if tc.warn {
				for _, want := range []string{"store.postgres is set, so gateway replicas share the store",
					"differs from the other replicas'", "give every replica the same tunnel.tls"} {
					if !strings.Contains(warns[0].Message, want) {
						t.Errorf("warning %q, want it to contain %q", warns[0].Message, want)
					}
				}
				if warns[0].ContextMap()["fingerprint"] == nil {
					t.Errorf("warning fields %v, want the fingerprint", warns[0].ContextMap())
				}
			}
		})
	}
}
