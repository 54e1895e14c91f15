//go:build !agentonly

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFileFlagsNamed: a file given on the command line that cannot be read
// is reported with the flag that names it (the config setting, for a file
// that --config names), as a config file's settings are. They used to say
// only `open nope.pem: no such file or directory` and `admin token: open
// nope: …`, which left the user to guess which file was meant.
func TestFileFlagsNamed(t *testing.T) {
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.pem")
	agentYAML := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(agentYAML, []byte("gateway: 127.0.0.1:1\ntoken: t\ndata_dir: "+filepath.Join(dir, "a")+
		"\ngateway_ca_file: "+missing+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enroll := []string{"agent", "enroll", "--gateway", "127.0.0.1:1", "--token", "t", "--data-dir", filepath.Join(dir, "agent")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(enroll, "--gateway-ca", missing), "--gateway-ca: open " + missing + ": no such file or directory"},
		{[]string{"agent", "enroll", "--config", agentYAML}, agentYAML + ":4: gateway_ca_file: open " + missing + ": no such file or directory"},
		{[]string{"token", "list", "--admin-token-file", missing}, "--admin-token-file: open " + missing + ": no such file or directory"},
		{[]string{"connector", "list", "--admin-token-file", missing}, "--admin-token-file: open " + missing},
	} {
		_, err := runCLI(t, tc.args...)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("sallyport %s: %v\nwant it to begin %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
