//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/bench"
	"github.com/sallyport/sallyport/internal/gctune"
)

// benchFlags are the flags of `sallyport bench`.
type benchFlags struct {
	scenarios           []string
	duration            time.Duration
	rounds              int
	warmup              time.Duration
	concurrency         int
	transferConcurrency int
	rate                float64
	transferSize        string
	target, host        string
	directTarget        string
	inprocess           bool
	cpuprofile          string
	memprofile          string
	trace               string
	jsonFile            string
	svgFile             string
	sseInterval         time.Duration
	longpoll            int
	burst               int
	linkRTT             time.Duration
	linkRate            string
	quick               bool
	transport           string
	references          []string
	relayProcs          int
	relayEnv            []string
	targetPIDs          []string
	serveBackend        string
	logLevel            string // bench's own --log-level, in place of the global one
	role                string // hidden: run one role as a child of the harness
}

// quickDuration is the per-path time of --quick: three scenarios, two
// paths, plus warm-ups and start-up stay well under 45 s on 2 cores.
const quickDuration = 3 * time.Second

func newBenchCmd(g *globals) *cobra.Command {
	cmd, _ := newBenchCmdFlags(g)
	return cmd
}

// newBenchCmdFlags is newBenchCmd with the flags it fills in.
func newBenchCmdFlags(g *globals) (*cobra.Command, *benchFlags) {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench [--quick] [--scenarios small,1k,download] [--target URL --host NAME]",
		Short: "Measure the relay against the direct path on loopback (req/s, MB/s, latency, CPU, memory)",
		Long: "bench starts a backend, a gateway and an agent on 127.0.0.1 (each its own process unless\n" +
			"--inprocess) and drives the same load straight at the backend (direct) and through the relay,\n" +
			"in alternating rounds, then prints a markdown table with every relay figure as a ratio to\n" +
			"direct. --reference tcp,tls,stdlib adds, in the same rounds, two chained byte forwarders (plain,\n" +
			"and with TLS between them) and one standard-library reverse proxy: what any relay with these hops costs. With --target it measures any HTTP endpoint (another relay in front of\n" +
			"`sallyport bench --serve-backend ADDR`) with the same client.\n\n" +
			"Scenarios: " + strings.Join(bench.ScenarioNames, ", ") + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.scenarios, "scenarios", nil, "scenarios to run, comma-separated (default "+strings.Join(bench.DefaultScenarios, ",")+")")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "measured time per scenario and path, split over --rounds")
	fl.IntVar(&f.rounds, "rounds", 3, "rounds per path and scenario; direct and relay alternate")
	fl.DurationVar(&f.warmup, "warmup", 0, "unmeasured warm-up per scenario and path (0: a tenth of --duration, at most 1s; negative: none)")
	fl.IntVar(&f.concurrency, "concurrency", 64, "closed-loop workers (connections) of the request scenarios")
	fl.IntVar(&f.transferConcurrency, "transfer-concurrency", 4, "workers of the download and upload scenarios")
	fl.Float64Var(&f.rate, "rate", 0, "open loop: exchanges per second (request scenarios), latency from the scheduled time; 0: closed loop")
	fl.StringVar(&f.transferSize, "transfer-size", "100MiB", "body size of download and upload (bytes, or with KiB, MiB, GiB)")
	fl.StringVar(&f.target, "target", "", "measure this base URL (http://host:port) instead of starting a relay")
	fl.StringVar(&f.host, "host", "", "Host header sent to --target (default: the target's host)")
	fl.StringVar(&f.directTarget, "direct-target", "", "with --target: the backend's own base URL, measured as the direct path")
	fl.Var((*repeatedFlag)(&f.targetPIDs), "target-pid", "with --target: also measure this process of it, ROLE=PID, ROLE being where it stands ("+
		strings.Join(bench.TargetRoles, ", ")+"): CPU, RSS and long-poll growth from /proc (Linux); repeat for each")
	fl.DurationVar(&f.sseInterval, "sse-interval", 10*time.Millisecond, "sse: time between the events of each of the --concurrency streams")
	fl.IntVar(&f.longpoll, "longpoll", 10000, "longpoll: exchanges held open at once (fewer, with a note, when the open-file limit is lower and this is not set)")
	fl.IntVar(&f.burst, "burst", 500, "burst: concurrent GETs sent before each series of measured sequential ones")
	fl.DurationVar(&f.linkRTT, "link-rtt", 0, "emulate a link with this round trip time between gateway and agent (e.g. 20ms)")
	fl.StringVar(&f.linkRate, "link-rate", "", "emulate a link of this rate each way between gateway and agent (e.g. 100mbit, 1gbit, 512kbit)")
	fl.BoolVar(&f.inprocess, "inprocess", false, "run backend, gateway and agent in this process (for profiling)")
	fl.StringVar(&f.cpuprofile, "cpuprofile", "", "write CPU profiles: FILE.backend, FILE.gateway, FILE.agent (one per process); with --inprocess one FILE")
	fl.StringVar(&f.trace, "trace", "", "write execution traces for go tool trace: FILE.backend, FILE.gateway, FILE.agent; with --inprocess one FILE "+
		"(about 250 bytes per exchange and process: use a short --duration)")
	fl.StringVar(&f.memprofile, "memprofile", "", "write heap profiles at the end: FILE.backend, FILE.gateway, FILE.agent; with --inprocess one FILE; "+
		"longpoll also writes them while its exchanges are held: FILE.held.PATH.PROCESS (e.g. FILE.held.relay.gateway), "+
		"with each process's goroutines then in FILE.held.PATH.PROCESS.goroutines")
	fl.StringVar(&f.jsonFile, "json", "", "also write the figures as JSON to this file")
	fl.StringVar(&f.svgFile, "svg", "", "also draw the latency percentiles, direct against relay, as SVG to this file")
	fl.BoolVar(&f.quick, "quick", false, "a short run: small, 1k and download, 3s per path")
	fl.StringVar(&f.transport, "transport", bench.TransportGRPC, "tunnel transport between agent and gateway: "+strings.Join(bench.Transports, ", "))
	fl.StringSliceVar(&f.references, "reference", nil, "also measure reference paths in the same rounds, comma-separated: "+
		"tcp (two chained byte-forwarding processes, path tcp-forward), tls (the same with TLS between them, path tls-forward), "+
		"stdlib (one httputil.ReverseProxy process, path stdlib-proxy)")
	fl.Var((*repeatedFlag)(&f.relayEnv), "relay-env", "add KEY=VALUE to the environment of gateway, agent and the reference paths' processes (not the backend or the load), e.g. GOGC=200 or GODEBUG=...; repeat for more")
	fl.IntVar(&f.relayProcs, "relay-procs", 0, "GOMAXPROCS of gateway, agent and the reference paths' processes (not the backend or the load); 0: Go's default, one per CPU")
	fl.StringVar(&f.serveBackend, "serve-backend", "", "only serve the bench backend on this address until interrupted (to put another relay in front of it)")
	// The global --log-level defaults to info; bench's is error, and its
	// help says so. This flag stands in for the global one on bench only.
	// Info logs would bury the table, and so would the relay's warnings
	// about the exchanges cut off at the end of every round; the harness
	// counts failed exchanges itself.
	fl.StringVar(&f.logLevel, "log-level", "error", "log level: debug|info|warn|error (bench's default keeps the relay's logs from burying the table)")
	fl.StringVar(&f.role, "role", "", "run one role of the harness (internal)")
	_ = fl.MarkHidden("role")
	return cmd, f
}

