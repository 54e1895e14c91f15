//go:build !agentonly

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/bench"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestBinaryBench runs `sallyport bench` as a user would, in its default
// process mode: the binary re-executes itself as backend, gateway and
// agent, and as the reference paths' forwarders and proxy, and the report
// has per-process figures for each path.
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
		"--concurrency", "4", "--transfer-concurrency", "1", "--transfer-size", "1MiB", "--reference", "tcp,tls,stdlib", "--relay-procs", "1", "--relay-env", "GOGC=400", "--json", jsonPath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("bench took %v:\n%s%s", time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	// A clean run logs no error (the gateway once reported its connector
	// group empty at every run's end, the agent having stopped first).
	if strings.Contains(stderr.String(), "ERROR") {
		t.Errorf("a clean run logged errors:\n%s", stderr.String())
	}
	// The harness checks each child's GOMAXPROCS against --relay-procs
	// (it fails the run otherwise); the header says it.
	for _, want := range []string{"sallyport bench: processes mode;", "GOMAXPROCS 1 in the relay and reference processes", "relay and reference processes run with GOGC=400", "| small | direct |", "| small | relay |", "| download | relay |", " s/1k |", " s/GiB |",
		"| small | tcp-forward |", "| download | tls-forward |", "| download | stdlib-proxy |", "forwarder-a ", "tls-forwarder-b ", "stdlib-proxy "} {
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
	readJSON(t, jsonPath, &rep)
	if rep.Mode != "processes" || len(rep.Results) != 10 {
		t.Fatalf("mode %q, %d results", rep.Mode, len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Errors != 0 || r.RequestsPerS <= 0 {
			t.Errorf("%s/%s: %d errors, %.0f req/s", r.Scenario, r.Path, r.Errors, r.RequestsPerS)
		}
		want := []string{"backend", "harness"}
		switch r.Path {
		case "relay":
			want = append(want, "gateway", "agent")
		case "tcp-forward":
			want = append(want, "forwarder-a", "forwarder-b") // each its own process
		case "tls-forward":
			want = append(want, "tls-forwarder-a", "tls-forwarder-b")
		case "stdlib-proxy":
			want = append(want, "stdlib-proxy")
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

// TestBinaryBenchStreams runs the stream scenarios in process mode over an
// emulated link, with profiles of every child, the JSON and the SVG: the
// flags reach the children and every file is written.
func TestBinaryBenchStreams(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := func(name string) string { return filepath.Join(dir, name) }
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--scenarios", "sse,ws,longpoll,burst", "--duration", "1s", "--rounds", "1",
		"--concurrency", "2", "--sse-interval", "5ms", "--longpoll", "50", "--burst", "5", "--link-rtt", "4ms", "--link-rate", "1gbit",
		"--cpuprofile", out("cpu"), "--memprofile", out("mem"), "--trace", out("trace"), "--json", out("bench.json"), "--svg", out("bench.svg"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("\n%s%s", stdout.String(), stderr.String())
	for _, want := range []string{"tunnel link rtt 4 ms (", "rate 1000 Mbit/s", "idle before load (RSS): gateway ", "longpoll relay: 50 held at once, 0 errors; RSS growth per held exchange: gateway ",
		"longpoll relay, Go runtime's count after the GC, per held exchange: gateway "} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout has no %q", want)
		}
	}
	for _, role := range []string{"backend", "gateway", "agent"} {
		for _, p := range []string{"cpu", "mem", "mem.held.relay"} {
			if st, err := os.Stat(out(p + "." + role)); err != nil || st.Size() == 0 {
				t.Errorf("%s profile of the %s: %v", p, role, err)
			}
		}
		// Its goroutines while the long polls were held: each of the 50
		// keeps at least one goroutine waiting, with the same stack.
		if b, err := os.ReadFile(out("mem.held.relay." + role + ".goroutines")); err != nil ||
			!bytes.HasPrefix(b, []byte("goroutine profile: total ")) || mostAlike(b) < 50 {
			t.Errorf("goroutines of the %s while held: %v, at most %d alike\n%s", role, err, mostAlike(b), b)
		}
		// An execution trace starts "go 1.N trace" and holds far more
		// than its header once the process did some work.
		if b, err := os.ReadFile(out("trace." + role)); err != nil || !bytes.HasPrefix(b, []byte("go 1.")) || len(b) < 10<<10 {
			t.Errorf("trace of the %s: %d bytes, starting %q, %v", role, len(b), b[:min(len(b), 16)], err)
		}
	}
	var rep struct {
		Settings struct {
			SSEIntervalMS float64 `json:"sse_interval_ms"`
			Longpoll      int     `json:"longpoll"`
			Burst         int     `json:"burst"`
			LinkRTTMS     float64 `json:"link_rtt_ms"`
			LinkRateMbit  float64 `json:"link_rate_mbit"`
			Transport     string  `json:"transport"`
		} `json:"settings"`
		Idle *struct {
			Sessions int                `json:"sessions"`
			RSSMiB   map[string]float64 `json:"rss_mib"`
		} `json:"idle"`
		Results []struct {
			Scenario  string `json:"scenario"`
			Path      string `json:"path"`
			Errors    int64  `json:"errors"`
			Exchanges int64  `json:"exchanges"`
			Held      int64  `json:"held"`
			Processes map[string]struct {
				Growth     *float64 `json:"rss_growth_kib_per_held"`
				GrowthGC   *float64 `json:"rss_growth_after_gc_kib_per_held"`
				Goroutines *float64 `json:"goroutines_per_held"`
				StackKiB   *float64 `json:"go_stack_kib_per_held"`
				HeapKiB    *float64 `json:"go_heap_kib_per_held"`
			} `json:"processes"`
		} `json:"results"`
	}
	readJSON(t, out("bench.json"), &rep)
	s := rep.Settings
	if s.SSEIntervalMS != 5 || s.Longpoll != 50 || s.Burst != 5 || s.LinkRTTMS != 4 || s.LinkRateMbit != 1000 || s.Transport != "grpc" {
		t.Errorf("settings %+v", s)
	}
	if rep.Idle == nil || rep.Idle.Sessions != 2 || rep.Idle.RSSMiB["agent"] <= 1 || rep.Idle.RSSMiB["gateway"] <= 1 {
		t.Errorf("idle %+v", rep.Idle)
	}
	if len(rep.Results) != 8 {
		t.Fatalf("%d results, want 8", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Errors != 0 || r.Exchanges == 0 {
			t.Errorf("%s/%s: %d errors, %d exchanges", r.Scenario, r.Path, r.Errors, r.Exchanges)
		}
		if r.Scenario == "longpoll" && r.Path == "relay" {
			gw, ag := r.Processes["gateway"], r.Processes["agent"]
			if r.Held != 50 || gw.Growth == nil || ag.Growth == nil || gw.GrowthGC == nil || ag.GrowthGC == nil {
				t.Errorf("longpoll relay: held %d, processes %+v", r.Held, r.Processes)
			}
			// Each held exchange keeps at least one goroutine, with its
			// stack and some heap, in the gateway, the agent and the
			// backend.
			for _, name := range []string{"gateway", "agent", "backend"} {
				p := r.Processes[name]
				if p.Goroutines == nil || *p.Goroutines < 1 || p.StackKiB == nil || *p.StackKiB <= 0 || p.HeapKiB == nil || *p.HeapKiB <= 0 {
					t.Errorf("longpoll relay: the %s's Go runtime figures: %+v", name, p)
				}
			}
		}
	}
	svg, err := os.ReadFile(out("bench.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg, new(struct{})); err != nil || !bytes.Contains(svg, []byte(`data-scenario="burst" data-path="relay"`)) {
		t.Errorf("svg: %v\n%s", err, svg)
	}
}

// mostAlike is the largest count of goroutines with one stack in a
// goroutine profile's text form ("N @ 0x… 0x…" lines).
func mostAlike(profile []byte) int {
	most := 0
	for _, line := range strings.Split(string(profile), "\n") {
		count, rest, ok := strings.Cut(line, " @ ")
		if n, err := strconv.Atoi(count); ok && err == nil && rest != "" {
			most = max(most, n)
		}
	}
	return most
}

// TestBinaryBenchTarget serves the bench backend with --serve-backend and
// measures it as a --target (Host header and all) and as --direct-target
// with the same client; SIGTERM stops the backend cleanly.
func TestBinaryBenchTarget(t *testing.T) {
	testrig.SkipShort(t, "builds and runs the binary")
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, bin, "bench", "--serve-backend", "127.0.0.1:0")
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no address from --serve-backend: %v", err)
	}
	_, rest, _ := strings.Cut(line, "http://")
	addr, _, _ := strings.Cut(rest, " ")
	if addr == "" || !strings.Contains(line, "/longpoll") {
		t.Fatalf("--serve-backend said %q", line)
	}

	jsonPath := filepath.Join(t.TempDir(), "target.json")
	cmd := exec.CommandContext(ctx, bin, "bench", "--target", "http://"+addr, "--host", "relay.test",
		"--direct-target", "http://"+addr, "--scenarios", "small,sse", "--duration", "300ms", "--rounds", "1",
		"--concurrency", "2", "--json", jsonPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bench --target: %v\n%s", err, out)
	}
	var rep struct {
		Mode    string `json:"mode"`
		Results []struct {
			Scenario, Path string
			Errors         int64    `json:"errors"`
			Exchanges      int64    `json:"exchanges"`
			Ratio          *float64 `json:"ratio_to_direct"`
		} `json:"results"`
	}
	raw := readJSON(t, jsonPath, &rep)
	if rep.Mode != "target" || len(rep.Results) != 4 {
		t.Fatalf("mode %q, %d results: %s", rep.Mode, len(rep.Results), raw)
	}
	for i, r := range rep.Results {
		want := []string{"direct", "target"}[i%2]
		if r.Path != want || r.Errors != 0 || r.Exchanges == 0 || r.Ratio == nil {
			t.Errorf("result %d: %s/%s, %d errors, %d exchanges, ratio %v", i, r.Scenario, r.Path, r.Errors, r.Exchanges, r.Ratio)
		}
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err != nil {
		t.Errorf("--serve-backend after SIGTERM: %v", err)
	}
}

// readJSON decodes the JSON file at path into v and returns its bytes.
func readJSON(t *testing.T, path string, v any) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestBenchFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cpuprofile", "cpu.out", "--target", "http://127.0.0.1:1"}, "nothing is started"},
		{[]string{"--memprofile", "mem.out", "--target", "http://127.0.0.1:1"}, "nothing is started"},
		{[]string{"--trace", "trace.out", "--target", "http://127.0.0.1:1"}, "nothing is started"},
		{[]string{"--transport", "websocket"}, `--transport "websocket": this build has grpc, quic, yamux`},
		{[]string{"--link-rtt", "20ms", "--target", "http://127.0.0.1:1"}, "with --target there is none"},
		{[]string{"--link-rate", "1gbit", "--target", "http://127.0.0.1:1"}, "with --target there is none"},
		{[]string{"--link-rate", "fast"}, `--link-rate: "fast": want a rate`},
		{[]string{"--link-rtt", "-5ms"}, "--link-rtt -5ms"},
		{[]string{"--sse-interval", "10us"}, "--sse-interval 10µs: want at least 100µs"},
		{[]string{"--longpoll", "0"}, "--longpoll and --burst must be positive"},
		{[]string{"--burst", "-1"}, "--longpoll and --burst must be positive"},
		{[]string{"--scenarios", "small,bogus"}, `unknown scenario "bogus"`},
		{[]string{"--host", "x.test"}, "go with --target"},
		{[]string{"--target", "http://127.0.0.1:1", "--inprocess"}, "pick one"},
		{[]string{"--transfer-size", "lots"}, "--transfer-size"},
		{[]string{"--concurrency", "0"}, "must be positive"},
		{[]string{"--reference", "tcp,nginx"}, `--reference "nginx": there are tcp, tls, stdlib`},
		{[]string{"--reference", "tcp", "--target", "http://127.0.0.1:1"}, "with --target nothing is started"},
		// --transport with --target was taken, ignored, and written into
		// the JSON's settings as if the target had been measured over it.
		{[]string{"--transport", "quic", "--target", "http://127.0.0.1:1"}, "--transport picks the tunnel of the relay the harness starts"},
		{[]string{"--transport", "grpc", "--target", "http://127.0.0.1:1"}, "leave --transport out"},
		{[]string{"--relay-env", "GOGC"}, `relay environment entry "GOGC": want KEY=VALUE`},
		{[]string{"--relay-env", "GOGC=200", "--inprocess"}, "with --inprocess or --target it starts none"},
		{[]string{"--relay-env", "GOGC=200", "--target", "http://127.0.0.1:1"}, "with --inprocess or --target it starts none"},
		{[]string{"--relay-procs", "1", "--inprocess"}, "--relay-procs and --relay-env set up the relay processes"},
		{[]string{"--target-pid", "gateway=1"}, "--host, --direct-target and --target-pid go with --target"},
		{[]string{"--target", "http://127.0.0.1:1", "--target-pid", "frps=1"}, `--target-pid "frps=1": want ROLE=PID, ROLE one of gateway, agent, backend`},
		{[]string{"--target", "http://127.0.0.1:1", "--target-pid", "agent"}, `--target-pid "agent": want ROLE=PID`},
		{[]string{"--target", "http://127.0.0.1:1", "--target-pid", "agent=x"}, `--target-pid "agent=x": want ROLE=PID`},
		{[]string{"--target", "http://127.0.0.1:1", "--target-pid", "agent=0"}, `--target-pid "agent=0": want ROLE=PID`},
		{[]string{"--target", "http://127.0.0.1:1", "--target-pid", "agent=7", "--target-pid", "agent=8"}, "--target-pid names the agent twice"},
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

// TestBenchFlagRefusals: flags the harness once took and ran with, each
// refused before anything starts (checked on the config, so that a
// refusal that is missing shows as a failure, not as a whole bench run).
func TestBenchFlagRefusals(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		// A rate that is not a number, or not a finite one, ran and then
		// could not be written as JSON; one above a nanosecond's interval
		// scheduled everything at once.
		{[]string{"--rate", "NaN"}, "--rate NaN: want exchanges per second"},
		{[]string{"--rate", "+Inf"}, "--rate +Inf: want exchanges per second"},
		{[]string{"--rate", "2e9"}, "--rate 2e+09: want exchanges per second"},
		{[]string{"--rate", "-5"}, "--rate -5: want exchanges per second"},
		// No scenario at all ran every one of them.
		{[]string{"--scenarios", ""}, "--scenarios: name at least one of small"},
		// --serve-backend only serves: what else is asked would be ignored.
		{[]string{"--serve-backend", "127.0.0.1:0", "--target", "http://127.0.0.1:1", "--duration", "1s"}, "--duration, --target would be ignored"},
		// Output files that cannot be written were found out only after
		// the whole run.
		{[]string{"--json", filepath.Join(t.TempDir(), "missing", "out.json")}, "--json: cannot write"},
		{[]string{"--svg", t.TempDir()}, "is a directory"},
		// A profile file a child cannot create stopped that child at
		// start, and the harness said only "backend: exited: EOF".
		{[]string{"--cpuprofile", filepath.Join(t.TempDir(), "missing", "cpu.out")}, "--cpuprofile: cannot write "},
		{[]string{"--memprofile", filepath.Join(t.TempDir(), "missing", "mem.out")}, "--memprofile: cannot write "},
		{[]string{"--trace", filepath.Join(t.TempDir(), "missing", "trace.out")}, "--trace: cannot write "},
		{[]string{"--inprocess", "--cpuprofile", t.TempDir()}, "is a directory"}, // one file, FILE itself
	} {
		g := &globals{logLevel: "error", logFormat: "console"}
		cmd, f := newBenchCmdFlags(g)
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		if _, err := f.config(cmd, g); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bench %q: error %v, want one containing %q", c.args, err, c.want)
		}
	}
	// --serve-backend alone, and with the log flags, is fine.
	g := &globals{logLevel: "error", logFormat: "console", logFlush: 250 * time.Millisecond}
	cmd, f := newBenchCmdFlags(g)
	if err := cmd.ParseFlags([]string{"--serve-backend", "127.0.0.1:0", "--log-level", "info"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.config(cmd, g); err != nil {
		t.Errorf("--serve-backend --log-level info: %v", err)
	}
}

// TestBenchLogLevel: bench logs errors only unless --log-level says
// otherwise, wherever on the command line it stands, and its help says
// so; the other commands keep the global default, info, and say that.
func TestBenchLogLevel(t *testing.T) {
	help := func(args ...string) string {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(args, "--help"))
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	level := regexp.MustCompile(`--log-level string .*\(default "(\w+)"\)`)
	for _, c := range []struct {
		cmd  []string
		want string
	}{{[]string{"bench"}, "error"}, {[]string{"gateway"}, "info"}, {[]string{"agent"}, "info"}, {nil, "info"}} {
		out := help(c.cmd...)
		m := level.FindAllStringSubmatch(out, -1)
		if len(m) != 1 || m[0][1] != c.want {
			t.Errorf("%v --help: --log-level lines %q, want one with default %q", c.cmd, m, c.want)
		}
	}

	// What runBench hands the logger and the children.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "error"},
		{[]string{"bench", "--log-level", "warn"}, "warn"},
		{[]string{"--log-level", "debug", "bench"}, "debug"},
	} {
		g := &globals{}
		root := &cobra.Command{Use: "sallyport", SilenceUsage: true, SilenceErrors: true}
		root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "")
		root.PersistentFlags().StringVar(&g.logFormat, "log-format", "console", "")
		cmd, _ := newBenchCmdFlags(g)
		root.AddCommand(cmd)
		if g.logLevel != "info" {
			t.Fatalf("making the bench command set the global log level to %q", g.logLevel)
		}
		// An unknown scenario stops the run after the logger is made.
		root.SetArgs(append(c.args, "--scenarios", "bogus"))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "bogus") {
			t.Fatalf("%v: %v", c.args, err)
		}
		if g.logLevel != c.want {
			t.Errorf("%v: log level %q, want %q", c.args, g.logLevel, c.want)
		}
	}
}

// benchConfig parses args as `sallyport bench` would and returns the
// harness config they make.
func benchConfig(t *testing.T, args ...string) bench.Config {
	t.Helper()
	g := &globals{logLevel: "error", logFormat: "console", logFlush: 250 * time.Millisecond}
	cmd, f := newBenchCmdFlags(g)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.config(cmd, g)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return cfg
}

// TestBenchFlagsToConfig: each flag lands in the harness's config.
func TestBenchFlagsToConfig(t *testing.T) {
	cfg := benchConfig(t, "--scenarios", "sse,ws,download,longpoll,burst", "--duration", "4s", "--rounds", "2", "--warmup", "300ms",
		"--concurrency", "9", "--transfer-concurrency", "3", "--rate", "250", "--transfer-size", "2MiB",
		"--sse-interval", "5ms", "--longpoll", "321", "--burst", "77", "--link-rtt", "20ms", "--link-rate", "100mbit",
		"--transport", "grpc", "--reference", "tcp", "--reference", "stdlib",
		"--relay-env", "GODEBUG=a=1,b=2", "--relay-env", "GOGC=200")
	want := bench.Config{
		Scenarios: []string{"sse", "ws", "download", "longpoll", "burst"}, Duration: 4 * time.Second, Rounds: 2, Warmup: 300 * time.Millisecond,
		Concurrency: 9, TransferConcurrency: 3, Rate: 250, TransferSize: 2 << 20,
		SSEInterval: 5 * time.Millisecond, Longpoll: 321, Burst: 77, LinkRTT: 20 * time.Millisecond, LinkRate: 100e6,
		Transport: "grpc", References: []string{"tcp", "stdlib"},
		RelayEnv: []string{"GODEBUG=a=1,b=2", "GOGC=200"}, // one entry per flag: commas kept
	}
	if cfg.Spawn == nil {
		t.Error("no Spawn: the default is process mode")
	}
	cfg.Spawn = nil
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config\n%+v\nwant\n%+v", cfg, want)
	}

	// --quick: three scenarios, 3 s per path; what is given explicitly stays.
	if q := benchConfig(t, "--quick"); !slices.Equal(q.Scenarios, bench.QuickScenarios) || q.Duration != quickDuration {
		t.Errorf("--quick: scenarios %v duration %v", q.Scenarios, q.Duration)
	}
	if q := benchConfig(t, "--quick", "--scenarios", "ws", "--duration", "2s"); !slices.Equal(q.Scenarios, []string{"ws"}) || q.Duration != 2*time.Second {
		t.Errorf("--quick with --scenarios and --duration: %v %v", q.Scenarios, q.Duration)
	}
	// --longpoll left alone: the harness's default, fitted to the open-file limit.
	if d := benchConfig(t); d.Longpoll != 0 || d.Burst != 500 || d.SSEInterval != 10*time.Millisecond || d.LinkRTT != 0 || d.LinkRate != 0 {
		t.Errorf("defaults: longpoll %d burst %d sse %v link %v %d", d.Longpoll, d.Burst, d.SSEInterval, d.LinkRTT, d.LinkRate)
	}
	// --inprocess: nothing is spawned.
	if ip := benchConfig(t, "--inprocess"); ip.Spawn != nil {
		t.Error("--inprocess still spawns children")
	}
	// A target's processes, by role.
	tg := benchConfig(t, "--target", "http://127.0.0.1:1", "--target-pid", "gateway=41", "--target-pid", "agent=42", "--target-pid", "backend=43")
	if want := map[string]int{"gateway": 41, "agent": 42, "backend": 43}; !maps.Equal(tg.TargetPIDs, want) {
		t.Errorf("--target-pid: %v, want %v", tg.TargetPIDs, want)
	}
	if d := benchConfig(t); d.TargetPIDs != nil {
		t.Errorf("no --target-pid: %v", d.TargetPIDs)
	}
}

// TestBenchSpawnProfiles: in process mode each child gets its own profile
// files, named after its role.
func TestBenchSpawnProfiles(t *testing.T) {
	x := t.TempDir()
	cfg := benchConfig(t, "--cpuprofile", x+"/cpu.out", "--memprofile", x+"/mem.out", "--trace", x+"/trace.out")
	args := strings.Join(cfg.Spawn("gateway").Args[1:], " ")
	want := strings.ReplaceAll("bench --role gateway --log-level error --log-format console --log-flush-interval 250ms --cpuprofile X/cpu.out.gateway --memprofile X/mem.out.gateway --trace X/trace.out.gateway", "X", x)
	if args != want {
		t.Errorf("child args\n%s\nwant\n%s", args, want)
	}
	if args := strings.Join(benchConfig(t).Spawn("agent").Args[1:], " "); strings.Contains(args, "profile") || strings.Contains(args, "trace") {
		t.Errorf("child args without profiles: %s", args)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"100mbit": 100e6, "1gbit": 1e9, "512kbit": 512e3, "1.5Mbit": 1.5e6, "8000bit": 8000, " 10 mbit ": 10e6, "1000gbit": 1e12,
	} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "100", "fast", "0mbit", "-1mbit", "1kbit", "2000gbit", "100mb", "mbit"} {
		if got, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) = %d, want an error", in, got)
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

// TestWithProfilesTrace: --inprocess writes one trace of the whole run
// (withProfiles in this process), and a trace file that cannot be created
// is an error that names it, before the run starts.
func TestWithProfilesTrace(t *testing.T) {
	file := filepath.Join(t.TempDir(), "trace.out")
	ran := false
	err := withProfiles("", "", file, func() error {
		ran = true
		done := make(chan struct{})
		go func() { close(done) }()
		<-done
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("withProfiles: %v (ran %v)", err, ran)
	}
	if b, err := os.ReadFile(file); err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Fatalf("trace: %d bytes, %v", len(b), err)
	}
	ran = false
	err = withProfiles("", "", filepath.Join(t.TempDir(), "missing", "trace.out"), func() error { ran = true; return nil })
	if err == nil || ran || !strings.Contains(err.Error(), "trace: ") {
		t.Fatalf("uncreatable trace file: %v (ran %v), want a trace error before the run", err, ran)
	}
}

// TestBenchScenarioFlags: a flag given for a run without any scenario it
// applies to is refused, naming the flag, the scenarios it is for and the
// run's; they were silently ignored. Without --scenarios every scenario
// runs, so every flag applies.
func TestBenchScenarioFlags(t *testing.T) {
	for _, sf := range scenarioFlags {
		if uses := bench.SettingScenarios(sf.setting); len(uses) == 0 || len(uses) == len(bench.ScenarioNames) {
			t.Errorf("--%s: setting %q applies to %v; want some scenarios, not none or all (a misspelt setting applies to all)", sf.flag, sf.setting, uses)
		}
	}
	refuse := func(args []string, want string) {
		t.Helper()
		g := &globals{logLevel: "error", logFormat: "console"}
		cmd, f := newBenchCmdFlags(g)
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		if _, err := f.config(cmd, g); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bench %q: error %v, want one containing %q", args, err, want)
		}
	}
	refuse([]string{"--scenarios", "small,1k", "--longpoll", "200"},
		"--longpoll (for longpoll) would be ignored: --scenarios small,1k runs none of the scenarios it is for")
	refuse([]string{"--scenarios", "small", "--burst", "50"}, "--burst (for burst) would be ignored")
	refuse([]string{"--scenarios", "small,ws", "--sse-interval", "5ms"}, "--sse-interval (for sse) would be ignored")
	refuse([]string{"--scenarios", "small,sse", "--transfer-size", "4MiB", "--transfer-concurrency", "2"},
		"--transfer-size (for download, upload), --transfer-concurrency (for download, upload) would be ignored: --scenarios small,sse runs none of the scenarios they are for")
	refuse([]string{"--scenarios", "download,sse,longpoll,burst", "--rate", "100"}, "--rate (for small, 1k, 64k, ws) would be ignored")
	refuse([]string{"--scenarios", "download,longpoll,burst", "--concurrency", "8"}, "--concurrency (for small, 1k, 64k, sse, ws) would be ignored")
	refuse([]string{"--scenarios", "longpoll", "--duration", "2s", "--rounds", "1", "--warmup", "1s"}, "--duration (for small, 1k, 64k, download, upload, sse, ws, burst), --rounds (")
	refuse([]string{"--quick", "--longpoll", "200"}, "--quick (small,1k,download) runs none")
	for _, args := range [][]string{
		{"--longpoll", "200", "--burst", "50", "--sse-interval", "5ms", "--transfer-size", "4MiB", "--rate", "100"},
		{"--quick", "--transfer-size", "4MiB", "--transfer-concurrency", "2", "--rate", "100", "--concurrency", "8"},
		{"--scenarios", "upload,longpoll", "--longpoll", "200", "--transfer-size", "4MiB"},
		{"--scenarios", " burst", "--burst", "50"}, // names as Run takes them, spaces trimmed
	} {
		benchConfig(t, args...)
	}
}

