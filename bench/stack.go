package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"time"

	"go.uber.org/zap"
)

// startTimeout bounds how long one role may take to start.
const startTimeout = 20 * time.Second

// path is one way to the backend that the load generator drives.
type path struct {
	name string // PathDirect, PathRelay or PathTarget
	base string // base URL, http://host:port
	host string // Host header; empty → base's
}

// processMeter reads one process's CPU time and peak RSS. It is declared
// here, where it is used; the harness itself and each child process have
// one.
type processMeter interface {
	stats() (procStats, error)
	resetPeak() error
	// freeMemory collects garbage and returns free memory to the system,
	// so that the RSS read next is what the process really holds.
	freeMemory() error
	// heapProfile writes the process's heap profile, after a collection,
	// to the file named file.
	heapProfile(file string) error
	// goroutineProfile writes the process's goroutines to the file named
	// file (see writeGoroutineProfile).
	goroutineProfile(file string) error
}

// meter is a processMeter and the process's name in the report.
type meter struct {
	name string
	processMeter
}

// Process names in the report.
const (
	procHarness = "harness" // the load generator; in process mode, everything
)

// stack is the system under test: the paths to drive, the processes to
// measure, and how to stop what was started.
type stack struct {
	mode    string
	paths   []path
	meters  []meter
	closers []func()      // run in reverse order by close
	linkRTT time.Duration // the emulated link's measured round trip; 0 without one
	// tempDirs hold the certificates the roles make and read as they
	// start; they are removed once everything is up (see startStack).
	tempDirs []string
}

// tempDir makes a directory for the roles' start-up files, removed by
// close at the latest.
func (st *stack) tempDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	st.tempDirs = append(st.tempDirs, dir)
	st.closers = append(st.closers, func() { os.RemoveAll(dir) })
	return dir, nil
}

// startStack starts what cfg asks for: nothing for a target, else a
// backend, a gateway and an agent, in child processes or in this one.
func startStack(ctx context.Context, cfg *Config) (*stack, error) {
	st := &stack{mode: cfg.mode(), meters: []meter{{procHarness, selfMeter{}}}}
	if st.mode == ModeTarget {
		if err := st.addTargets(cfg); err != nil {
			return nil, err
		}
		return st, nil
	}
	if err := st.startRelay(ctx, cfg); err != nil {
		st.close()
		return nil, err
	}
	// Every role has read its certificate files by now and never reads
	// them again: remove them at once, so that a harness killed mid-run
	// (SIGKILL, a second Ctrl-C) leaves no private key behind.
	for _, dir := range st.tempDirs {
		os.RemoveAll(dir)
	}
	return st, nil
}

func (st *stack) addTargets(cfg *Config) error {
	if cfg.DirectTarget != "" {
		base, _, err := baseURL(cfg.DirectTarget)
		if err != nil {
			return fmt.Errorf("--direct-target %w", err)
		}
		st.paths = append(st.paths, path{name: PathDirect, base: base})
	}
	base, host, err := baseURL(cfg.Target)
	if err != nil {
		return fmt.Errorf("--target %w", err)
	}
	if cfg.Host != "" {
		host = cfg.Host
	}
	st.paths = append(st.paths, path{name: PathTarget, base: base, host: host})
	for _, role := range TargetRoles { // in a fixed order: the errors, the meters
		pid, ok := cfg.TargetPIDs[role]
		if !ok {
			continue
		}
		m, err := newPIDMeter(pid)
		if err != nil {
			return fmt.Errorf("target's %s process: %w", role, err)
		}
		st.meters = append(st.meters, meter{role, m})
	}
	return nil
}

// baseURL checks an http:// URL and returns it without a trailing slash,
// and its host.
func baseURL(s string) (base, host string, err error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return "", "", fmt.Errorf("%q: want http://host:port", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return "", "", fmt.Errorf("%q: give only scheme, host and port; scenarios choose the path", s)
	}
	return "http://" + u.Host, u.Host, nil
}

func (st *stack) startRelay(ctx context.Context, cfg *Config) error {
	dir, err := st.tempDir("sallyport-bench-")
	if err != nil {
		return err
	}
	token := randomToken()
	b, err := st.start(ctx, cfg, RoleBackend, roleSpec{})
	if err != nil {
		return err
	}
	g, err := st.start(ctx, cfg, RoleGateway, roleSpec{Backend: "http://" + b.Addr, Token: token, Dir: dir})
	if err != nil {
		return err
	}
	stopGateway := len(st.closers) - 1
	tunnel, err := st.overLink(cfg, g.Tunnel)
	if err != nil {
		return err
	}
	_, err = st.start(ctx, cfg, RoleAgent, roleSpec{
		Gateway: tunnel, CAFile: g.CAFile, Token: token, Allow: []string{b.Addr}, Transport: cfg.transport(),
	})
	if err != nil {
		return err
	}
	// The gateway stops before the agent: an agent that left first would
	// leave the gateway's connector group empty, which it reports as an
	// error (its apps answer 503) at the end of every run.
	gw := st.closers[stopGateway]
	st.closers = append(slices.Delete(st.closers, stopGateway, stopGateway+1), gw)
	st.paths = []path{
		{name: PathDirect, base: "http://" + b.Addr},
		{name: PathRelay, base: "http://" + g.Addr, host: benchHost},
	}
	return st.startReferences(ctx, cfg, b.Addr)
}