func runBench(cmd *cobra.Command, g *globals, f *benchFlags) error {
	g.logLevel = f.logLevel // errors only unless asked: see the flag
	log, err := g.logger()
	if err != nil {
		return err
	}
	if g.logLevel == "error" {
		// The gateway raises its HTTP server's log to warn, which zap
		// refuses on an error-level core with a note on its error output;
		// the refusal changes nothing here.
		log = log.WithOptions(zap.ErrorOutput(zapcore.AddSync(io.Discard)))
	}
	defer log.Sync() //nolint:errcheck // stderr
	if f.role != "" {
		return runBenchRole(f, log)
	}
	ctx, stop := signalContext(log)
	defer stop()
	out := cmd.OutOrStdout()
	cfg, err := f.config(cmd, g)
	if err != nil {
		return err
	}
	if f.serveBackend != "" {
		return bench.ServeBackend(ctx, f.serveBackend, func(addr string) {
			fmt.Fprintf(out, "bench backend listening on http://%s (GET /bytes/N, POST /upload, /sse, /ws, /longpoll); Ctrl-C stops it\n", addr)
		})
	}
	cfg.Log = log
	if isTerminal(os.Stderr) {
		cfg.Progress = os.Stderr
	}
	var rep *bench.Report
	runErr := func() error {
		if !f.inprocess {
			var err error
			rep, err = bench.Run(ctx, cfg) // the children profile themselves
			return err
		}
		return withProfiles(f.cpuprofile, f.memprofile, f.trace, func() error {
			var err error
			rep, err = bench.Run(ctx, cfg)
			return err
		})
	}()
	if rep != nil && len(rep.Results) > 0 {
		if err := writeBenchReport(rep, out, cmd.ErrOrStderr(), f.jsonFile, f.svgFile); err != nil {
			return err
		}
	}
	if runErr != nil && ctx.Err() != nil {
		return errors.New("bench: interrupted")
	}
	return runErr
}

