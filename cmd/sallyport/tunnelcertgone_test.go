//go:build !agentonly

package main

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/selfsigned"
)

// writeTunnelCert puts a self-signed tunnel certificate into dir, as a
// gateway's first start does.
func writeTunnelCert(t *testing.T, dir string) {
	t.Helper()
	if _, _, _, err := selfsigned.LoadOrCreate(dir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
}

// TestNoteDataDirStoreWithoutTunnelCert: a data_dir whose store has its
// connector CA but no tunnel certificate (sallyport.db restored alone from
// the README's sqlite3 .backup) draws a warning that names the files to
// restore: the gateway creates a new self-signed certificate, which pinned
// agents refuse. It used to be an info line like any first start. No
// warning with the certificate there, for a store without a CA yet (a
// first start), or with tunnel.tls set.
func TestNoteDataDirStoreWithoutTunnelCert(t *testing.T) {
	dir := t.TempDir()
	warned := func(cfg *config.Gateway, hasCA bool) int {
		t.Helper()
		core, logs := observer.New(zapcore.InfoLevel)
		noteDataDir(cfg, zap.New(core))(hasCA)
		return logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("restore tunnel-cert.pem and tunnel-key.pem").Len()
	}
	if n := warned(&config.Gateway{DataDir: dir}, true); n != 1 {
		t.Errorf("store with a CA, no tunnel certificate: %d warnings, want 1", n)
	}
	if n := warned(&config.Gateway{DataDir: dir}, false); n != 0 {
		t.Errorf("new store (first start): %d warnings, want 0", n)
	}
	withTLS := &config.Gateway{DataDir: dir}
	withTLS.Tunnel.TLS.CertFile, withTLS.Tunnel.TLS.KeyFile = "/etc/cert.pem", "/etc/key.pem"
	if n := warned(withTLS, true); n != 0 {
		t.Errorf("tunnel.tls set: %d warnings, want 0", n)
	}
	writeTunnelCert(t, dir)
	if n := warned(&config.Gateway{DataDir: dir}, true); n != 0 {
		t.Errorf("tunnel certificate in data_dir: %d warnings, want 0", n)
	}
	if err := os.Remove(filepath.Join(dir, selfsigned.CertFile)); err != nil {
		t.Fatal(err)
	}
	if n := warned(&config.Gateway{DataDir: dir}, true); n != 0 {
		t.Errorf("only the key left (the start refuses it with its own error): %d warnings, want 0", n)
	}
}