// overLink returns the address to dial for target: target itself, or with
// link emulation a link to it, started here (the first one also measures
// the round trip the emulation gives).
func (st *stack) overLink(cfg *Config, target string) (string, error) {
	if cfg.LinkRTT == 0 && cfg.LinkRate == 0 {
		return target, nil
	}
	shape := newLinkShape(cfg.LinkRTT, cfg.LinkRate)
	l, err := startLink(target, shape)
	if err != nil {
		return "", err
	}
	st.closers = append(st.closers, l.close)
	if st.linkRTT == 0 {
		if st.linkRTT, err = measureLink(shape); err != nil {
			return "", fmt.Errorf("bench: link: %w", err)
		}
	}
	return l.addr(), nil
}

// start runs one role, as a child process when cfg.Spawn is set.
func (st *stack) start(ctx context.Context, cfg *Config, role string, spec roleSpec) (roleReady, error) {
	spawn := cfg.Spawn
	if role != RoleBackend {
		spec.Procs = cfg.RelayProcs
		spawn = withEnv(spawn, cfg.RelayEnv)
	}
	if spawn != nil {
		c, ready, err := startChild(ctx, spawn, role, spec)
		if err != nil {
			return roleReady{}, err
		}
		st.closers = append(st.closers, c.stop)
		st.meters = append(st.meters, meter{role, c})
		return ready, nil
	}
	return st.startLocal(ctx, cfg.log().Named(role), role, spec)
}

// startLocal runs one role in this process.
func (st *stack) startLocal(ctx context.Context, log *zap.Logger, role string, spec roleSpec) (roleReady, error) {
	rctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan roleReady, 1)
	done := make(chan error, 1)
	go func() { done <- runRole(rctx, role, spec, log, func(r roleReady) { readyc <- r }) }()
	stop := func() {
		cancel()
		<-done
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case r := <-readyc:
		st.closers = append(st.closers, stop)
		return r, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return roleReady{}, fmt.Errorf("bench: %s: %w", role, err)
	case <-timer.C:
		stop()
		return roleReady{}, fmt.Errorf("bench: %s: not ready within %v", role, startTimeout)
	case <-ctx.Done():
		stop()
		return roleReady{}, ctx.Err()
	}
}

// close stops what was started, last started first.
func (st *stack) close() {
	for i := len(st.closers) - 1; i >= 0; i-- {
		st.closers[i]()
	}
	st.closers = nil
}

// cpu reads the CPU time used so far by every measured process.
func (st *stack) cpu() (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(st.meters))
	for _, m := range st.meters {
		s, err := m.stats()
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", m.name, err)
		}
		out[m.name] = s.CPU
	}
	return out, nil
}

// pathMeters are the measured processes that take part in path.
func (st *stack) pathMeters(path string) []meter {
	var out []meter
	for _, m := range st.meters {
		if slices.Contains(pathProcesses[path], m.name) {
			out = append(out, m)
		}
	}
	return out
}

// idle reads the resident set of the relay's processes, when they are
// children, or of the target's processes given; nil otherwise.
func (st *stack) idle() *Idle {
	var out *Idle
	switch {
	case st.mode == ModeProcesses:
		out = &Idle{Sessions: agentSessions}
	case st.mode == ModeTarget && len(st.meters) > 1: // more than the harness
		out = &Idle{} // the target's sessions are not known here
	default:
		return nil
	}
	out.RSSMiB = make(map[string]float64)
	for _, m := range st.meters {
		if m.name == procHarness {
			continue
		}
		if s, err := m.stats(); err == nil && s.RSS > 0 {
			out.RSSMiB[m.name] = float64(s.RSS) / (1 << 20)
		}
	}
	return out
}

// peaks reads every measured process's peak RSS in bytes; a process whose
// peak is unknown is missing.
func (st *stack) peaks() map[string]int64 {
	out := make(map[string]int64, len(st.meters))
	for _, m := range st.meters {
		if s, err := m.stats(); err == nil && s.PeakRSS > 0 {
			out[m.name] = s.PeakRSS
		}
	}
	return out
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// withEnv returns spawn with env added to the environment of the commands
// it makes (Config.RelayEnv); spawn itself when env is empty.
func withEnv(spawn func(role string) *exec.Cmd, env []string) func(role string) *exec.Cmd {
	if spawn == nil || len(env) == 0 {
		return spawn
	}
	return func(role string) *exec.Cmd {
		c := spawn(role)
		if c == nil {
			return nil
		}
		base := c.Env
		if base == nil {
			base = os.Environ()
		}
		c.Env = append(slices.Clip(base), env...) // exec keeps a key's last entry
		return c
	}
}