// serveBackendAlone refuses the flags that --serve-backend would ignore:
// it serves the backend and measures nothing.
func serveBackendAlone(cmd *cobra.Command) error {
	var ignored []string
	cmd.Flags().Visit(func(fl *pflag.Flag) {
		switch fl.Name {
		case "serve-backend", "log-level", "log-format":
		default:
			ignored = append(ignored, "--"+fl.Name)
		}
	})
	if len(ignored) > 0 {
		return fmt.Errorf("--serve-backend only serves the bench backend and measures nothing; %s would be ignored", strings.Join(ignored, ", "))
	}
	return nil
}

// scenarioFlags are the flags that set what only some scenarios use, with
// the harness's setting each stands for (see bench.SettingScenarios).
var scenarioFlags = []struct{ flag, setting string }{
	{"duration", "Duration"}, {"rounds", "Rounds"}, {"warmup", "Warmup"},
	{"concurrency", "Concurrency"}, {"rate", "Rate"},
	{"transfer-size", "TransferSize"}, {"transfer-concurrency", "TransferConcurrency"},
	{"sse-interval", "SSEInterval"}, {"longpoll", "Longpoll"}, {"burst", "Burst"},
}

// checkScenarioFlags refuses a flag given for a run without any of the
// scenarios it applies to (--longpoll without longpoll, --transfer-size
// without download or upload, …): it would be ignored, and the figures
// would not be what its user thinks.
func (f *benchFlags) checkScenarioFlags(changed func(string) bool) error {
	run, which := f.scenarios, "--scenarios "+strings.Join(f.scenarios, ",")
	switch {
	case changed("scenarios"):
	case f.quick:
		run, which = bench.QuickScenarios, "--quick ("+strings.Join(bench.QuickScenarios, ",")+")"
	default:
		return nil // every scenario
	}
	var ignored []string
	for _, sf := range scenarioFlags {
		if !changed(sf.flag) {
			continue
		}
		uses := bench.SettingScenarios(sf.setting)
		if !slices.ContainsFunc(run, func(name string) bool { return slices.Contains(uses, strings.TrimSpace(name)) }) {
			ignored = append(ignored, fmt.Sprintf("--%s (for %s)", sf.flag, strings.Join(uses, ", ")))
		}
	}
	switch len(ignored) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%s would be ignored: %s runs none of the scenarios it is for; add one, or leave the flag out", ignored[0], which)
	}
	return fmt.Errorf("%s would be ignored: %s runs none of the scenarios they are for; add them, or leave the flags out",
		strings.Join(ignored, ", "), which)
}

