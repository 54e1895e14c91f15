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
	"github.com/sallyport/sallyport/internal/store"
)

// TestNoteDataDirRelative: a relative data_dir (the default ./data/gateway
// is one) is taken from the working directory; a gateway started from
// another directory made a new store and connector CA without a word, and
// refused every agent enrolled before. A store under a relative data_dir
// that holds no connector CA yet now warns with the absolute path and the
// working directory; a relative data_dir whose store has its CA is named
// at info only (the default must not warn at every start).
func TestNoteDataDirRelative(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, filepath.Join(t.TempDir(), "gw"))
	if err != nil {
		t.Fatal("the temporary directory has no path relative to the working directory:", err)
	}
	abs := filepath.Join(wd, rel)
	core, logs := observer.New(zapcore.InfoLevel)
	opened := noteDataDir(&config.Gateway{DataDir: rel}, zap.New(core))
	if logs.Len() != 0 {
		t.Fatalf("logs before the store is created = %v, want none", logs.All())
	}
	opened(false)
	warns := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("new store in data_dir, a relative path").All()
	if len(warns) != 1 {
		t.Fatalf("warnings about a store created under a relative data_dir = %d, want 1; logs: %v", len(warns), logs.All())
	}
	f := warns[0].ContextMap()
	if f["data_dir"] != abs || f["working_directory"] != wd || f["file"] != filepath.Join(abs, store.FileName) {
		t.Errorf("warning fields = %v, want data_dir %q, working_directory %q, file %q", f, abs, wd, filepath.Join(abs, store.FileName))
	}

	// The store has its CA now: the next start says where it is, at info.
	core, logs = observer.New(zapcore.InfoLevel)
	writeTunnelCert(t, abs)
	noteDataDir(&config.Gateway{DataDir: rel}, zap.New(core))(true)
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 0 {
		t.Fatalf("%d warnings for a relative data_dir whose store exists, want none: %v", n, logs.All())
	}
	named := logs.FilterMessageSnippet("data_dir is a relative path").All()
	if len(named) != 1 || named[0].ContextMap()["data_dir"] != abs {
		t.Fatalf("info lines naming the relative data_dir = %v, want one with data_dir %q", named, abs)
	}
}

// TestNoteDataDirAbsolute: an absolute data_dir draws no warning, and a
// store with its CA is not announced as new.
func TestNoteDataDirAbsolute(t *testing.T) {
	dir := t.TempDir()
	writeTunnelCert(t, dir)
	core, logs := observer.New(zapcore.InfoLevel)
	noteDataDir(&config.Gateway{DataDir: dir}, zap.New(core))(true)
	if logs.Len() != 0 {
		t.Fatalf("logs for an absolute data_dir with a store = %v, want none", logs.All())
	}
}
