package agent

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// TestRefusedCertificateSaysHowToEnrollAgain: an agent whose certificate
// the gateway refuses in the TLS handshake (its connector CA retired with
// `ca rotate --retire-previous --force`, or another store) logs how to
// enroll again: remove the certificate and key from its data_dir (which
// `sallyport agent enroll` otherwise refuses, as it holds an unexpired
// certificate), and the enroll command with the agent's own config, as
// for an expired certificate. It said only "Enroll the agent again
// (sallyport agent enroll)", which then failed with "already holds an
// agent certificate".
func TestRefusedCertificateSaysHowToEnrollAgain(t *testing.T) {
	addr, clientTLS := refusingGateway(t)
	cfgFile := filepath.Join(t.TempDir(), "agent.yaml")
	creds := testCredentials(t, "c1")
	logs, ok := runAgentUntil(t, Config{Gateway: addr, TLS: clientTLS, Transport: TransportGRPC, Connections: 1,
		Credentials: creds, DataDir: t.TempDir(), ConfigFile: cfgFile}, func(e zapcore.Entry) bool {
		return strings.Contains(e.Message, "refused this agent's certificate")
	}, 20*time.Second)
	if !ok {
		t.Fatalf("no refusal logged; logs: %v", logs.All())
	}
	e := logs.FilterMessageSnippet("refused this agent's certificate").All()[0]
	for _, w := range []string{"Enroll the agent again", "remove " + CertFile + " and " + KeyFile, "data_dir", "enroll_again"} {
		if !strings.Contains(e.Message, w) {
			t.Errorf("logged %q\nwant %q in it", e.Message, w)
		}
	}
	fields := e.ContextMap()
	if cmd, _ := fields["enroll_again"].(string); !strings.Contains(cmd, "sallyport agent enroll --config "+cfgFile) ||
		!strings.Contains(cmd, "--token-file") {
		t.Errorf("enroll_again = %q; want the enroll command with --config %s and --token-file", fields["enroll_again"], cfgFile)
	}
	if g, _ := fields["group"].(string); g != creds.Group {
		t.Errorf("group = %q; want %q", fields["group"], creds.Group)
	}
}