// config turns the flags into the harness's config. With --serve-backend
// there is none: it only checks that no other flag is given.
func (f *benchFlags) config(cmd *cobra.Command, g *globals) (bench.Config, error) {
	if f.serveBackend != "" {
		return bench.Config{}, serveBackendAlone(cmd)
	}
	changed := cmd.Flags().Changed
	if changed("scenarios") && len(f.scenarios) == 0 {
		return bench.Config{}, fmt.Errorf("--scenarios: name at least one of %s", strings.Join(bench.ScenarioNames, ", "))
	}
	if f.rate != 0 && !(f.rate >= 0.001 && f.rate <= 1e9) { // NaN fails both
		return bench.Config{}, fmt.Errorf("--rate %v: want exchanges per second from 0.001 to 1e9, or 0 for closed loop", f.rate)
	}
	if err := f.checkScenarioFlags(changed); err != nil {
		return bench.Config{}, err
	}
	// Profiles are written by each child to FILE.ROLE (all in FILE's
	// directory), or to FILE with --inprocess. A child that cannot create
	// its file cannot start; better to know before anything starts.
	profile := func(name string) string {
		if name == "" || f.inprocess {
			return name
		}
		return name + "." + bench.RoleBackend
	}
	for _, out := range []struct{ flag, name string }{
		{"--json", f.jsonFile}, {"--svg", f.svgFile},
		{"--cpuprofile", profile(f.cpuprofile)}, {"--memprofile", profile(f.memprofile)}, {"--trace", profile(f.trace)},
	} {
		if err := checkWritable(out.name); err != nil {
			return bench.Config{}, fmt.Errorf("%s: %w", out.flag, err)
		}
	}
	if !slices.Contains(bench.Transports, f.transport) {
		return bench.Config{}, fmt.Errorf("--transport %q: this build has %s", f.transport, strings.Join(bench.Transports, ", "))
	}
	for _, r := range f.references {
		if !slices.Contains(bench.References, strings.TrimSpace(r)) {
			return bench.Config{}, fmt.Errorf("--reference %q: there are %s", r, strings.Join(bench.References, ", "))
		}
	}
	if len(f.references) > 0 && f.target != "" {
		return bench.Config{}, errors.New("--reference paths stand beside the relay the harness starts; with --target nothing is started")
	}
	if (f.cpuprofile != "" || f.memprofile != "" || f.trace != "") && f.target != "" {
		return bench.Config{}, errors.New("--cpuprofile, --memprofile and --trace profile the relay the harness starts; with --target nothing is started")
	}
	if changed("transport") && f.target != "" {
		return bench.Config{}, errors.New("--transport picks the tunnel of the relay the harness starts; with --target nothing is started, " +
			"so the other relay's own transport is what gets measured: leave --transport out")
	}
	if (f.relayProcs != 0 || len(f.relayEnv) > 0) && (f.inprocess || f.target != "") {
		return bench.Config{}, errors.New("--relay-procs and --relay-env set up the relay processes the harness starts; " +
			"with --inprocess or --target it starts none: leave them out")
	}
	if (f.linkRTT != 0 || f.linkRate != "") && f.target != "" {
		return bench.Config{}, errors.New("--link-rtt and --link-rate shape the tunnel of the relay the harness starts; with --target there is none")
	}
	if f.linkRTT < 0 {
		return bench.Config{}, fmt.Errorf("--link-rtt %v: want a positive duration such as 20ms", f.linkRTT)
	}
	var linkRate int64
	if f.linkRate != "" {
		r, err := parseRate(f.linkRate)
		if err != nil {
			return bench.Config{}, fmt.Errorf("--link-rate: %w", err)
		}
		linkRate = r
	}
	if f.sseInterval < 100*time.Microsecond {
		return bench.Config{}, fmt.Errorf("--sse-interval %v: want at least 100µs", f.sseInterval)
	}
	if f.longpoll <= 0 || f.burst <= 0 {
		return bench.Config{}, errors.New("--longpoll and --burst must be positive")
	}
	if f.target == "" && (f.host != "" || f.directTarget != "" || len(f.targetPIDs) > 0) {
		return bench.Config{}, errors.New("--host, --direct-target and --target-pid go with --target")
	}
	targetPIDs, err := parseTargetPIDs(f.targetPIDs)
	if err != nil {
		return bench.Config{}, err
	}
	if f.target != "" && f.inprocess {
		return bench.Config{}, errors.New("--inprocess starts a relay; --target measures one already running: pick one")
	}
	size, err := parseSize(f.transferSize)
	if err != nil {
		return bench.Config{}, fmt.Errorf("--transfer-size: %w", err)
	}
	cfg := bench.Config{
		Scenarios:           f.scenarios,
		Duration:            f.duration,
		Rounds:              f.rounds,
		Warmup:              f.warmup,
		Concurrency:         f.concurrency,
		TransferConcurrency: f.transferConcurrency,
		Rate:                f.rate,
		TransferSize:        size,
		Target:              f.target,
		Host:                f.host,
		DirectTarget:        f.directTarget,
		SSEInterval:         f.sseInterval,
		Burst:               f.burst,
		LinkRTT:             f.linkRTT,
		LinkRate:            linkRate,
		Transport:           f.transport,
		References:          f.references,
		RelayProcs:          f.relayProcs,
		RelayEnv:            f.relayEnv,
		TargetPIDs:          targetPIDs,
	}
	if f.memprofile != "" {
		cfg.HeldProfile = f.memprofile + ".held"
	}
	if changed("longpoll") {
		cfg.Longpoll = f.longpoll // else the harness's default, fitted to the open-file limit
	}
	if f.quick {
		if !changed("scenarios") {
			cfg.Scenarios = bench.QuickScenarios
		}
		if !changed("duration") {
			cfg.Duration = quickDuration
		}
	}
	if f.concurrency <= 0 || f.transferConcurrency <= 0 || f.rounds <= 0 || f.duration <= 0 {
		return bench.Config{}, errors.New("--concurrency, --transfer-concurrency, --rounds and --duration must be positive")
	}
	if !f.inprocess && f.target == "" {
		exe, err := os.Executable()
		if err != nil {
			return bench.Config{}, fmt.Errorf("find this binary to start the relay processes: %w (or use --inprocess)", err)
		}
		level, format, flush := g.logLevel, g.logFormat, g.logFlush
		cfg.Spawn = func(role string) *exec.Cmd {
			args := []string{"bench", "--role", role, "--log-level", level, "--log-format", format,
				"--log-flush-interval", flush.String()}
			if f.cpuprofile != "" {
				args = append(args, "--cpuprofile", f.cpuprofile+"."+role)
			}
			if f.memprofile != "" {
				args = append(args, "--memprofile", f.memprofile+"."+role)
			}
			if f.trace != "" {
				args = append(args, "--trace", f.trace+"."+role)
			}
			c := exec.Command(exe, args...)
			c.Stderr = os.Stderr
			return c
		}
	}
	return cfg, nil
}

