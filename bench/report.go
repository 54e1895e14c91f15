package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"strings"
)

// ReportVersion is the version of the JSON report's layout. Fields are
// only ever added; a rename or a change of meaning bumps it.
const ReportVersion = 1

// Report is the outcome of a run; its JSON form is what --json writes.
type Report struct {
	Version  int      `json:"version"`
	Mode     string   `json:"mode"` // ModeProcesses, ModeInProcess or ModeTarget
	Machine  Machine  `json:"machine"`
	Settings Settings `json:"settings"`
	Results  []Result `json:"results"` // one per scenario and path, in run order
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go_version"`
}

// Settings are the load settings of the run, defaults filled in.
type Settings struct {
	DurationS           float64 `json:"duration_s"` // per scenario and path
	Rounds              int     `json:"rounds"`
	WarmupS             float64 `json:"warmup_s"`
	Concurrency         int     `json:"concurrency"`
	TransferConcurrency int     `json:"transfer_concurrency"`
	Rate                float64 `json:"rate"` // 0: closed loop
	TransferBytes       int64   `json:"transfer_bytes"`
}

// Result is one scenario at one path.
type Result struct {
	Scenario string `json:"scenario"`
	Path     string `json:"path"` // PathDirect, PathRelay or PathTarget
	// Kind is "request" (many small exchanges; figure of merit req/s) or
	// "transfer" (few large bodies; MB/s).
	Kind        string  `json:"kind"`
	Method      string  `json:"method"`
	BodyBytes   int64   `json:"body_bytes"` // per exchange: the response body of a GET, the request body of a POST
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate"` // open-loop exchanges/s scheduled; 0: closed loop
	DurationS   float64 `json:"duration_s"`
	Exchanges   int64   `json:"exchanges"`  // completed: 2xx and the whole body, within a round
	Errors      int64   `json:"errors"`     // failed: transport error, non-2xx, or a short body
	Unfinished  int64   `json:"unfinished"` // still running when a round ended: not counted, not errors
	// RequestsPerS is Exchanges per second; MBPerS is body bytes moved per
	// second in MB (10^6 bytes), cut-off exchanges' bytes included.
	RequestsPerS float64 `json:"requests_per_s"`
	MBPerS       float64 `json:"mb_per_s"`
	// Latency of completed exchanges in milliseconds: from the request's
	// start (closed loop) or scheduled time (open loop) to the end of the
	// response body. Null when nothing completed.
	P50MS  *float64 `json:"p50_ms"`
	P90MS  *float64 `json:"p90_ms"`
	P99MS  *float64 `json:"p99_ms"`
	P999MS *float64 `json:"p99_9_ms"`
	MaxMS  *float64 `json:"max_ms"`
	// RatioToDirect is this path's throughput over the direct path's:
	// requests/s for request scenarios, MB/s for transfers. Null without a
	// direct path.
	RatioToDirect *float64 `json:"ratio_to_direct"`
	// Processes holds the measured processes taking part in this path, by
	// name: "gateway", "agent", "backend", and "harness" (the load
	// generator; with --inprocess everything).
	Processes    map[string]Process `json:"processes"`
	ErrorSamples []string           `json:"error_samples,omitempty"`
}

// Process is one process's resource use during one path's rounds.
type Process struct {
	CPUS float64 `json:"cpu_s"` // CPU seconds (user + system) during this path's rounds
	// CPUSPer1k is CPU seconds per 1,000 completed exchanges; CPUSPerGiB
	// per GiB of body moved. Null when nothing completed or moved.
	CPUSPer1k  *float64 `json:"cpu_s_per_1k"`
	CPUSPerGiB *float64 `json:"cpu_s_per_gib"`
	// PeakRSSMiB is the highest resident set during the scenario (both
	// paths; reset before each scenario where Linux allows). Null when
	// unknown.
	PeakRSSMiB *float64 `json:"peak_rss_mib"`
}

func newReport(cfg *Config, mode string) *Report {
	return &Report{
		Version: ReportVersion,
		Mode:    mode,
		Machine: Machine{
			CPUs: runtime.NumCPU(), CPUModel: cpuModel(),
			OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(),
		},
		Settings: Settings{
			DurationS:           cfg.duration().Seconds(),
			Rounds:              cfg.rounds(),
			WarmupS:             cfg.warmup().Seconds(),
			Concurrency:         cfg.concurrency(),
			TransferConcurrency: cfg.transferConcurrency(),
			Rate:                cfg.Rate,
			TransferBytes:       cfg.transferSize(),
		},
		Results: []Result{},
	}
}

// cpuModel is the first "model name" of /proc/cpuinfo, or "".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// pathProcesses are the processes that take part in each path; the harness
// always does.
var pathProcesses = map[string][]string{
	PathDirect: {RoleBackend, procHarness},
	PathRelay:  {RoleGateway, RoleAgent, RoleBackend, procHarness},
	PathTarget: {procHarness},
}

func newResult(cfg *Config, sc scenario, run *pathRun, st *stack, peaks map[string]int64) Result {
	secs := run.elapsed.Seconds()
	l := sc.load(cfg, run.path)
	r := Result{
		Scenario: sc.name, Path: run.path.name, Kind: sc.kind(), Method: sc.method, BodyBytes: sc.bodyBytes(),
		Concurrency: l.workers, Rate: l.rate, DurationS: secs,
		Exchanges: run.rec.exchanges.Load(), Errors: run.rec.errors.Load(), Unfinished: run.rec.unfinished.Load(),
		Processes: make(map[string]Process),
	}
	bytesMoved := run.rec.bytes.Load()
	if secs > 0 {
		r.RequestsPerS = float64(r.Exchanges) / secs
		r.MBPerS = float64(bytesMoved) / secs / 1e6
	}
	if lat, ok := run.rec.latency(); ok {
		r.P50MS, r.P90MS, r.P99MS, r.P999MS, r.MaxMS = &lat.P50, &lat.P90, &lat.P99, &lat.P999, &lat.Max
	}
	run.rec.mu.Lock()
	r.ErrorSamples = append([]string(nil), run.rec.samples...)
	run.rec.mu.Unlock()
	measured := make(map[string]bool)
	for _, m := range st.meters {
		measured[m.name] = true
	}
	for _, name := range pathProcesses[run.path.name] {
		if !measured[name] {
			continue
		}
		cpu := run.cpu[name]
		p := Process{CPUS: cpu.Seconds()}
		if r.Exchanges > 0 {
			p.CPUSPer1k = ptr(cpu.Seconds() / float64(r.Exchanges) * 1000)
		}
		if bytesMoved > 0 {
			p.CPUSPerGiB = ptr(cpu.Seconds() / (float64(bytesMoved) / (1 << 30)))
		}
		if peak, ok := peaks[name]; ok {
			p.PeakRSSMiB = ptr(float64(peak) / (1 << 20))
		}
		r.Processes[name] = p
	}
	return r
}

// setRatios sets every result's throughput ratio to the direct path's.
func setRatios(results []Result, sc scenario) {
	throughput := func(r *Result) float64 {
		if sc.transfer {
			return r.MBPerS
		}
		return r.RequestsPerS
	}
	var direct *Result
	for i := range results {
		if results[i].Path == PathDirect {
			direct = &results[i]
		}
	}
	if direct == nil || throughput(direct) == 0 {
		return
	}
	for i := range results {
		results[i].RatioToDirect = ptr(throughput(&results[i]) / throughput(direct))
	}
}

func ptr[T any](v T) *T { return &v }

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
