// Package bench is the end-to-end load harness behind `sallyport bench`.
//
// It starts a backend, a gateway and an agent on loopback — as separate
// processes (the caller's binary re-executed, see Config.Spawn and RunRole)
// or all in this process — and drives the same load at two paths: straight
// at the backend (direct) and through the relay, and at the reference
// paths asked for (see reference.go). Each scenario runs every path in
// alternating rounds (direct, relay, relay, direct, …) so machine drift
// hits all, and every figure is reported as a ratio to the direct one. Latency goes into an HDR histogram; CPU time and peak RSS are
// read per process.
//
// Run flow:
//
//	check the config; raise the open-file limit and fit the long polls to it
//	start the stack (backend → gateway → [link forwarder] → agent with all its sessions
//	    → [reference paths: forwarders B and A, the stdlib proxy])
//	probe every path until it answers; read the idle relay's RSS
//	for each scenario:
//	    reset peak RSS of every process
//	    make one driver per path (HTTP load, SSE streams, WebSockets, long polls, bursts)
//	    warm up each path (not measured; none for long polls)
//	    for each round: for each path (order flips every round):
//	        read CPU of every process; run the driver for Duration/Rounds; read CPU again
//	    read peak RSS; build one Result per path; close the drivers
//	stop the stack (references → agent → link → gateway → backend)
//
// Nothing imports this package but cmd/sallyport.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Path names: the backend without a relay, the relay started here, and a
// relay under test given by Config.Target. The reference paths add
// PathTCPForward, PathTLSForward and PathStdlibProxy.
const (
	PathDirect = "direct"
	PathRelay  = "relay"
	PathTarget = "target"
)

// Modes say where the relay under test runs.
const (
	ModeProcesses = "processes" // backend, gateway and agent are child processes
	ModeInProcess = "inprocess" // all in the harness process
	ModeTarget    = "target"    // Config.Target: nothing is started
)