// runBenchRole is a child of the harness: one role, driven over stdin and
// stdout, profiled when the harness passed --cpuprofile, --memprofile or
// --trace.
// Ctrl-C in a terminal reaches the whole process group; the harness decides
// when its children stop (by closing their stdin), so a child ignores
// SIGINT. SIGTERM still stops it.
func runBenchRole(f *benchFlags, log *zap.Logger) error {
	signal.Ignore(os.Interrupt)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if f.role == bench.RoleGateway || f.role == bench.RoleAgent {
		// Stands for a gateway or agent process: the same collector
		// settings as `sallyport gateway` and `sallyport agent`.
		defer gctune.Start(0).Stop()
	}
	started := false
	err := withProfiles(f.cpuprofile, f.memprofile, f.trace, func() error {
		started = true
		return bench.RunRole(ctx, f.role, os.Stdin, os.Stdout, log.Named(f.role))
	})
	if err != nil && !started {
		// A profile could not start, so neither does the role: the
		// harness is told why, and says it, rather than that its child
		// exited.
		return bench.RefuseRole(os.Stdin, os.Stdout, err)
	}
	return err
}

// withProfiles runs fn under a CPU profile written to cpuFile and an
// execution trace written to traceFile, and writes a heap profile to
// memFile after it; an empty name skips its file.
func withProfiles(cpuFile, memFile, traceFile string, fn func() error) error {
	for _, r := range []struct {
		file, what string
		start      func(io.Writer) error
		stop       func()
	}{
		{traceFile, "trace", trace.Start, trace.Stop},
		{cpuFile, "cpu profile", pprof.StartCPUProfile, pprof.StopCPUProfile},
	} {
		if r.file == "" {
			continue
		}
		f, err := os.Create(r.file)
		if err != nil {
			return fmt.Errorf("%s: %w", r.what, err)
		}
		defer f.Close()
		if err := r.start(f); err != nil {
			return fmt.Errorf("%s: %w", r.what, err)
		}
		defer r.stop()
	}
	err := fn()
	if memFile != "" {
		if perr := bench.WriteHeapProfile(memFile); perr != nil {
			return errors.Join(err, fmt.Errorf("heap profile: %w", perr))
		}
	}
	return err
}

