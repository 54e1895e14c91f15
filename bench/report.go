package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
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
	// Idle is the resident memory of the relay's processes once they are
	// up and idle, before any load; null when they are not measured (in
	// process, or a target).
	Idle    *Idle    `json:"idle"`
	Results []Result `json:"results"` // one per scenario and path, in run order
}

// Idle is the relay at rest: the agent's sessions are up, one probe
// exchange has gone through each path, and nothing else has.
type Idle struct {
	Sessions int `json:"sessions"` // the agent's tunnel sessions; 0 for a target's processes (not known)
	// RSSMiB is each process's resident set, by name ("gateway", "agent",
	// "backend", and the reference paths' "forwarder-a", "forwarder-b",
	// "stdlib-proxy").
	RSSMiB map[string]float64 `json:"rss_mib"`
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
	SSEIntervalMS       float64 `json:"sse_interval_ms"`
	Longpoll            int     `json:"longpoll"` // exchanges held at once
	Burst               int     `json:"burst"`    // concurrent GETs per burst
	LinkRTTMS           float64 `json:"link_rtt_ms"`
	// LinkRTTMeasuredMS is the median round trip of small messages through
	// the emulated link alone, measured at start: what its timers really
	// give on this machine. 0 without a link.
	LinkRTTMeasuredMS float64 `json:"link_rtt_measured_ms"`
	LinkRateMbit      float64 `json:"link_rate_mbit"` // 0: not limited
	// Transport is the tunnel transport of the relay the harness started;
	// empty in target mode, where none was started and the other relay's
	// transport is unknown here.
	Transport string `json:"transport"`
	// References are the reference paths asked for ("tcp", "stdlib");
	// empty without.
	References []string `json:"references"`
	// RelayGOMAXPROCS is the GOMAXPROCS of gateway, agent and the
	// reference processes when set (Config.RelayProcs); 0: Go's default.
	RelayGOMAXPROCS int `json:"relay_gomaxprocs"`
	// RelayEnv are the environment entries added to the same processes
	// (Config.RelayEnv); empty without.
	RelayEnv []string `json:"relay_env"`
	// TargetPIDs are the target's processes measured, by role
	// (Config.TargetPIDs); null without.
	TargetPIDs map[string]int `json:"target_pids"`
}

// Result is one scenario at one path.
type Result struct {
	Scenario string `json:"scenario"`
	// Path is PathDirect, PathRelay, PathTarget, or a reference path:
	// PathTCPForward ("tcp-forward") or PathStdlibProxy ("stdlib-proxy").
	Path string `json:"path"`
	// Kind says what one exchange is: "request" (a small GET; figure of
	// merit req/s), "transfer" (a large body; MB/s), "event" (one
	// server-sent event; events/s and latency), "message" (one WebSocket
	// echo; round trips/s), "held" (one long poll; errors and RSS per held
	// exchange) or "burst" (a GET right after a burst; latency).
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
	// MB/s for transfers, exchanges/s for the others. Null without a
	// direct path, and for longpoll and burst, whose figure of merit is
	// not a throughput.
	RatioToDirect *float64 `json:"ratio_to_direct"`
	// RoundRatios is the same ratio round by round: this path's throughput
	// in each round over the direct path's in the same round, in round
	// order (the paths alternate within a round). Their spread is the
	// machine's noise. Present where ratio_to_direct is and every round of
	// both paths was measured.
	RoundRatios []float64 `json:"round_ratios_to_direct,omitempty"`
	// roundRates is this path's throughput in each round (as RoundRatios
	// compares them).
	roundRates []float64
	// Held is the most long polls the backend held at once: on longpoll
	// results only, and there always, 0 included.
	Held *int64 `json:"held,omitempty"`
	// Processes holds the measured processes taking part in this path, by
	// name: "gateway", "agent", "backend", "forwarder-a", "forwarder-b",
	// "stdlib-proxy", and "harness" (the load generator; with --inprocess
	// everything).
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
	// RSSGrowthKiBPerHeld is how much the resident set grew while the long
	// polls were held, per held exchange, in KiB (longpoll only).
	RSSGrowthKiBPerHeld *float64 `json:"rss_growth_kib_per_held,omitempty"`
	// RSSGrowthAfterGCKiBPerHeld is the same growth read again after a
	// garbage collection that returned free memory, while still held: what
	// the held exchanges themselves keep (longpoll only).
	RSSGrowthAfterGCKiBPerHeld *float64 `json:"rss_growth_after_gc_kib_per_held,omitempty"`
	// GoroutinesPerHeld, GoStackKiBPerHeld and GoHeapKiBPerHeld are what
	// the Go runtime itself counts of that growth after the collection,
	// per held exchange: goroutines, KiB of goroutine stacks, KiB of live
	// heap objects (longpoll only, for the processes that report them).
	GoroutinesPerHeld *float64 `json:"goroutines_per_held,omitempty"`
	GoStackKiBPerHeld *float64 `json:"go_stack_kib_per_held,omitempty"`
	GoHeapKiBPerHeld  *float64 `json:"go_heap_kib_per_held,omitempty"`
}