// Config is one harness run. Its zero value runs the default scenarios in
// this process for 10 s per path each. Fields say what their zero means.
type Config struct {
	// Scenarios names the scenarios to run, in order (see ScenarioNames).
	// Empty → DefaultScenarios.
	Scenarios []string
	// Duration is the measured time of each path in each scenario, split
	// evenly over Rounds (0 → 10s).
	Duration time.Duration
	// Rounds is how many times each path runs per scenario; direct and
	// relay alternate, and which goes first flips every round (0 → 3).
	Rounds int
	// Warmup runs each path once before a scenario's rounds, unmeasured, so
	// connections and streams exist (0 → a tenth of Duration, at most 1s;
	// negative → none).
	Warmup time.Duration
	// Concurrency is the number of workers (at most one connection each)
	// of the request scenarios (0 → 64).
	Concurrency int
	// TransferConcurrency is the number of workers of the transfer
	// scenarios, download and upload (0 → 4): 64 bodies of 100 MiB at once
	// would measure queueing, not the relay.
	TransferConcurrency int
	// Rate, when positive, makes the request scenarios open loop: Rate
	// exchanges per second are scheduled (0.001 to 10^9) and up to
	// Concurrency workers send them, latency counted from each one's
	// scheduled time; those no worker could send before a round ended count
	// as unfinished. Zero → closed loop. Transfer scenarios are always
	// closed loop.
	Rate float64
	// TransferSize is the body size of download and upload (0 → 100 MiB).
	TransferSize int64
	// Target, when set, is the base URL (http://host:port) of a relay
	// under test; nothing is started and Host is sent as its Host header
	// (empty → the host of Target). The backend behind it must serve the
	// paths of the scenarios (see ServeBackend). DirectTarget, when set, is
	// the base URL of that backend, measured as the direct path; empty → no
	// direct path and no ratios.
	Target, Host, DirectTarget string
	// TargetPIDs are processes of the target to measure (Linux, from
	// /proc), by the role they stand in: one of TargetRoles (the other
	// relay's server where the gateway stands, its connector where the
	// agent stands, the backend). Their CPU, RSS, idle RSS and long-poll
	// growth are reported as for the relay's own processes. Target mode
	// only; empty → only the harness is measured.
	TargetPIDs map[string]int
	// SSEInterval is how often the backend sends an event on each stream
	// of the sse scenario (0 → 10ms); there are Concurrency streams.
	SSEInterval time.Duration
	// Longpoll is how many exchanges the longpoll scenario holds open at
	// once (0 → 10,000, lowered with a note to what the open-file limit
	// allows; a larger value that does not fit is an error).
	Longpoll int
	// Burst is how many concurrent GETs the burst scenario sends before
	// each series of sequential, measured ones (0 → 500).
	Burst int
	// HeldProfile, when set, makes the longpoll scenario write a heap
	// profile of each process of a path while its exchanges are held,
	// after the RSS readings: to HeldProfile.PATH.PROCESS (such as
	// mem.held.relay.gateway), and its goroutines to the same name with
	// ".goroutines" after it. They show what one held exchange keeps,
	// which a profile taken at the end cannot. Empty → none.
	HeldProfile string
	// LinkRTT and LinkRate shape the tunnel between gateway and agent: the
	// agent dials a forwarder in the harness that delays each direction by
	// LinkRTT/2 and passes at most LinkRate bits per second each way
	// (zero: no delay, no rate limit; both zero: no forwarder).
	LinkRTT  time.Duration
	LinkRate int64
	// Transport is the tunnel transport between agent and gateway, one of
	// Transports (empty → "grpc").
	Transport string
	// References adds reference paths, measured in the same rounds as
	// direct and relay: "tcp" (path tcp-forward, two chained byte
	// forwarders), "tls" (path tls-forward, the same with TLS between
	// them) and "stdlib" (path stdlib-proxy, one
	// httputil.ReverseProxy); see reference.go. Empty → none. Not with a
	// Target.
	References []string
	// RelayProcs, when above 0, is the GOMAXPROCS of the processes that
	// stand between the client and the backend: gateway, agent and the
	// reference paths' forwarders and proxy (not the backend, not the
	// load). 0 → Go's default, one per CPU. Process mode only.
	RelayProcs int
	// RelayEnv are environment entries, KEY=VALUE, added to the
	// environment of the same processes as RelayProcs (gateway, agent, the
	// reference paths' processes; not the backend, not the load): runtime
	// settings to measure, such as GOGC or GODEBUG. A later entry for a
	// key wins. Process mode only.
	RelayEnv []string
	// Spawn returns the command that runs one role ("backend", "gateway"
	// or "agent") of the relay as its own process: a binary that calls
	// RunRole with that role, stdin and stdout. The harness sets Stdin and
	// Stdout; Stderr is the caller's to set. Nil → everything runs in this
	// process.
	Spawn func(role string) *exec.Cmd
	// Progress receives a progress line, redrawn in place, while the load
	// runs: give it a terminal. Nil → none.
	Progress io.Writer
	// Log receives the relay's logs in process mode and the harness's own
	// notes. Nil → none.
	Log *zap.Logger
}

func (c *Config) duration() time.Duration { return orDuration(c.Duration, 10*time.Second) }
func (c *Config) rounds() int             { return orInt(c.Rounds, 3) }
func (c *Config) concurrency() int        { return orInt(c.Concurrency, 64) }
func (c *Config) transferConcurrency() int {
	return orInt(c.TransferConcurrency, 4)
}
func (c *Config) transferSize() int64 {
	if c.TransferSize <= 0 {
		return 100 << 20
	}
	return c.TransferSize
}
func (c *Config) sseInterval() time.Duration { return orDuration(c.SSEInterval, 10*time.Millisecond) }
func (c *Config) burst() int                 { return orInt(c.Burst, 500) }
func (c *Config) longpoll() int              { return orInt(c.Longpoll, defaultLongpoll) }
func (c *Config) transport() string {
	if c.Transport == "" {
		return TransportGRPC
	}
	return c.Transport
}
func (c *Config) round() time.Duration { return c.duration() / time.Duration(c.rounds()) }

