package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/bench"
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
	jsonFile            string
	quick               bool
	transport           string
	serveBackend        string
	role                string // hidden: run one role as a child of the harness
}

// quickDuration is the per-path time of --quick: three scenarios, two
// paths, plus warm-ups and start-up stay well under 45 s on 2 cores.
const quickDuration = 3 * time.Second

func newBenchCmd(g *globals) *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench [--quick] [--scenarios small,1k,download] [--target URL --host NAME]",
		Short: "Measure the relay against the direct path on loopback (req/s, MB/s, latency, CPU, memory)",
		Long: "bench starts a backend, a gateway and an agent on 127.0.0.1 (each its own process unless\n" +
			"--inprocess) and drives the same load straight at the backend (direct) and through the relay,\n" +
			"in alternating rounds, then prints a markdown table with every relay figure as a ratio to\n" +
			"direct. With --target it measures any HTTP endpoint (another relay in front of\n" +
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
	fl.DurationVar(&f.warmup, "warmup", 0, "unmeasured warm-up per scenario and path (0: a tenth of --duration, at most 1s)")
	fl.IntVar(&f.concurrency, "concurrency", 64, "closed-loop workers (connections) of the request scenarios")
	fl.IntVar(&f.transferConcurrency, "transfer-concurrency", 4, "workers of the download and upload scenarios")
	fl.Float64Var(&f.rate, "rate", 0, "open loop: exchanges per second (request scenarios), latency from the scheduled time; 0: closed loop")
	fl.StringVar(&f.transferSize, "transfer-size", "100MiB", "body size of download and upload (bytes, or with KiB, MiB, GiB)")
	fl.StringVar(&f.target, "target", "", "measure this base URL (http://host:port) instead of starting a relay")
	fl.StringVar(&f.host, "host", "", "Host header sent to --target (default: the target's host)")
	fl.StringVar(&f.directTarget, "direct-target", "", "with --target: the backend's own base URL, measured as the direct path")
	fl.BoolVar(&f.inprocess, "inprocess", false, "run backend, gateway and agent in this process (for profiling)")
	fl.StringVar(&f.cpuprofile, "cpuprofile", "", "with --inprocess: write a CPU profile of the whole run to this file")
	fl.StringVar(&f.memprofile, "memprofile", "", "with --inprocess: write a heap profile at the end to this file")
	fl.StringVar(&f.jsonFile, "json", "", "also write the figures as JSON to this file")
	fl.BoolVar(&f.quick, "quick", false, "a short run: small, 1k and download, 3s per path")
	fl.StringVar(&f.transport, "transport", "grpc", "tunnel transport: grpc, quic or yamux")
	fl.StringVar(&f.serveBackend, "serve-backend", "", "only serve the bench backend on this address until interrupted (to put another relay in front of it)")
	fl.StringVar(&f.role, "role", "", "run one role of the harness (internal)")
	_ = fl.MarkHidden("role")
	return cmd
}

func runBench(cmd *cobra.Command, g *globals, f *benchFlags) error {
	// Info logs would bury the table, and so would the relay's warnings
	// about the exchanges cut off at the end of every round: errors only,
	// unless asked. The harness counts failed exchanges itself.
	if !cmd.Flags().Changed("log-level") {
		g.logLevel = "error"
	}
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
		return runBenchRole(f.role, log)
	}
	ctx, stop := signalContext(log)
	defer stop()
	out := cmd.OutOrStdout()
	if f.serveBackend != "" {
		return bench.ServeBackend(ctx, f.serveBackend, func(addr string) {
			fmt.Fprintf(out, "bench backend listening on http://%s (GET /bytes/N, POST /upload); Ctrl-C stops it\n", addr)
		})
	}

	cfg, err := f.config(cmd, g)
	if err != nil {
		return err
	}
	cfg.Log = log
	if isTerminal(os.Stderr) {
		cfg.Progress = os.Stderr
	}
	if f.cpuprofile != "" {
		pf, err := os.Create(f.cpuprofile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, runErr := bench.Run(ctx, cfg)
	if f.memprofile != "" {
		if err := writeHeapProfile(f.memprofile); err != nil {
			return err
		}
	}
	if rep != nil && len(rep.Results) > 0 {
		if err := writeBenchReport(rep, out, cmd.ErrOrStderr(), f.jsonFile); err != nil {
			return err
		}
	}
	if runErr != nil && ctx.Err() != nil {
		return errors.New("bench: interrupted")
	}
	return runErr
}

// config turns the flags into the harness's config.
func (f *benchFlags) config(cmd *cobra.Command, g *globals) (bench.Config, error) {
	changed := cmd.Flags().Changed
	switch f.transport {
	case "grpc", "quic", "yamux":
	default:
		return bench.Config{}, fmt.Errorf("--transport %q: must be grpc, quic or yamux", f.transport)
	}
	if (f.cpuprofile != "" || f.memprofile != "") && !f.inprocess {
		return bench.Config{}, errors.New("--cpuprofile and --memprofile profile this process: add --inprocess")
	}
	if f.target == "" && (f.host != "" || f.directTarget != "") {
		return bench.Config{}, errors.New("--host and --direct-target go with --target")
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
		Transport:           f.transport,
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
		level, format := g.logLevel, g.logFormat
		cfg.Spawn = func(role string) *exec.Cmd {
			c := exec.Command(exe, "bench", "--role", role, "--log-level", level, "--log-format", format)
			c.Stderr = os.Stderr
			return c
		}
	}
	return cfg, nil
}

// runBenchRole is a child of the harness: one role, driven over stdin and
// stdout. Ctrl-C in a terminal reaches the whole process group; the harness
// decides when its children stop (by closing their stdin), so a child
// ignores SIGINT. SIGTERM still stops it.
func runBenchRole(role string, log *zap.Logger) error {
	signal.Ignore(os.Interrupt)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return bench.RunRole(ctx, role, os.Stdin, os.Stdout, log.Named(role))
}

// writeBenchReport prints the table, notes the errors on stderr and writes
// the JSON file if asked.
func writeBenchReport(rep *bench.Report, out, errOut io.Writer, jsonFile string) error {
	if err := rep.WriteMarkdown(out); err != nil {
		return err
	}
	for _, r := range rep.Results {
		if r.Errors > 0 {
			fmt.Fprintf(errOut, "bench: %s/%s: %d errors, e.g. %s\n", r.Scenario, r.Path, r.Errors, strings.Join(r.ErrorSamples, "; "))
		}
	}
	if jsonFile == "" {
		return nil
	}
	jf, err := os.Create(jsonFile)
	if err != nil {
		return err
	}
	if err := rep.WriteJSON(jf); err != nil {
		jf.Close()
		return err
	}
	return jf.Close()
}

func writeHeapProfile(path string) error {
	mf, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(mf); err != nil {
		mf.Close()
		return err
	}
	return mf.Close()
}

// isTerminal reports whether f is a character device, as terminals are.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
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