func newReport(cfg *Config, mode string) *Report {
	refs, err := cfg.references()
	if err != nil {
		refs = []string{} // Run refused it before
	}
	transport := cfg.transport()
	if mode == ModeTarget {
		transport = "" // no tunnel of ours ran
	}
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
			SSEIntervalMS:       float64(cfg.sseInterval()) / float64(time.Millisecond),
			Longpoll:            cfg.longpoll(),
			Burst:               cfg.burst(),
			LinkRTTMS:           float64(cfg.LinkRTT) / float64(time.Millisecond),
			LinkRateMbit:        float64(cfg.LinkRate) / 1e6,
			Transport:           transport,
			References:          refs,
			RelayGOMAXPROCS:     cfg.RelayProcs,
			RelayEnv:            append([]string{}, cfg.RelayEnv...),
			TargetPIDs:          maps.Clone(cfg.TargetPIDs),
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
	PathDirect:      {RoleBackend, procHarness},
	PathRelay:       {RoleGateway, RoleAgent, RoleBackend, procHarness},
	PathTarget:      {RoleGateway, RoleAgent, RoleBackend, procHarness}, // those of Config.TargetPIDs
	PathTCPForward:  {RoleForwarderA, RoleForwarderB, RoleBackend, procHarness},
	PathTLSForward:  {RoleTLSForwarderA, RoleTLSForwarderB, RoleBackend, procHarness},
	PathStdlibProxy: {RoleStdlibProxy, RoleBackend, procHarness},
}

// pathHops names, for each path, the processes that stand where the relay's
// gateway and agent stand: the markdown table's gateway and agent columns.
// Empty: none.
var pathHops = map[string][2]string{
	PathRelay:       {RoleGateway, RoleAgent},
	PathTarget:      {RoleGateway, RoleAgent},
	PathTCPForward:  {RoleForwarderA, RoleForwarderB},
	PathTLSForward:  {RoleTLSForwarderA, RoleTLSForwarderB},
	PathStdlibProxy: {RoleStdlibProxy, ""},
}

func newResult(cfg *Config, sc scenario, run *pathRun, st *stack, peaks map[string]int64) Result {
	secs := run.elapsed.Seconds()
	l := sc.load(cfg, run.path)
	r := Result{
		Scenario: sc.name, Path: run.path.name, Kind: sc.kind, Method: sc.method, BodyBytes: sc.bodyBytes(),
		Concurrency: l.workers, Rate: l.rate, DurationS: secs,
		Exchanges: run.rec.exchanges.Load(), Errors: run.rec.errors.Load(), Unfinished: run.rec.unfinished.Load(),
		Processes: make(map[string]Process),
	}
	if sc.kind == kindHeld {
		r.Held = ptr(run.held)
	}
	bytesMoved := run.rec.bytes.Load()
	if secs > 0 {
		r.RequestsPerS = float64(r.Exchanges) / secs
		r.MBPerS = float64(bytesMoved) / secs / 1e6
	}
	if lat, ok := run.rec.latency(); ok {
		r.P50MS, r.P90MS, r.P99MS, r.P999MS, r.MaxMS = &lat.P50, &lat.P90, &lat.P99, &lat.P999, &lat.Max
	}
	for _, rf := range run.rounds {
		rate := 0.0
		if s := rf.elapsed.Seconds(); s > 0 {
			rate = float64(rf.exchanges) / s
			if sc.transfer() {
				rate = float64(rf.bytes) / s / 1e6
			}
		}
		r.roundRates = append(r.roundRates, rate)
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
		// No CPU at all means it was not measured (see cpuTime): no rates.
		if r.Exchanges > 0 && cpu > 0 {
			p.CPUSPer1k = ptr(cpu.Seconds() / float64(r.Exchanges) * 1000)
		}
		if bytesMoved > 0 && cpu > 0 {
			p.CPUSPerGiB = ptr(cpu.Seconds() / (float64(bytesMoved) / (1 << 30)))
		}
		if peak, ok := peaks[name]; ok {
			p.PeakRSSMiB = ptr(float64(peak) / (1 << 20))
		}
		if g, ok := run.growth[name]; ok {
			p.RSSGrowthKiBPerHeld = ptr(g / (1 << 10))
		}
		if g, ok := run.liveGrowth[name]; ok {
			p.RSSGrowthAfterGCKiBPerHeld = ptr(g / (1 << 10))
		}
		if g, ok := run.goGrowth[name]; ok {
			p.GoroutinesPerHeld = ptr(g.goroutines)
			p.GoStackKiBPerHeld = ptr(g.stackBytes / (1 << 10))
			p.GoHeapKiBPerHeld = ptr(g.heapBytes / (1 << 10))
		}
		r.Processes[name] = p
	}
	return r
}

// setRatios sets every result's throughput ratio to the direct path's.
func setRatios(results []Result, sc scenario) {
	if !sc.hasThroughput() {
		return
	}
	throughput := func(r *Result) float64 {
		if sc.transfer() {
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
		results[i].RoundRatios = roundRatios(results[i].roundRates, direct.roundRates)
	}
}

// roundRatios divides each round's rate by direct's in the same round; nil
// unless both have the same rounds and direct moved something in each.
func roundRatios(rates, direct []float64) []float64 {
	if len(rates) == 0 || len(rates) != len(direct) || slices.Contains(direct, 0) {
		return nil
	}
	out := make([]float64, len(rates))
	for k := range rates {
		out[k] = rates[k] / direct[k]
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