// roundLength is the length of round r (0-based) of Rounds: Duration split
// so that the rounds add up to it to the nanosecond. The first
// Duration % Rounds rounds take one nanosecond more than round(); cutting
// every round to round() left 1 s over 3 rounds measured as 0.999999999 s.
func (c *Config) roundLength(r int) time.Duration {
	n := time.Duration(c.rounds())
	if time.Duration(r) < c.duration()%n {
		return c.duration()/n + 1
	}
	return c.duration() / n
}
func (c *Config) warmup() time.Duration {
	switch {
	case c.Warmup < 0:
		return 0
	case c.Warmup > 0:
		return c.Warmup
	}
	return min(c.duration()/10, time.Second)
}
func (c *Config) log() *zap.Logger {
	if c.Log == nil {
		return zap.NewNop()
	}
	return c.Log
}
func (c *Config) mode() string {
	switch {
	case c.Target != "":
		return ModeTarget
	case c.Spawn != nil:
		return ModeProcesses
	}
	return ModeInProcess
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func orInt(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// Run starts the stack, runs every scenario and stops the stack. When ctx
// is cancelled part way it returns the scenarios finished so far together
// with ctx's error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	scenarios, err := cfg.scenarios()
	if err != nil {
		return nil, err
	}
	if cfg.Rate != 0 && !(cfg.Rate >= minRate && cfg.Rate <= maxRate) { // NaN fails both
		return nil, fmt.Errorf("bench: a rate of %v: want 0 (closed loop) or %v to %v exchanges per second", cfg.Rate, minRate, maxRate)
	}
	if cfg.round() < 10*time.Millisecond {
		return nil, fmt.Errorf("bench: a round of %v is too short; raise the duration or lower the rounds", cfg.round())
	}
	if err := checkTransport(cfg.transport()); err != nil {
		return nil, err
	}
	refs, err := cfg.references()
	if err != nil {
		return nil, err
	}
	if len(refs) > 0 && cfg.mode() == ModeTarget {
		return nil, errors.New("bench: reference paths stand beside the relay the harness starts; with a target nothing is started")
	}
	if cfg.RelayProcs < 0 {
		return nil, errors.New("bench: GOMAXPROCS of the relay processes must not be negative")
	}
	if cfg.RelayProcs > 0 && cfg.mode() != ModeProcesses {
		return nil, fmt.Errorf("bench: GOMAXPROCS of the relay processes needs processes mode, not %s: each process sets its own", cfg.mode())
	}
	for _, e := range cfg.RelayEnv {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsAny(k, " \t\r\n\x00") {
			return nil, fmt.Errorf("bench: relay environment entry %q: want KEY=VALUE, such as GOGC=200", e)
		}
	}
	if len(cfg.RelayEnv) > 0 && cfg.mode() != ModeProcesses {
		return nil, fmt.Errorf("bench: the relay processes' environment needs processes mode, not %s: only a new process reads it", cfg.mode())
	}
	if len(cfg.TargetPIDs) > 0 && cfg.mode() != ModeTarget {
		return nil, fmt.Errorf("bench: target processes are measured in target mode, not %s: the harness measures the processes it starts itself", cfg.mode())
	}
	for role := range cfg.TargetPIDs {
		if !slices.Contains(TargetRoles, role) {
			return nil, fmt.Errorf("bench: target process role %q: want one of %s", role, strings.Join(TargetRoles, ", "))
		}
	}
	if cfg.LinkRTT < 0 || cfg.LinkRate < 0 {
		return nil, errors.New("bench: the link's round trip time and rate must not be negative")
	}
	if (cfg.LinkRTT > 0 || cfg.LinkRate > 0) && cfg.mode() == ModeTarget {
		return nil, errors.New("bench: link emulation shapes the tunnel of the relay the harness starts; a target has none")
	}
	if (cfg.LinkRTT > 0 || cfg.LinkRate > 0) && cfg.transport() == TransportQUIC {
		return nil, errors.New("bench: --link-rtt and --link-rate shape a TCP link; QUIC runs over UDP: use grpc or yamux")
	}
	if cfg.Longpoll < 0 || cfg.Burst < 0 || cfg.SSEInterval < 0 {
		return nil, errors.New("bench: longpoll, burst and the SSE interval must not be negative")
	}
	if cfg.SSEInterval > 0 && cfg.SSEInterval < minSSEInterval {
		return nil, fmt.Errorf("bench: an SSE interval of %v is below the backend's %v", cfg.SSEInterval, minSSEInterval)
	}
	// A stream's first event comes one interval after it opens, and each
	// round opens its streams anew: an interval as long as a round gives no
	// event at all, a row of zeros that looks like a broken path.
	if slices.ContainsFunc(scenarios, func(sc scenario) bool { return sc.kind == kindEvent }) && cfg.sseInterval() >= cfg.round() {
		return nil, fmt.Errorf("bench: an SSE interval of %v is not shorter than a round (%v): no event would arrive in one; "+
			"shorten it (--sse-interval) or lengthen the rounds (--duration / --rounds)", cfg.sseInterval(), cfg.round())
	}
	// Raise the soft open-file limit to the hard one (children inherit
	// it); where it is unknown, the run says what fails.
	files, _ := raiseOpenFiles()
	if err := cfg.fitLongpoll(scenarios, files); err != nil {
		return nil, err
	}
	st, err := startStack(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer st.close()

	lg := newLoader(max(cfg.concurrency(), cfg.transferConcurrency()))
	defer lg.close()
	for _, p := range st.paths {
		if err := lg.probe(ctx, p, 15*time.Second); err != nil {
			return nil, fmt.Errorf("bench: the %s path does not answer: %w", p.name, err)
		}
	}

	report := newReport(&cfg, st.mode)
	report.Idle = st.idle()
	report.Settings.LinkRTTMeasuredMS = float64(st.linkRTT) / float64(time.Millisecond)
	for _, sc := range scenarios {
		results, err := runScenario(ctx, &cfg, st, lg, sc)
		if err != nil {
			return report, err
		}
		report.Results = append(report.Results, results...)
	}
	return report, nil
}

// pathRun is what one path of a scenario gathers over its rounds.
type pathRun struct {
	path    path
	rec     *recorder
	elapsed time.Duration
	rounds  []roundFigures           // each round's own figures, in round order
	cpu     map[string]time.Duration // CPU used during this path's rounds, by process
	// held is the most long polls held at once (longpoll only); growth is
	// each process's RSS growth while they were held, in bytes per held
	// exchange, by process, as the system saw it, and liveGrowth the same
	// after a garbage collection that returned free memory; goGrowth is
	// the Go runtime's own growth after that collection, per held exchange.
	held       int64
	growth     map[string]float64
	liveGrowth map[string]float64
	goGrowth   map[string]goHeld
}

// roundFigures is what one round of a path completed and moved, and how
// long it was measured: the figures of Result.RoundRatios.
type roundFigures struct {
	exchanges, bytes int64
	elapsed          time.Duration
}

// goHeld is the growth of a process's goMemory per held exchange.
type goHeld struct {
	goroutines, stackBytes, heapBytes float64
}

func newPathRun(p path) *pathRun {
	return &pathRun{
		path: p, rec: newRecorder(), cpu: make(map[string]time.Duration),
		growth: make(map[string]float64), liveGrowth: make(map[string]float64), goGrowth: make(map[string]goHeld),
	}
}

// runScenario runs one scenario's warm-up and rounds on every path.
func runScenario(ctx context.Context, cfg *Config, st *stack, lg *loader, sc scenario) ([]Result, error) {
	for _, m := range st.meters {
		if err := m.resetPeak(); err != nil {
			cfg.log().Debug("cannot reset peak RSS; peaks cover the whole run", zap.String("process", m.name), zap.Error(err))
		}
	}
	runs := make([]*pathRun, len(st.paths))
	drivers := make([]driver, len(st.paths))
	defer func() {
		for _, d := range drivers {
			if d != nil {
				d.close()
			}
		}
	}()
	for i, p := range st.paths {
		runs[i] = newPathRun(p)
		drivers[i] = sc.driver(cfg, st, lg, p)
		if w := sc.warmup(cfg); w > 0 {
			warm := newPathRun(p)
			drivers[i].round(ctx, w, warm, cfg.progress(sc.name+" "+p.name+" warm-up"))
		}
	}
	n := sc.rounds(cfg)
	for r := range n {
		for k := range runs {
			i := k
			if r%2 == 1 {
				i = len(runs) - 1 - k
			}
			run := runs[i]
			before, err := st.cpu()
			if err != nil {
				return nil, err
			}
			label := fmt.Sprintf("%s %s round %d/%d", sc.name, run.path.name, r+1, n)
			exchanges, bytes := run.rec.exchanges.Load(), run.rec.bytes.Load()
			elapsed := drivers[i].round(ctx, cfg.roundLength(r), run, cfg.progress(label))
			run.elapsed += elapsed
			run.rounds = append(run.rounds, roundFigures{
				exchanges: run.rec.exchanges.Load() - exchanges, bytes: run.rec.bytes.Load() - bytes, elapsed: elapsed,
			})
			after, err := st.cpu()
			if err != nil {
				return nil, err
			}
			for name, t := range after {
				run.cpu[name] += t - before[name]
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	peaks := st.peaks()
	results := make([]Result, len(runs))
	for i, run := range runs {
		results[i] = newResult(cfg, sc, run, st, peaks)
	}
	setRatios(results, sc)
	return results, nil
}
