//go:build !agentonly

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
)

// TestCARotateNeedsStore: `gateway ca rotate` (and --retire-previous)
// refuses a data dir without a store, by --data-dir or the config's
// data_dir, and creates nothing there. It used to create a new store with
// a new CA in a mistyped directory and report success.
func TestCARotateNeedsStore(t *testing.T) {
	tmp := t.TempDir()
	typo := filepath.Join(tmp, "gatway")
	file := filepath.Join(tmp, "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tmp, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("public: {addr: \"127.0.0.1:0\"}\ntunnel: {addr: \"127.0.0.1:0\"}\n"+
		"admin: {addr: \"127.0.0.1:0\"}\ndata_dir: "+typo+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--data-dir", typo}, []string{"no Sallyport store in " + typo, "check --data-dir"}},
		{[]string{"--data-dir", filepath.Join(file, "data")}, []string{"no Sallyport store in " + file, "check --data-dir"}},
		{[]string{"--config", cfg}, []string{cfg + ":4: data_dir: no Sallyport store in " + typo, "check data_dir"}},
	} {
		for _, retire := range []bool{false, true} {
			args := append([]string{"gateway", "ca", "rotate"}, tc.args...)
			if retire {
				args = append(args, "--retire-previous")
			}
			out, err := runCLI(t, args...)
			if err == nil {
				t.Errorf("%v = %q; want an error", args, out)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v: %v; want it to say %q", args, err, w)
				}
			}
		}
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Errorf("ca rotate created %s: %v", typo, err)
	}

	// The gateway's store: rotate and retire work on it.
	dataDir := filepath.Join(tmp, "data")
	st, err := store.Open(context.Background(), dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&pki.Authority{Store: st}).Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if out, err := runCLI(t, "gateway", "ca", "rotate", "--data-dir", dataDir); err != nil || !strings.Contains(out, "2 CA(s)") {
		t.Fatalf("ca rotate = %q, %v", out, err)
	}
	if out, err := runCLI(t, "gateway", "ca", "rotate", "--retire-previous", "--data-dir", dataDir); err != nil || !strings.Contains(out, "removed 1") {
		t.Fatalf("ca rotate --retire-previous = %q, %v", out, err)
	}
}
