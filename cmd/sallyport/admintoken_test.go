//go:build !agentonly

package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestWeakAdminTokenWarned: an admin token file that other users may read,
// or a token of a few characters, was taken without a word (a security
// helper's finding); the token rules every connector, so the gateway warns.
func TestWeakAdminTokenWarned(t *testing.T) {
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
	long := strings.Repeat("k", 44)
	cases := []struct {
		name, tok string
		mode      os.FileMode
		want      []string // substrings of the warnings, in order; none → no warning
	}{
		{"good", long, 0o600, nil},
		{"short", "abc", 0o600, []string{"only 3 characters"}},
		{"readable by others", long, 0o644, []string{"can be read by other users (mode 0644); chmod 600"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if runtime.GOOS == "windows" && c.mode != 0o600 {
				want = nil // file modes mean nothing there and are not checked
			}
			file := filepath.Join(t.TempDir(), "admin-token")
			if err := os.WriteFile(file, []byte(c.tok+"\n"), c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(file, c.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			tok, err := adminToken(file)
			if err != nil || tok != c.tok {
				t.Fatalf("adminToken = %q, %v", tok, err)
			}
			core, logs := observer.New(zapcore.WarnLevel)
			warnWeakAdminToken(file, tok, zap.New(core))
			got := logs.All()
			if len(got) != len(want) {
				t.Fatalf("%d warnings %v, want %d", len(got), got, len(want))
			}
			for i, w := range want {
				if !strings.Contains(got[i].Message, w) {
					t.Errorf("warning %q, want it to say %q", got[i].Message, w)
				}
			}
		})
	}
}
