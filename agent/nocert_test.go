package agent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestNoCertificateNamesDataDir: an agent with neither a certificate in
// its data_dir nor a token says which enroll command to run with its own
// data_dir filled in (quoted for the shell when it needs it). It used to
// say --data-dir DIR although it knew the directory.
func TestNoCertificateNamesDataDir(t *testing.T) {
	plain, spaced := filepath.Join(t.TempDir(), "agent"), filepath.Join(t.TempDir(), "my agent")
	for dir, want := range map[string]string{plain: "--data-dir " + plain, spaced: "--data-dir '" + spaced + "'"} {
		a, err := New(Config{Gateway: "gw.example.com:8443", DataDir: dir, Log: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		err = a.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "sallyport agent enroll --gateway gw.example.com:8443 --token-file FILE "+want+"`") {
			t.Errorf("Run: %v; want the enroll command with %s", err, want)
		}
	}
}
