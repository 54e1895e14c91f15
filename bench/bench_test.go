package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sallyport/sallyport/internal/rawsock"
)

// TestRunInProcess drives a tiny run through a real backend, gateway and
// agent in this process and checks every figure is there.
func TestRunInProcess(t *testing.T) {
	rep, md := runLogged(t, Config{
		Scenarios:   []string{"small", "download"},
		Duration:    600 * time.Millisecond,
		Rounds:      2,
		Concurrency: 4,
		// One download at a time of 256 KiB bodies finishes several per
		// round even under the race detector, which slows the relay to
		// ~20 MB/s, on a machine busy with the rest of `make test`.
		TransferConcurrency: 1,
		TransferSize:        256 << 10,
		Log:                 zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if rep.Mode != ModeInProcess {
		t.Errorf("mode %q", rep.Mode)
	}
	if len(rep.Results) != 4 {
		t.Fatalf("%d results, want 4: %+v", len(rep.Results), rep.Results)
	}
	for i, want := range []struct{ scenario, path string }{
		{"small", PathDirect}, {"small", PathRelay}, {"download", PathDirect}, {"download", PathRelay},
	} {
		r := rep.Results[i]
		if r.Scenario != want.scenario || r.Path != want.path {
			t.Fatalf("result %d is %s/%s, want %s/%s", i, r.Scenario, r.Path, want.scenario, want.path)
		}
		if r.Errors != 0 || r.Exchanges == 0 || r.RequestsPerS <= 0 || r.MBPerS <= 0 {
			t.Errorf("%s/%s: %d errors %v, %d exchanges, %.0f req/s, %.2f MB/s",
				r.Scenario, r.Path, r.Errors, r.ErrorSamples, r.Exchanges, r.RequestsPerS, r.MBPerS)
		}
		if r.P50MS == nil || r.MaxMS == nil || *r.P50MS <= 0 || *r.MaxMS < *r.P999MS || *r.P999MS < *r.P50MS {
			t.Errorf("%s/%s: latency p50 %v p99.9 %v max %v", r.Scenario, r.Path, r.P50MS, r.P999MS, r.MaxMS)
		}
		if r.RatioToDirect == nil || *r.RatioToDirect <= 0 {
			t.Errorf("%s/%s: ratio %v", r.Scenario, r.Path, r.RatioToDirect)
		}
		if len(r.RoundRatios) != 2 || r.RoundRatios[0] <= 0 || r.RoundRatios[1] <= 0 ||
			r.Path == PathDirect && (r.RoundRatios[0] != 1 || r.RoundRatios[1] != 1) {
			t.Errorf("%s/%s: ratios by round %v, want 2 (direct's 1)", r.Scenario, r.Path, r.RoundRatios)
		}
		h, ok := r.Processes[procHarness]
		if !ok || h.CPUS <= 0 || h.CPUSPer1k == nil {
			t.Errorf("%s/%s: harness figures %+v", r.Scenario, r.Path, r.Processes)
		}
		if math.Abs(r.DurationS-0.6) > 0.01 {
			t.Errorf("%s/%s: measured %.3fs, want 0.6s", r.Scenario, r.Path, r.DurationS)
		}
	}
	if c, tc := rep.Results[0].Concurrency, rep.Results[3].Concurrency; c != 4 || tc != 1 {
		t.Errorf("concurrency %d, download %d; want 4, 1", c, tc)
	}
	if !strings.Contains(md, "\nvs direct round by round") || !strings.Contains(md, ": small relay ") ||
		!strings.Contains(md, "; download relay ") || strings.Contains(md, "small direct 100") {
		t.Errorf("the table's notes do not list the relay's ratios round by round:\n%s", md)
	}
}

// TestRoundRatios: each round's rate over direct's in the same round, and
// none when the rounds do not pair up or direct moved nothing in one.
func TestRoundRatios(t *testing.T) {
	if got := roundRatios([]float64{50, 30}, []float64{100, 120}); !slices.Equal(got, []float64{0.5, 0.25}) {
		t.Errorf("ratios %v, want [0.5 0.25]", got)
	}
	for _, c := range []struct{ rates, direct []float64 }{
		{[]float64{50}, []float64{100, 120}},
		{[]float64{50, 30}, []float64{100, 0}},
		{nil, nil},
	} {
		if got := roundRatios(c.rates, c.direct); got != nil {
			t.Errorf("rates %v against %v: %v, want none", c.rates, c.direct, got)
		}
	}
	rep := sampleReport()
	rep.Results[0].RoundRatios = []float64{1, 1, 1}
	rep.Results[1].RoundRatios = []float64{0.331, 0.35, 0.369}
	rep.Results[2].RoundRatios = []float64{0.25} // one round: nothing to compare
	want := "small relay 33.1 / 35 / 36.9%"
	if got := rep.roundRatiosText(); got != want {
		t.Errorf("%q, want %q", got, want)
	}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\nvs direct round by round (the paths alternate within each round; the spread is the machine's noise): "+want+"\n") {
		t.Errorf("markdown without the line:\n%s", b.String())
	}
}

// runLogged runs cfg, fails the test on an error and logs the markdown
// table, which it returns with the report.
func runLogged(t *testing.T, cfg Config) (*Report, string) {
	t.Helper()
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	md := markdown(t, rep)
	t.Logf("\n%s", md)
	return rep, md
}

// markdown is rep's markdown table.
func markdown(t *testing.T, rep *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestTargetOpenLoop measures an endpoint given by URL, with a direct
// target too, in open loop: the number of exchanges follows the rate.
func TestTargetOpenLoop(t *testing.T) {
	srv := httptest.NewServer(BackendHandler())
	defer srv.Close()
	rep, err := Run(t.Context(), Config{
		Scenarios: []string{"small"}, Duration: 400 * time.Millisecond, Rounds: 2, Warmup: -1,
		Concurrency: 4, Rate: 200, Target: srv.URL, Host: "relay.test", DirectTarget: srv.URL + "/",
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != ModeTarget || len(rep.Results) != 2 {
		t.Fatalf("mode %s, %d results", rep.Mode, len(rep.Results))
	}
	for _, r := range rep.Results {
		// 200/s for 0.4 s: exactly 80 scheduled, each one either completed
		// in its round or, on a loaded machine, finished after it.
		if r.Errors != 0 || r.Exchanges == 0 || r.Exchanges+r.Unfinished != 80 || r.Rate != 200 {
			t.Errorf("%s: %d exchanges + %d unfinished, %d errors %v, rate %v; want 80 in all, no errors",
				r.Path, r.Exchanges, r.Unfinished, r.Errors, r.ErrorSamples, r.Rate)
		}
		if _, ok := r.Processes[RoleGateway]; ok {
			t.Errorf("%s: a gateway was measured in target mode", r.Path)
		}
	}
	if rep.Results[0].Path != PathDirect || rep.Results[1].Path != PathTarget || rep.Results[1].RatioToDirect == nil {
		t.Errorf("paths %s, %s; ratio %v", rep.Results[0].Path, rep.Results[1].Path, rep.Results[1].RatioToDirect)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"unknown scenario": {Scenarios: []string{"small", "huge"}},
		"negative rate":    {Rate: -1},
		"NaN rate":         {Rate: math.NaN()},
		"infinite rate":    {Rate: math.Inf(1)},
		"rate above 1e9":   {Rate: 2e9},
		"round too short":  {Duration: 10 * time.Millisecond, Rounds: 3},
		"target path":      {Target: "http://127.0.0.1:1/x"},
		"target scheme":    {Target: "https://127.0.0.1:1"},
		"transport":        {Transport: "carrier-pigeon"},
		"negative rtt":     {LinkRTT: -time.Millisecond},
		"link and target":  {Target: "http://127.0.0.1:1", LinkRTT: time.Millisecond},
		"negative burst":   {Burst: -1},
		"sse interval":     {SSEInterval: time.Microsecond},
		"link over quic":   {Scenarios: []string{"small"}, Transport: TransportQUIC, LinkRTT: time.Millisecond},
		"reference":        {References: []string{"nginx"}},
		"target reference": {Target: "http://127.0.0.1:1", References: []string{ReferenceTCP}},
		"relay procs":      {RelayProcs: -1},
	} {
		_, err := Run(t.Context(), cfg)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestPercentiles checks the HDR extraction on 1..10,000 µs, where the
// answers are known: p50 = 5 ms, p90 = 9 ms, p99 = 9.9 ms, p99.9 = 9.99 ms.
func TestPercentiles(t *testing.T) {
	h := hdrhistogram.New(histMinUS, histMaxUS, histDigits)
	for v := int64(1); v <= 10000; v++ {
		if err := h.RecordValue(v); err != nil {
			t.Fatal(err)
		}
	}
	l, ok := percentiles(h, 10000)
	if !ok {
		t.Fatal("no values")
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"p50", l.P50, 5}, {"p90", l.P90, 9}, {"p99", l.P99, 9.9}, {"p99.9", l.P999, 9.99}, {"max", l.Max, 10},
	} {
		// Three significant digits: within 0.1%.
		if math.Abs(c.got-c.want) > c.want*0.001 {
			t.Errorf("%s = %v ms, want %v", c.name, c.got, c.want)
		}
	}
	if _, ok := percentiles(hdrhistogram.New(histMinUS, histMaxUS, histDigits), 0); ok {
		t.Error("an empty histogram has percentiles")
	}
	// Exact below 2,048 µs, and the maximum is never above the exact one.
	h = hdrhistogram.New(histMinUS, histMaxUS, histDigits)
	for _, v := range []int64{100, 200, 300, 400, 1999} {
		h.RecordValue(v)
	}
	l, _ = percentiles(h, 1999)
	if l.P50 != 0.3 || l.P99 != 1.999 || l.Max != 1.999 {
		t.Errorf("p50 %v p99 %v max %v, want 0.3, 1.999, 1.999", l.P50, l.P99, l.Max)
	}
}

func TestRecorderCountsAndCutOff(t *testing.T) {
	rec := newRecorder()
	ctx, cancel := context.WithCancel(t.Context())
	deadline := time.Now().Add(time.Hour)
	rec.done(ctx, deadline, 2*time.Millisecond, nil)
	rec.done(ctx, deadline, 4*time.Millisecond, nil)
	rec.done(ctx, deadline, time.Millisecond, io.ErrUnexpectedEOF)
	rec.done(ctx, deadline, time.Millisecond, io.ErrUnexpectedEOF)
	cancel()
	rec.done(ctx, deadline, time.Millisecond, context.Canceled)                     // cut off by the end of the round
	rec.done(t.Context(), time.Now().Add(-time.Millisecond), time.Millisecond, nil) // finished after the round
	if e, x, u := rec.exchanges.Load(), rec.errors.Load(), rec.unfinished.Load(); e != 2 || x != 2 || u != 2 {
		t.Errorf("exchanges %d errors %d unfinished %d, want 2 2 2", e, x, u)
	}
	if len(rec.samples) != 1 || rec.samples[0] != io.ErrUnexpectedEOF.Error() {
		t.Errorf("samples %q", rec.samples)
	}
	if l, _ := rec.latency(); l.Max != 4 || l.P50 != 2 {
		t.Errorf("latency %+v", l)
	}
}

// sampleReport is a report as a run in process mode would make it.
func sampleReport() *Report {
	rep := newReport(&Config{}, ModeProcesses)
	proc := func(cpu, per1k, rss float64) Process {
		return Process{CPUS: cpu, CPUSPer1k: ptr(per1k), CPUSPerGiB: ptr(cpu * 10), PeakRSSMiB: ptr(rss)}
	}
	rep.Results = []Result{
		{
			Scenario: "small", Path: PathDirect, Kind: kindRequest, Method: "GET", BodyBytes: 64, Concurrency: 64,
			DurationS: 10, Exchanges: 200000, RequestsPerS: 20000, MBPerS: 1.28,
			P50MS: ptr(3.1), P90MS: ptr(4.0), P99MS: ptr(6.5), P999MS: ptr(9.25), MaxMS: ptr(20.0), RatioToDirect: ptr(1.0),
			Processes: map[string]Process{RoleBackend: proc(3, 0.015, 12), procHarness: proc(5, 0.025, 30)},
		},
		{
			Scenario: "small", Path: PathRelay, Kind: kindRequest, Method: "GET", BodyBytes: 64, Concurrency: 64,
			DurationS: 10, Exchanges: 70000, Errors: 2, RequestsPerS: 7000, MBPerS: 0.448,
			P50MS: ptr(8.9), P90MS: ptr(12.0), P99MS: ptr(20.0), P999MS: ptr(31.0), MaxMS: ptr(45.5), RatioToDirect: ptr(0.35),
			Processes: map[string]Process{
				RoleGateway: proc(4, 0.0571, 25.5), RoleAgent: proc(3.5, 0.05, 20),
				RoleBackend: proc(1, 0.0143, 12), procHarness: proc(2, 0.0286, 30),
			},
			ErrorSamples: []string{"status 502 (tunnel-failed)"},
		},
		{
			Scenario: "download", Path: PathRelay, Kind: kindTransfer, Method: "GET", BodyBytes: 100 << 20, Concurrency: 4,
			DurationS: 10, Exchanges: 3, Unfinished: 4, RequestsPerS: 0.3, MBPerS: 450,
			RatioToDirect: ptr(0.25),
			Processes:     map[string]Process{RoleGateway: proc(2, 666, 40), RoleAgent: proc(1.5, 500, 35)},
		},
	}
	return rep
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "sallyport bench: processes mode;") {
		t.Fatalf("want a description, a blank line, a header, a rule and 3 rows:\n%s", out)
	}
	if !strings.Contains(lines[0], "; gateway and agent choose GOMAXPROCS by load") {
		t.Errorf("the description does not say that the relay's processes choose GOMAXPROCS: %s", lines[0])
	}
	for _, want := range []string{
		"| scenario | path | req/s | MB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | gateway CPU | agent CPU | gateway RSS MiB | agent RSS MiB | vs direct |",
		"| small | direct | 20000 | 1.28 | 3.1 | 4 | 6.5 | 9.25 | 20 | 0 |  |  |  |  | 100% |",
		"| small | relay | 7000 | 0.448 | 8.9 | 12 | 20 | 31 | 45.5 | 2 | 0.057 s/1k | 0.05 s/1k | 25.5 | 20 | 35% |",
		"| download | relay | 0.3 | 450 | - | - | - | - | - | 0 | 20 s/GiB | 15 s/GiB | 40 | 35 | 25% |",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing line\n%s", want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Version  int              `json:"version"`
		Mode     string           `json:"mode"`
		Machine  map[string]any   `json:"machine"`
		Settings map[string]any   `json:"settings"`
		Results  []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != ReportVersion || got.Mode != ModeProcesses || len(got.Results) != 3 {
		t.Fatalf("version %d mode %q results %d", got.Version, got.Mode, len(got.Results))
	}
	for _, k := range []string{"cpus", "cpu_model", "os", "arch", "go_version"} {
		if _, ok := got.Machine[k]; !ok {
			t.Errorf("machine has no %q", k)
		}
	}
	for _, k := range []string{"duration_s", "rounds", "warmup_s", "concurrency", "transfer_concurrency", "rate", "transfer_bytes"} {
		if _, ok := got.Settings[k]; !ok {
			t.Errorf("settings have no %q", k)
		}
	}
	relay := got.Results[1]
	for k, want := range map[string]any{
		"scenario": "small", "path": "relay", "kind": "request", "method": "GET", "body_bytes": 64.0,
		"concurrency": 64.0, "rate": 0.0, "duration_s": 10.0, "exchanges": 70000.0, "errors": 2.0, "unfinished": 0.0,
		"requests_per_s": 7000.0, "mb_per_s": 0.448, "p50_ms": 8.9, "p90_ms": 12.0, "p99_ms": 20.0, "p99_9_ms": 31.0,
		"max_ms": 45.5, "ratio_to_direct": 0.35,
	} {
		if relay[k] != want {
			t.Errorf("relay %s = %v, want %v", k, relay[k], want)
		}
	}
	gw, _ := relay["processes"].(map[string]any)["gateway"].(map[string]any)
	for k, want := range map[string]any{"cpu_s": 4.0, "cpu_s_per_1k": 0.0571, "cpu_s_per_gib": 40.0, "peak_rss_mib": 25.5} {
		if gw[k] != want {
			t.Errorf("gateway %s = %v, want %v", k, gw[k], want)
		}
	}
	if s, _ := relay["error_samples"].([]any); len(s) != 1 {
		t.Errorf("error_samples %v", relay["error_samples"])
	}
	if dl := got.Results[2]; dl["p50_ms"] != nil || dl["kind"] != "transfer" {
		t.Errorf("download without completed exchanges: p50_ms %v kind %v", dl["p50_ms"], dl["kind"])
	}
}

// TestRunRole speaks the child protocol to a backend role over pipes.
func TestRunRole(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- RunRole(t.Context(), RoleBackend, inR, outW, zaptest.NewLogger(t))
		outW.Close()
	}()
	dec := json.NewDecoder(outR)
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(inW, s+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	send(`{}`)
	var ready roleReady
	if err := dec.Decode(&ready); err != nil || ready.Addr == "" || ready.Error != "" {
		t.Fatalf("ready %+v, %v", ready, err)
	}
	// The backend serves what the scenarios ask for.
	lg := newLoader(1)
	defer lg.close()
	if err := lg.probe(t.Context(), path{base: "http://" + ready.Addr}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	up := &load{url: "http://" + ready.Addr + "/upload", method: "POST", reqBytes: 100000}
	if err := lg.exchange(t.Context(), up, newRecorder()); err != nil {
		t.Fatalf("upload: %v", err)
	}
	lg.close()

	send(cmdStats)
	var s procStats
	if err := dec.Decode(&s); err != nil || s.CPU <= 0 {
		t.Fatalf("stats %+v, %v", s, err)
	}
	// The runtime's own figures: a serving backend has goroutines, their
	// stacks and a heap.
	if g := s.Go; g.Goroutines < 2 || g.StackBytes <= 0 || g.HeapBytes <= 0 {
		t.Errorf("stats: Go runtime figures %+v", g)
	}
	send(cmdResetPeak)
	var a ack
	if err := dec.Decode(&a); err != nil {
		t.Fatal(err)
	}
	// A heap profile on demand (the long polls ask for one while held).
	prof := filepath.Join(t.TempDir(), "heap")
	send(cmdHeapProfile + " " + prof)
	if err := dec.Decode(&a); err != nil || a.Error != "" {
		t.Fatalf("heap-profile: %+v, %v", a, err)
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Fatalf("heap profile: %v", err)
	}
	send(cmdHeapProfile + " " + filepath.Join(prof, "not-a-dir", "heap"))
	if err := dec.Decode(&a); err != nil || !strings.Contains(a.Error, "heap profile: ") {
		t.Fatalf("heap-profile into a missing directory: %+v, %v", a, err)
	}
	// And its goroutines (the long polls ask for them too).
	gprof := filepath.Join(t.TempDir(), "goroutines")
	send(cmdGoroutineProfile + " " + gprof)
	a = ack{} // Decode leaves a field the answer lacks as it was
	if err := dec.Decode(&a); err != nil || a.Error != "" {
		t.Fatalf("goroutine-profile: %+v, %v", a, err)
	}
	if b, err := os.ReadFile(gprof); err != nil || !bytes.HasPrefix(b, []byte("goroutine profile: total ")) || !bytes.Contains(b, []byte("bench.RunRole")) {
		t.Fatalf("goroutine profile: %v\n%s", err, b)
	}
	send(cmdGoroutineProfile + " " + filepath.Join(prof, "not-a-dir", "goroutines"))
	if err := dec.Decode(&a); err != nil || !strings.Contains(a.Error, "goroutine profile: ") {
		t.Fatalf("goroutine-profile into a missing directory: %+v, %v", a, err)
	}
	send(cmdGoroutineProfile + " ")
	if err := dec.Decode(&a); err != nil || !strings.Contains(a.Error, "unknown command") {
		t.Fatalf("goroutine-profile without a file: %+v, %v", a, err)
	}
	send("bogus")
	if err := dec.Decode(&a); err != nil || !strings.Contains(a.Error, "unknown command") {
		t.Fatalf("bogus command: %+v, %v", a, err)
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatalf("RunRole after stdin ended: %v", err)
	}
}

// TestRunRoleStartFailure: a role that cannot start says why on stdout.
func TestRunRoleStartFailure(t *testing.T) {
	var out bytes.Buffer
	err := RunRole(t.Context(), RoleAgent, strings.NewReader(`{"ca_file": "/nonexistent/ca.pem", "gateway": "127.0.0.1:1"}`+"\n"), &out, nil)
	var ready roleReady
	if jerr := json.Unmarshal(out.Bytes(), &ready); err == nil || jerr != nil || !strings.Contains(ready.Error, "ca.pem") {
		t.Fatalf("err %v; out %q", err, out.String())
	}
}

// TestRunRoleRawSocketsEnv: a gateway or agent child reads
// SALLYPORT_RAW_SOCKETS (`--relay-env`) as the commands do: another value
// than on or off fails its start with the variable's error, reported to the
// harness. The backend, the user's app, does not read it.
func TestRunRoleRawSocketsEnv(t *testing.T) {
	t.Cleanup(func() { rawsock.Set("") })
	t.Setenv(rawsock.Env, "maybe")
	for _, role := range []string{RoleGateway, RoleAgent} {
		var out bytes.Buffer
		err := RunRole(t.Context(), role, strings.NewReader("{}\n"), &out, nil)
		var ready roleReady
		if jerr := json.Unmarshal(out.Bytes(), &ready); err == nil || jerr != nil ||
			!strings.Contains(ready.Error, `SALLYPORT_RAW_SOCKETS="maybe": want on or off`) {
			t.Errorf("%s: err %v; out %q", role, err, out.String())
		}
	}
}

// TestRelayProcsNeedsProcesses: GOMAXPROCS of the relay processes is set by
// each child for itself, so in process (or with a target) it is refused
// with the reason, before anything starts.
func TestRelayProcsNeedsProcesses(t *testing.T) {
	for _, cfg := range []Config{{RelayProcs: 1}, {RelayProcs: 1, Target: "http://127.0.0.1:1"}} {
		_, err := Run(t.Context(), cfg)
		if err == nil || !strings.Contains(err.Error(), "GOMAXPROCS of the relay processes needs processes mode, not "+cfg.mode()) {
			t.Errorf("%s mode: %v", cfg.mode(), err)
		}
	}
}

// TestRelayEnv: the entries of Config.RelayEnv reach the environment of
// the relay's and the reference paths' processes, not the backend's; the
// child here stands in for a role and reports as its GOMAXPROCS the
// value of a variable of its environment.
func TestRelayEnv(t *testing.T) {
	spawn := func(string) *exec.Cmd {
		c := exec.Command("sh", "-c", `read spec; echo "{\"procs\": ${SALLYPORT_TEST_P:-0}}"; read rest`)
		c.Env = append(os.Environ(), "SALLYPORT_TEST_P=1") // the spawner's own, overridden
		return c
	}
	cfg := &Config{Spawn: spawn, RelayEnv: []string{"SALLYPORT_TEST_P=5", "SALLYPORT_TEST_P=7"}}
	for _, tc := range []struct {
		role string
		want int
	}{{RoleBackend, 1}, {RoleGateway, 7}, {RoleAgent, 7}, {RoleStdlibProxy, 7}} {
		var st stack
		ready, err := st.start(t.Context(), cfg, tc.role, roleSpec{})
		st.close()
		if err != nil || ready.Procs != tc.want {
			t.Errorf("%s: ready %+v, %v; want the variable at %d", tc.role, ready, err, tc.want)
		}
	}
	if cmd := withEnv(spawn, nil)("x"); !slices.Contains(cmd.Env, "SALLYPORT_TEST_P=1") || slices.Contains(cmd.Env, "SALLYPORT_TEST_P=7") {
		t.Errorf("without entries the environment changed: %v", cmd.Env)
	}
}

// TestRelayEnvChecks: an entry that is not KEY=VALUE, or entries without
// processes to give them to, are refused before anything starts.
func TestRelayEnvChecks(t *testing.T) {
	spawn := func(string) *exec.Cmd { t.Error("a process was started"); return nil }
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Spawn: spawn, RelayEnv: []string{"GOGC"}}, `relay environment entry "GOGC": want KEY=VALUE`},
		{Config{Spawn: spawn, RelayEnv: []string{"=1"}}, `relay environment entry "=1": want KEY=VALUE`},
		{Config{Spawn: spawn, RelayEnv: []string{"GO GC=1"}}, `relay environment entry "GO GC=1": want KEY=VALUE`},
		{Config{RelayEnv: []string{"GOGC=200"}}, "the relay processes' environment needs processes mode, not inprocess"},
		{Config{RelayEnv: []string{"GOGC=200"}, Target: "http://127.0.0.1:1"}, "the relay processes' environment needs processes mode, not target"},
	} {
		if _, err := Run(t.Context(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.cfg.RelayEnv, err, tc.want)
		}
	}
}

// TestChildExited: a child process that has gone (crashed, or killed)
// is reported as exited, whichever way the harness notices: its stdin no
// longer taken, or its stdout ended.
func TestChildExited(t *testing.T) {
	spawn := func(string) *exec.Cmd {
		// Takes the spec, says it is ready, and exits.
		return exec.Command("sh", "-c", "read spec; echo '{}'")
	}
	c, _, err := startChild(t.Context(), spawn, RoleGateway, roleSpec{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	// Until the harness's writes fail, the first commands may still fit
	// in the pipe: each one then ends in reading the closed stdout.
	for range 3 {
		if _, err := c.stats(); err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("stats of an exited child: %v, want it said to have exited", err)
		}
	}
}

// TestStackLeavesNoTempFiles: the certificates the roles make at start
// (the gateway's, the TLS forwarder's) are gone once the stack is up, so a
// harness killed mid-run leaves no directory and no private key behind.
func TestStackLeavesNoTempFiles(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	st, err := startStack(t.Context(), &Config{References: []string{ReferenceTLS}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left in the temporary directory while the stack runs: %s", e.Name())
	}
}

// TestRoundsAddUpToDuration: a duration that rounds do not divide is
// split so that they add up to it to the nanosecond; cut to a third each,
// 1 s over 3 rounds was measured, and written in the JSON, as 0.999999999 s.
func TestRoundsAddUpToDuration(t *testing.T) {
	for _, c := range []struct {
		d      time.Duration
		rounds int
	}{{time.Second, 3}, {10 * time.Second, 7}, {100 * time.Millisecond, 3}, {time.Hour + 1, 1000}} {
		cfg := Config{Duration: c.d, Rounds: c.rounds}
		var sum time.Duration
		for r := range c.rounds {
			l := cfg.roundLength(r)
			if l < cfg.round() || l > cfg.round()+1 {
				t.Errorf("%v over %d: round %d of %v, want %v or 1 ns more", c.d, c.rounds, r, l, cfg.round())
			}
			sum += l
		}
		if sum != c.d {
			t.Errorf("%v over %d rounds: they add up to %v", c.d, c.rounds, sum)
		}
	}

	// What a run reports: 100 ms over 3 rounds is 0.1 s, not 0.099999999.
	srv := httptest.NewServer(BackendHandler())
	defer srv.Close()
	rep, err := Run(t.Context(), Config{
		Scenarios: []string{"small"}, Duration: 100 * time.Millisecond, Rounds: 3, Warmup: -1, Concurrency: 1, Target: srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(b.String(), `"duration_s": 0.1,`); got != 2 { // settings and the one result
		t.Errorf(`"duration_s": 0.1 %d times, want 2 (settings, result):`+"\n%s", got, b.String())
	}
}

// TestSSEIntervalLongerThanRound: each round opens its event streams anew
// and a stream's first event comes one interval later, so an interval as
// long as a round measures nothing; it is refused before the run, with
// what to change. It once gave a row of zeros and no word why.
func TestSSEIntervalLongerThanRound(t *testing.T) {
	srv := httptest.NewServer(BackendHandler())
	defer srv.Close()
	cfg := Config{
		Scenarios: []string{"small", "sse"}, Duration: 300 * time.Millisecond, Rounds: 3, Warmup: -1,
		Concurrency: 1, SSEInterval: 100 * time.Millisecond, Target: srv.URL,
	}
	_, err := Run(t.Context(), cfg)
	if want := "an SSE interval of 100ms is not shorter than a round (100ms)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	// Without sse the interval does not matter; shorter than a round, it runs.
	cfg.Scenarios = []string{"small"}
	if _, err := Run(t.Context(), cfg); err != nil {
		t.Errorf("without sse: %v", err)
	}
	cfg.Scenarios, cfg.SSEInterval = []string{"sse"}, 40*time.Millisecond
	rep, err := Run(t.Context(), cfg)
	if err != nil || rep.Results[0].Exchanges == 0 {
		t.Errorf("an interval shorter than the round: %v, %+v", err, rep)
	}
}

// TestOpenLoopHeader: the header says the run is open loop only for the
// scenarios the rate drives (request scenarios and ws), and names them
// when others ran too; it once said "open loop" for sse, transfers and all.
func TestOpenLoopHeader(t *testing.T) {
	header := func(kinds ...[2]string) string {
		rep := newReport(&Config{Rate: 2000}, ModeTarget)
		for _, k := range kinds {
			rep.Results = append(rep.Results, Result{Scenario: k[0], Path: PathDirect, Kind: k[1]})
		}
		line, _, _ := strings.Cut(markdown(t, rep), "\n")
		return line
	}
	small, ws := [2]string{"small", kindRequest}, [2]string{"ws", kindMessage}
	sse, download := [2]string{"sse", kindEvent}, [2]string{"download", kindTransfer}
	for _, c := range []struct {
		line, want string
	}{
		{header(small, ws), "(transfers 4), open loop at 2000 req/s\n"},
		{header(small, sse, download, ws), "(transfers 4), open loop at 2000 req/s for small, ws (the rate does not apply to sse, download)\n"},
		{header(sse, download), "(transfers 4), closed loop (the open loop's 2000 req/s drives none of these scenarios)\n"},
	} {
		if !strings.HasSuffix(c.line+"\n", c.want) {
			t.Errorf("header\n%s\nwant it to end\n%s", c.line, c.want)
		}
	}
}
