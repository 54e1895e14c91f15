package bench

import (
	"fmt"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTargetMistakes: a --target or --direct-target that is not an
// http:// base URL is refused with the flag and the form to give. A bare
// host:port used to fail with url.Parse's words: `bench: target: parse
// "127.0.0.1:18180": first path segment in URL cannot contain colon`.
func TestTargetMistakes(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Target: "127.0.0.1:18180"}, `--target "127.0.0.1:18180": want http://host:port`},
		{Config{Target: "localhost:18180"}, `--target "localhost:18180": want http://host:port`},
		{Config{Target: "https://127.0.0.1:18180"}, `--target "https://127.0.0.1:18180": want http://host:port`},
		{Config{Target: "http://127.0.0.1:18180/app"}, `--target "http://127.0.0.1:18180/app": give only scheme, host and port; scenarios choose the path`},
		{Config{Target: "http://127.0.0.1:18180", DirectTarget: "127.0.0.1:8080"}, `--direct-target "127.0.0.1:8080": want http://host:port`},
	} {
		err := (&stack{}).addTargets(&tc.cfg)
		if err == nil || err.Error() != tc.want {
			t.Errorf("target %q, direct %q: %v\nwant %q", tc.cfg.Target, tc.cfg.DirectTarget, err, tc.want)
		}
	}
	st := &stack{}
	if err := st.addTargets(&Config{Target: "http://127.0.0.1:18180/", DirectTarget: "http://127.0.0.1:8080"}); err != nil || len(st.paths) != 2 {
		t.Fatalf("good targets: %v, %d paths", err, len(st.paths))
	}
}

// TestTargetProcesses: a target's processes given by role are measured
// like the relay's own: their CPU and peak RSS on the target's row (the
// gateway and agent columns), their RSS before load, and their growth per
// held long poll; the header names them. Here the "gateway" is this test
// process, which serves the target.
func TestTargetProcesses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a target's processes are measured from /proc, which only Linux has here")
	}
	srv := httptest.NewServer(BackendHandler())
	defer srv.Close()
	pid := os.Getpid()
	rep, err := Run(t.Context(), Config{
		Scenarios: []string{"small", "longpoll"}, Duration: 200 * time.Millisecond, Rounds: 1, Warmup: -1, Concurrency: 2, Longpoll: 50,
		Target: srv.URL, TargetPIDs: map[string]int{RoleGateway: pid},
	})
	if err != nil {
		t.Fatal(err)
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

// TestTargetProcessMistakes: roles outside TargetRoles, processes that do
// not exist and processes without a target are refused before any load.
func TestTargetProcessMistakes(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Target: "http://127.0.0.1:9", TargetPIDs: map[string]int{"frps": 1}}, `target process role "frps": want one of gateway, agent, backend`},
		{Config{TargetPIDs: map[string]int{RoleAgent: 1}}, "target processes are measured in target mode, not inprocess"},
		{Config{Target: "http://127.0.0.1:9", TargetPIDs: map[string]int{RoleAgent: -3}}, "target's agent process: pid -3: want a process id above 0"},
	} {
		_, err := Run(t.Context(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v\nwant %q", tc.cfg.TargetPIDs, err, tc.want)
		}
	}
}
