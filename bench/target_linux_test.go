package bench

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestTargetProcesses: a target's processes given by role are measured
// like the relay's own: their CPU and peak RSS on the target's row (the
// gateway and agent columns), their RSS before load, and their growth per
// held long poll; the header names them. Here the "gateway" is this test
// process, which serves the target. Linux only (this file's name): the
// figures come from /proc.
func TestTargetProcesses(t *testing.T) {
	srv := httptest.NewServer(BackendHandler())
	defer srv.Close()
	pid := os.Getpid()
	held := filepath.Join(t.TempDir(), "mem.held")
	core, logs := observer.New(zap.WarnLevel)
	rep, err := Run(t.Context(), Config{
		Scenarios: []string{"small", "longpoll"}, Duration: 200 * time.Millisecond, Rounds: 1, Warmup: -1, Concurrency: 2, Longpoll: 50,
		Target: srv.URL, TargetPIDs: map[string]int{RoleGateway: pid},
		HeldProfile: held, Log: zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Profiles while held: the harness's, not the target's (which cannot
	// be asked for one), and no warning that it could not.
	if _, err := os.Stat(held + "." + PathTarget + "." + procHarness); err != nil {
		t.Errorf("no held profile of the harness: %v", err)
	}
	if _, err := os.Stat(held + "." + PathTarget + "." + RoleGateway); err == nil {
		t.Error("a held profile named after the target's gateway")
	}
	for _, e := range logs.All() {
		t.Errorf("logged %s: %s %v", e.Level, e.Message, e.ContextMap())
	}
	for _, r := range rep.Results {
		gw, ok := r.Processes[RoleGateway]
		if !ok || r.Path != PathTarget || gw.PeakRSSMiB == nil || *gw.PeakRSSMiB <= 1 {
			t.Errorf("%s/%s: gateway %+v (present %v)", r.Scenario, r.Path, gw, ok)
		}
		if _, ok := r.Processes[RoleAgent]; ok {
			t.Errorf("%s: an agent measured, none was given", r.Scenario)
		}
		if r.Scenario == "longpoll" && (gw.RSSGrowthKiBPerHeld == nil || gw.GoroutinesPerHeld != nil) {
			t.Errorf("longpoll: gateway growth %v, runtime figures %v; want growth and none (not a child of the harness)",
				gw.RSSGrowthKiBPerHeld, gw.GoroutinesPerHeld)
		}
	}
	if rep.Idle == nil || rep.Idle.RSSMiB[RoleGateway] <= 1 || rep.Idle.Sessions != 0 {
		t.Errorf("idle %+v", rep.Idle)
	}
	var md, js strings.Builder
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("; the target's processes measured as gateway pid %d\n", pid),
		"(the target's processes, by the place they stand in)",
		"longpoll target: 50 held at once, 0 errors; RSS growth per held exchange: gateway ",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("no %q in\n%s", want, md.String())
		}
	}
	// The small row has the gateway's CPU and RSS cells filled (the
	// 11th and 13th), the agent's not.
	var row []string
	for _, line := range strings.Split(md.String(), "\n") {
		if strings.HasPrefix(line, "| small | target |") {
			row = strings.Split(strings.Trim(line, "| "), " | ")
		}
	}
	if len(row) != 15 || !strings.HasSuffix(row[10], " s/1k") || row[11] != "-" || row[12] == "-" || row[13] != "-" {
		t.Errorf("small row %q: want the gateway's CPU and RSS and not the agent's", row)
	}
	if !strings.Contains(js.String(), fmt.Sprintf(`"target_pids": {`+"\n"+`      "gateway": %d`, pid)) {
		t.Errorf("no target_pids in the settings:\n%.1500s", js.String())
	}
}
