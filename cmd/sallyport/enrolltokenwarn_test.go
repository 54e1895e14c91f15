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

// TestShortEnrollTokenWarned: a tunnel.tokens entry shorter than 16
// characters (reusable, never expires) is warned about at start, by its
// index and group and never its value; long ones are not. Short ones were
// accepted without a word.
func TestShortEnrollTokenWarned(t *testing.T) {
	t.Setenv("SALLYPORT_ADMIN_TOKEN", strings.Repeat("k", 44))
	yaml := "data_dir: x\ntunnel:\n  tokens:\n" +
		"    - {token: " + strings.Repeat("t", 44) + ", group: default}\n" +
		"    - {token: short, group: team}\n"
	g, err := config.ParseGateway("gateway.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	g.DataDir = t.TempDir()
	core, logs := observer.New(zapcore.WarnLevel)
	if _, err := gatewayConfig(g, zap.New(core)); err != nil {
		t.Fatal(err)
	}
	got := logs.FilterMessageSnippet("tunnel.tokens").All()
	if len(got) != 1 {
		t.Fatalf("%d warnings about tunnel.tokens, want 1: %v", len(got), logs.All())
	}
	msg := got[0].Message
	if !strings.Contains(msg, "tunnel.tokens[1] is only 5 characters long") || !strings.Contains(msg, `"team"`) ||
		!strings.Contains(msg, "sallyport token create") || strings.Contains(msg, "short") {
		t.Errorf("warning %q", msg)
	}
}