// benchChildEnv makes the test binary, run by TestBenchChildProfileError
// as a child of the harness, act as `sallyport bench --role backend
// --cpuprofile FILE` with FILE the variable's value.
const benchChildEnv = "SALLYPORT_TEST_BENCH_CHILD_CPUPROFILE"

// TestBenchChildProfileError: a child that cannot create its CPU profile
// (the check before the run passed, and then its directory went) fails
// to start, and the harness says why, not "backend: exited: EOF".
func TestBenchChildProfileError(t *testing.T) {
	if file := os.Getenv(benchChildEnv); file != "" {
		err := runBenchRole(&benchFlags{role: bench.RoleBackend, cpuprofile: file}, zap.NewNop())
		if err == nil {
			os.Exit(0)
		}
		os.Exit(1)
	}
	file := filepath.Join(t.TempDir(), "gone", "cpu.out.backend")
	spawn := func(string) *exec.Cmd {
		c := exec.Command(os.Args[0], "-test.run=^TestBenchChildProfileError$")
		c.Env = append(os.Environ(), benchChildEnv+"="+file)
		return c
	}
	_, err := bench.Run(t.Context(), bench.Config{Scenarios: []string{"small"}, Spawn: spawn})
	if want := "bench: backend: cpu profile: open " + file; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one containing %q", err, want)
	}
}
