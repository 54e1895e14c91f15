package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/sallyport/sallyport/internal/testrig"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBinaryBench runs `sallyport bench` as a user would, in its default
// process mode: the binary re-executes itself as backend, gateway and
// agent, and the report has per-process figures for both.
func TestBinaryBench(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--scenarios", "small,download", "--duration", "600ms", "--rounds", "2",
		"--concurrency", "4", "--transfer-concurrency", "1", "--transfer-size", "1MiB", "--json", jsonPath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("bench took %v:\n%s%s", time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	for _, want := range []string{"sallyport bench: processes mode;", "| small | direct |", "| small | relay |", "| download | relay |", " s/1k |", " s/GiB |"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout has no %q", want)
		}
	}

	var rep struct {
		Mode    string `json:"mode"`
		Results []struct {
			Scenario     string  `json:"scenario"`
			Path         string  `json:"path"`
			Errors       int64   `json:"errors"`
			RequestsPerS float64 `json:"requests_per_s"`
			Processes    map[string]struct {
				CPUS       float64  `json:"cpu_s"`
				PeakRSSMiB *float64 `json:"peak_rss_mib"`
			} `json:"processes"`
		} `json:"results"`
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "processes" || len(rep.Results) != 4 {
		t.Fatalf("mode %q, %d results", rep.Mode, len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Errors != 0 || r.RequestsPerS <= 0 {
			t.Errorf("%s/%s: %d errors, %.0f req/s", r.Scenario, r.Path, r.Errors, r.RequestsPerS)
		}
		want := []string{"backend", "harness"}
		if r.Path == "relay" {
			want = append(want, "gateway", "agent")
		}
		if len(r.Processes) != len(want) {
			t.Errorf("%s/%s: processes %v, want %v", r.Scenario, r.Path, r.Processes, want)
		}
		for _, name := range want {
			p, ok := r.Processes[name]
			if !ok || p.CPUS <= 0 || p.PeakRSSMiB == nil || *p.PeakRSSMiB <= 1 {
				t.Errorf("%s/%s: %s: %+v", r.Scenario, r.Path, name, p)
			}
		}
	}
}

func TestBenchFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cpuprofile", "cpu.out"}, "--inprocess"},
		{[]string{"--transport", "websocket"}, "must be grpc, quic or yamux"},
		{[]string{"--host", "x.test"}, "go with --target"},
		{[]string{"--target", "http://127.0.0.1:1", "--inprocess"}, "pick one"},
		{[]string{"--transfer-size", "lots"}, "--transfer-size"},
		{[]string{"--concurrency", "0"}, "must be positive"},
	} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"bench"}, c.args...))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bench %v: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "64KiB": 64 << 10, "100MiB": 100 << 20, "1GiB": 1 << 30, "5MB": 5e6, "10 KB": 1e4, "7B": 7,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "1.5MiB", "MiB", "2TiB", "2000GiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