// writeBenchReport prints the table, notes the errors on stderr and writes
// the JSON and SVG files if asked.
func writeBenchReport(rep *bench.Report, out, errOut io.Writer, jsonFile, svgFile string) error {
	if err := rep.WriteMarkdown(out); err != nil {
		return err
	}
	for _, r := range rep.Results {
		if r.Errors > 0 {
			fmt.Fprintf(errOut, "bench: %s/%s: %d errors, e.g. %s\n", r.Scenario, r.Path, r.Errors, strings.Join(r.ErrorSamples, "; "))
		}
	}
	if err := writeOutput(jsonFile, rep.WriteJSON); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := writeOutput(svgFile, rep.WriteSVG); err != nil {
		return fmt.Errorf("--svg: %w", err)
	}
	return nil
}

// checkWritable makes sure, before a run that may take minutes, that
// writeOutput will be able to create name at its end: its directory takes
// a new file, and name is not a directory. The file itself is not made
// yet, so a run that ends without results leaves an earlier one alone. An
// empty name is fine.
func checkWritable(name string) error {
	if name == "" {
		return nil
	}
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory", name)
	}
	probe, err := os.CreateTemp(filepath.Dir(name), ".sallyport-bench-*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", name, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// writeOutput creates name and fills it with write; an empty name writes
// nothing.
func writeOutput(name string, write func(io.Writer) error) error {
	if name == "" {
		return nil
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// isTerminal reports whether f is a character device, as terminals are.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// parseRate reads a link rate in bits per second, as tc writes it: a
// number (decimals allowed) followed by bit, kbit, mbit or gbit (powers of
// 1000), e.g. 100mbit.
func parseRate(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"bit", 1}}
	low := strings.ToLower(strings.TrimSpace(s))
	for _, u := range units {
		if num, ok := strings.CutSuffix(low, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err == nil && v > 0 && v*u.mult >= 8000 && v*u.mult <= 1e12 {
				return int64(v * u.mult), nil
			}
			break
		}
	}
	return 0, fmt.Errorf("%q: want a rate from 8kbit to 1000gbit such as 100mbit, 1gbit or 512kbit", s)
}

// parseSize reads a byte count: a whole number, optionally followed by
// KiB, MiB or GiB (powers of 1024) or KB, MB or GB (powers of 1000).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
	}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q: want a size such as 1048576, 64KiB or 100MiB, at most 1 TiB", s)
	}
	return n * mult, nil
}

// parseTargetPIDs reads --target-pid's ROLE=PID entries; nil for none.
func parseTargetPIDs(entries []string) (map[string]int, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	out := make(map[string]int, len(entries))
	for _, e := range entries {
		role, pid, ok := strings.Cut(e, "=")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 || !slices.Contains(bench.TargetRoles, role) {
			return nil, fmt.Errorf("--target-pid %q: want ROLE=PID, ROLE one of %s and PID a process id, such as agent=$(pidof frpc)",
				e, strings.Join(bench.TargetRoles, ", "))
		}
		if _, dup := out[role]; dup {
			return nil, fmt.Errorf("--target-pid names the %s twice: one process stands in each place", role)
		}
		out[role] = n
	}
	return out, nil
}

// repeatedFlag is a flag whose every use adds one entry, commas and all
// (a GODEBUG value lists settings with commas). --help names its value
// "string", which is what each use takes.
type repeatedFlag []string

func (r *repeatedFlag) String() string     { return strings.Join(*r, " ") }
func (r *repeatedFlag) Set(v string) error { *r = append(*r, v); return nil }
func (r *repeatedFlag) Type() string       { return "string" }
