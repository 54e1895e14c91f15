//go:build unix && !agentonly

package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/testrig"
)

// TestHangupWhileStopping: a SIGHUP that arrives after the gateway began
// to stop (its context ended, Serve still drains) is ignored with a log
// line; it neither reloads nor kills the process. Without the fix the
// watcher gave SIGHUP back to its default, terminating the gateway in the
// middle of its shutdown grace.
func TestHangupWhileStopping(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	core, logs := observer.New(zap.InfoLevel)
	// The path does not load: a reload would log "config reload failed".
	stop := reloadOnHangup(ctx, nil, filepath.Join(t.TempDir(), "missing.yaml"), nil, zap.New(core), catchHangup())
	defer stop()
	cancel()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for logs.FilterMessageSnippet("SIGHUP ignored").Len() == 0 {
		select {
		case <-deadline:
			t.Fatalf("no log of the ignored SIGHUP; logged: %v", logs.All())
		case <-time.After(2 * time.Millisecond):
		}
	}
	if n := logs.FilterMessage("reloading the apps").Len(); n != 0 {
		t.Fatalf("the apps were reloaded while stopping: %v", logs.All())
	}
}

// TestBinaryReload: SIGHUP publishes the apps of the edited config file
// without a restart; a broken file changes nothing and says why; other
// changed settings are named as needing a restart.
func TestBinaryReload(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "app at "+r.Header.Get("X-Forwarded-Host"))
	}))
	defer backend.Close()
	dir := t.TempDir()
	const token = "tok-reload-test"
	gw, public, agentYAML := startBinaryGateway(t, dir, token, backend.URL)
	ag := startProc(t, "agent", "--config", agentYAML("agent-1", token))
	ag.waitLog("connected to the gateway")
	defer ag.stop()
	get := func(host string) (int, string) { t.Helper(); return getHost(t, public, host) }
	if code, body := get("second.test"); code != http.StatusNotFound {
		t.Fatalf("second.test before the reload: %d %q", code, body)
	}

	gwYAML := filepath.Join(dir, "gateway.yaml")
	orig, err := os.ReadFile(gwYAML)
	if err != nil {
		t.Fatal(err)
	}
	hup := func() {
		t.Helper()
		if err := gw.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	second := "  - name: second\n    hosts: [\"second.test\"]\n    backend: " + backend.URL + "\n    group: default\n"
	writeFile(t, gwYAML, string(orig)+second)
	hup()
	if l := gw.waitLog("apps reloaded"); l["apps"] != float64(2) || !strings.Contains(strings.Join(anyStrings(l["added"]), ","), "second") {
		t.Fatalf("reload line: %v", l)
	}
	if code, body := get("second.test"); code != 200 || body != "app at second.test" {
		t.Fatalf("second.test after the reload: %d %q", code, body)
	}

	// A broken file: the apps stay, the log names the file and line.
	writeFile(t, gwYAML, string(orig)+second+"  - name: third\n    hosts: [\"third.test\"]\n    bakend: x\n")
	hup()
	l := gw.waitLog("config reload failed")
	if e, _ := l["error"].(string); !strings.Contains(e, "gateway.yaml") || !strings.Contains(e, "bakend") {
		t.Fatalf("failed reload line: %v", l)
	}
	if code, body := get("second.test"); code != 200 || body != "app at second.test" {
		t.Fatalf("second.test after a failed reload: %d %q", code, body)
	}

	// Settings beyond the apps wait for a restart; the apps apply.
	writeFile(t, gwYAML, strings.Replace(string(orig), "shutdown_grace: 5s", "shutdown_grace: 7s", 1))
	hup()
	gw.waitLogN("apps reloaded", 2)
	if l := gw.waitLog("restart the gateway"); strings.Join(anyStrings(l["keys"]), ",") != "shutdown_grace" {
		t.Fatalf("restart warning: %v", l)
	}
	if code, _ := get("second.test"); code != http.StatusNotFound {
		t.Fatalf("second.test after it was removed: %d", code)
	}
	if code, body := get("hello.test"); code != 200 || body != "app at hello.test" {
		t.Fatalf("hello.test: %d %q", code, body)
	}
	http.DefaultClient.CloseIdleConnections()
	if code := gw.stop(); code != 0 {
		t.Fatalf("gateway exit code after SIGTERM = %d\n%s", code, gw.output())
	}
}

// anyStrings turns a logged JSON list into strings.
func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
