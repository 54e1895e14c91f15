//go:build !agentonly && linux

package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testrig"
)

// TestPeersScript runs bench/peers.sh for Sallyport alone (the other
// relays are built from the module proxy, too slow for the suite): a real
// `sallyport gateway` and `sallyport agent` from the YAML it writes, each
// measured as a target through --target-pid, once for small and once for
// longpoll. The rows must carry the gateway's and the agent's own figures.
// Linux only (this file's build tag): the script reads the processes
// through /proc.
func TestPeersScript(t *testing.T) {
	testrig.SkipShort(t, "builds the binary and runs a gateway, an agent and the bench twice")
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../bench/peers.sh", out)
	// On the deadline the script's whole process group is asked to stop:
	// the bench, the gateway, the agent and the backend end on SIGTERM,
	// and the script's trap then waits for them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	cmd.Env = append(os.Environ(), "SALLYPORT="+bin, "RELAYS=sallyport", "SCENARIOS=small", "DURATION=600ms", "LONGPOLL=40",
		"PORT_BASE="+strconv.Itoa(freePortBase(t)))
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("peers.sh: %v\n%s", err, b)
	}
	t.Logf("%s", b)
	type proc struct {
		PeakMiB *float64 `json:"peak_rss_mib"`
		Growth  *float64 `json:"rss_growth_kib_per_held"`
	}
	type report struct {
		Mode     string `json:"mode"`
		Settings struct {
			TargetPIDs map[string]int `json:"target_pids"`
		} `json:"settings"`
		Idle struct {
			RSSMiB map[string]float64 `json:"rss_mib"`
		} `json:"idle"`
		Results []struct {
			Scenario  string          `json:"scenario"`
			Path      string          `json:"path"`
			Errors    int64           `json:"errors"`
			Exchanges int64           `json:"exchanges"`
			Processes map[string]proc `json:"processes"`
		} `json:"results"`
	}
	for _, phase := range []string{"load", "longpoll"} {
		var rep report
		readJSON(t, filepath.Join(out, "sallyport."+phase+".json"), &rep)
		if rep.Mode != "target" || len(rep.Settings.TargetPIDs) != 3 || rep.Idle.RSSMiB["gateway"] <= 1 || rep.Idle.RSSMiB["agent"] <= 1 {
			t.Errorf("%s: mode %q, target pids %v, idle %v", phase, rep.Mode, rep.Settings.TargetPIDs, rep.Idle.RSSMiB)
		}
		for _, r := range rep.Results {
			if r.Errors != 0 || r.Exchanges == 0 {
				t.Errorf("%s %s/%s: %d errors, %d exchanges", phase, r.Scenario, r.Path, r.Errors, r.Exchanges)
			}
			if r.Path != "target" {
				continue
			}
			for _, name := range []string{"gateway", "agent", "backend"} {
				p := r.Processes[name]
				if p.PeakMiB == nil || *p.PeakMiB <= 1 || (r.Scenario == "longpoll" && p.Growth == nil) {
					t.Errorf("%s %s: the %s's figures %+v", phase, r.Scenario, name, p)
				}
			}
		}
	}
	// The gateway's and agent's processes were real ones (YAML, their
	// own command), and the markdown says which.
	md, err := os.ReadFile(filepath.Join(out, "sallyport.load.md"))
	if err != nil || !strings.Contains(string(md), "the target's processes measured as gateway pid ") {
		t.Errorf("markdown: %v\n%s", err, md)
	}
}

// freePortBase finds a PORT_BASE for bench/peers.sh whose ports (+1 to +9,
// +80, +90, +443) are free on 127.0.0.1 now, below the ephemeral range.
func freePortBase(t *testing.T) int {
	t.Helper()
	for base := 20000 + os.Getpid()%50*100; base < 32000; base += 500 {
		free := true
		for _, off := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 80, 90, 443} {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no free range of ports for bench/peers.sh below 32000")
	return 0
}
