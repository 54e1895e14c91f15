//go:build unix

package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"

	"github.com/sallyport/sallyport/internal/testrig"
)

// TestBinaryAgentIgnoresHangup: a SIGHUP to a running agent (the gateway
// unit's ExecReload=/bin/kill -HUP copied into the agent's, an ssh logout)
// is logged and ignored; the agent goes on relaying, and SIGTERM still
// stops it cleanly. It runs the agent-only build, which has its own list
// of commands. Before the fix SIGHUP's default action killed the agent at
// once, without a log line.
func TestBinaryAgentIgnoresHangup(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "relayed after SIGHUP")
	}))
	defer backend.Close()
	const token = "tok-agent-hangup"
	gw, public, agentYAML := startBinaryGateway(t, t.TempDir(), token, backend.URL)
	ag := startBuilt(t, buildAgentBinary, "agent", "--config", agentYAML("hup", token))
	ag.waitLogN("connected to the gateway", 2)
	if err := ag.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := ag.waitLog("SIGHUP ignored")
	if line["level"] != "warn" {
		t.Errorf("SIGHUP line at level %v, want warn: %v", line["level"], line)
	}
	if code, body := getHello(t, public); code != 200 || body != "relayed after SIGHUP" {
		t.Fatalf("GET after SIGHUP = %d %q\n%s", code, body, ag.output())
	}
	http.DefaultClient.CloseIdleConnections()
	if code := ag.stop(); code != 0 {
		t.Fatalf("agent exit code after SIGHUP, then SIGTERM = %d\n%s", code, ag.output())
	}
	if code := gw.stop(); code != 0 {
		t.Fatalf("gateway exit code after SIGTERM = %d\n%s", code, gw.output())
	}
}
