//go:build !agentonly

package main

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/config"
)

// TestRemoteAdminWarned: the admin listener speaks plain HTTP, so on a
// non-loopback admin.addr the admin token and the enrollment tokens it
// creates cross the network unencrypted; the gateway took that without a
// word (a security helper's finding). It warns at start, naming the
// setting and what to do, when an admin token is set (without one the API
// refuses every call).
func TestRemoteAdminWarned(t *testing.T) {
	for _, tc := range []struct {
		name, admin string
		token       bool
		want        string // substring of the warning; "" → no warning
	}{
		{"default", "", true, ""},
		{"loopback v4", "127.0.0.1:9090", true, ""},
		{"loopback v6", "[::1]:9090", true, ""},
		{"localhost", "localhost:9090", true, ""},
		{"every address", "0.0.0.0:9090", true, "admin.addr 0.0.0.0:9090 listens on every address of this machine"},
		{"every address, no host", ":9090", true, "admin.addr :9090 listens on every address"},
		{"every address v6", "[::]:9090", true, "admin.addr [::]:9090 listens on every address"},
		{"one private address", "10.1.2.3:9090", true, "admin.addr 10.1.2.3:9090 is not a loopback address"},
		{"every address without a token", "0.0.0.0:9090", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := ""
			if tc.token {
				tok = strings.Repeat("k", 44)
			}
			t.Setenv("SALLYPORT_ADMIN_TOKEN", tok)
			yaml := "data_dir: x\n"
			if tc.admin != "" {
				yaml += "admin: {addr: \"" + tc.admin + "\"}\n"
			}
			g, err := config.ParseGateway("gateway.yaml", []byte(yaml))
			if err != nil {
				t.Fatal(err)
			}
			g.DataDir = t.TempDir()
			core, logs := observer.New(zapcore.WarnLevel)
			if _, err := gatewayConfig(g, zap.New(core)); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range logs.All() {
				if strings.Contains(e.Message, "admin.addr") {
					got = append(got, e.Message)
				}
			}
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("admin.addr %q: warned %q, want no warning", tc.admin, got)
			case tc.want != "" && len(got) != 1:
				t.Errorf("admin.addr %q: %d warnings %q, want one saying %q", tc.admin, len(got), got, tc.want)
			case tc.want != "" && (!strings.Contains(got[0], tc.want) || !strings.Contains(got[0], "plain HTTP") ||
				!strings.Contains(got[0], "127.0.0.1:9090")):
				t.Errorf("admin.addr %q: warning %q, want it to say %q, plain HTTP and 127.0.0.1:9090", tc.admin, got[0], tc.want)
			}
		})
	}
}
