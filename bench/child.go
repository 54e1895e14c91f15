package bench

// The process mode. The harness re-executes its own binary once per role;
// each child talks to it over stdin and stdout, one JSON value per line:
//
//	harness → child   roleSpec                  (first line)
//	child → harness   roleReady                 (once serving, or with Error set)
//	harness → child   "stats"                   child → harness: procStats
//	harness → child   "reset-peak"              child → harness: {} (or {"error": …})
//	harness → child   "free-memory"             child → harness: {} after a GC that returned free memory
//	harness → child   "heap-profile FILE"       child → harness: {} once its heap profile is in FILE
//	harness closes stdin                        the child stops gracefully and exits
//
// A child stops when its stdin ends, so children never outlive a harness
// that dies. Logs go to stderr.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/procstune"
	"github.com/sallyport/sallyport/internal/rawsock"
)

// Commands the harness sends a child.
const (
	cmdStats            = "stats"
	cmdResetPeak        = "reset-peak"
	cmdFreeMemory       = "free-memory"
	cmdHeapProfile      = "heap-profile"      // followed by a space and the file name
	cmdGoroutineProfile = "goroutine-profile" // followed by a space and the file name
)

// profileCommands are the commands that write a profile to a file, with
// what each writes.
var profileCommands = []struct {
	cmd, what string
	write     func(file string) error
}{
	{cmdHeapProfile, "heap profile", WriteHeapProfile},
	{cmdGoroutineProfile, "goroutine profile", writeGoroutineProfile},
}

// callTimeout bounds a child's answer to one command.
const callTimeout = 10 * time.Second

// ack answers a command that returns nothing.
type ack struct {
	Error string `json:"error,omitempty"`
}

// RunRole is the child side of the process mode: it reads a role spec from
// in, runs role (RoleBackend, RoleGateway or RoleAgent), reports on out once
// it serves, answers the harness's commands, and stops gracefully when in
// ends or ctx is cancelled. A role that fails to start reports the error on
// out and returns it.
func RunRole(ctx context.Context, role string, in io.Reader, out io.Writer, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	var outMu sync.Mutex
	write := func(v any) {
		b, _ := json.Marshal(v) // plain structs
		outMu.Lock()
		defer outMu.Unlock()
		_, _ = out.Write(append(b, '\n'))
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return errors.Join(errors.New("bench role: no spec on stdin"), sc.Err())
	}
	var spec roleSpec
	if err := json.Unmarshal(sc.Bytes(), &spec); err != nil {
		write(roleReady{Error: err.Error()})
		return fmt.Errorf("bench role: spec: %w", err)
	}
	relay := role == RoleGateway || role == RoleAgent
	if relay {
		// SALLYPORT_RAW_SOCKETS (--relay-env) as the commands read it.
		if err := rawsock.FromEnv(); err != nil {
			write(roleReady{Error: err.Error()})
			return fmt.Errorf("bench role: %w", err)
		}
	}
	if spec.Procs > 0 {
		runtime.GOMAXPROCS(spec.Procs)
	} else if relay {
		// Stands for a gateway or agent process: the same scheduler
		// settings as `sallyport gateway` and `sallyport agent`.
		defer procstune.Start(log).Stop()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readyc := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- runRole(ctx, role, spec, log, func(r roleReady) {
			r.Procs = runtime.GOMAXPROCS(0)
			write(r)
			close(readyc)
		})
	}()
	select {
	case <-readyc:
	case err := <-done:
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		write(roleReady{Error: err.Error()})
		return err
	}

	// Commands until stdin ends. The reading goroutine ends with stdin,
	// which for a child process is at the latest when the harness exits.
	lines := make(chan string)
	go func() {
		defer close(lines)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return <-done
		case line, ok := <-lines:
			if !ok {
				cancel()
				return <-done
			}
			switch line {
			case cmdStats:
				s, err := selfStats()
				if err != nil {
					write(ack{Error: err.Error()})
					continue
				}
				write(s)
			case cmdResetPeak:
				var a ack
				if err := resetPeak(); err != nil {
					a.Error = err.Error()
				}
				write(a)
			case cmdFreeMemory:
				debug.FreeOSMemory()
				write(ack{})
			default:
				write(profileCommand(line))
			}
		}
	}
}

// profileCommand runs one of profileCommands, or answers that line is no
// command.
func profileCommand(line string) ack {
	for _, pc := range profileCommands {
		if file, ok := strings.CutPrefix(line, pc.cmd+" "); ok && file != "" {
			if err := pc.write(file); err != nil {
				return ack{Error: pc.what + ": " + err.Error()}
			}
			return ack{}
		}
	}
	return ack{Error: fmt.Sprintf("unknown command %q", line)}
}

// RefuseRole is the child side of a role that cannot even start (a profile
// file it cannot create, say): it takes the harness's spec from in and
// answers with err as its ready line on out, so that the harness reports
// err instead of the child's exit. It returns err.
func RefuseRole(in io.Reader, out io.Writer, err error) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	// The spec: read so that the harness's write of it succeeds; what it
	// says no longer matters.
	sc.Scan()
	b, _ := json.Marshal(roleReady{Error: err.Error()}) // a plain struct
	_, _ = out.Write(append(b, '\n'))
	return err
}

// child is a role running in a child process, seen from the harness.
type child struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader

	mu      sync.Mutex // serialises commands and stop
	stopped bool       // guarded by mu
}

// startChild starts role with spawn, sends spec and waits for the child's
// ready line.
func startChild(ctx context.Context, spawn func(string) *exec.Cmd, role string, spec roleSpec) (*child, roleReady, error) {
	cmd := spawn(role)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, roleReady{}, fmt.Errorf("bench: %s: %w", role, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, roleReady{}, fmt.Errorf("bench: %s: %w", role, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, roleReady{}, fmt.Errorf("bench: start %s: %w", role, err)
	}
	c := &child{role: role, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	spec.Addr = "" // children listen on loopback ports of their choosing
	b, _ := json.Marshal(spec)
	var ready roleReady
	err = c.send(string(b))
	if err == nil {
		err = c.receive(ctx, startTimeout, &ready)
	}
	if err == nil && ready.Error != "" {
		err = errors.New(ready.Error)
	}
	if err == nil && spec.Procs > 0 && ready.Procs != spec.Procs {
		err = fmt.Errorf("runs with GOMAXPROCS %d, not the %d asked for", ready.Procs, spec.Procs)
	}
	if err != nil {
		c.stop()
		return nil, roleReady{}, fmt.Errorf("bench: %s: %w", role, err)
	}
	return c, ready, nil
}

func (c *child) send(line string) error {
	_, err := io.WriteString(c.stdin, line+"\n")
	return err
}

// receive reads one JSON line into v. A child that does not answer within
// timeout (or before ctx ends) is killed, which ends the read.
func (c *child) receive(ctx context.Context, timeout time.Duration, v any) error {
	type line struct {
		b   []byte
		err error
	}
	got := make(chan line, 1)
	go func() {
		b, err := c.out.ReadBytes('\n')
		got <- line{b, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var l line
	select {
	case l = <-got:
	case <-timer.C:
		_ = c.cmd.Process.Kill()
		<-got
		return fmt.Errorf("no answer within %v", timeout)
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		<-got
		return ctx.Err()
	}
	if l.err != nil {
		return fmt.Errorf("exited: %w", l.err)
	}
	return json.Unmarshal(l.b, v)
}

// call sends a command and decodes its answer into v.
func (c *child) call(cmd string, v any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("stopped")
	}
	if err := c.send(cmd); err != nil {
		// Its stdin is closed only when it has exited: say so, not just
		// "broken pipe".
		return fmt.Errorf("exited (writing to it: %w)", err)
	}
	raw := json.RawMessage{}
	if err := c.receive(context.Background(), callTimeout, &raw); err != nil {
		return err
	}
	var a ack
	if err := json.Unmarshal(raw, &a); err == nil && a.Error != "" {
		return errors.New(a.Error)
	}
	return json.Unmarshal(raw, v)
}

func (c *child) stats() (procStats, error) {
	var s procStats
	err := c.call(cmdStats, &s)
	return s, err
}

func (c *child) resetPeak() error  { return c.call(cmdResetPeak, &ack{}) }
func (c *child) freeMemory() error { return c.call(cmdFreeMemory, &ack{}) }
func (c *child) heapProfile(file string) error {
	return c.call(cmdHeapProfile+" "+file, &ack{})
}
func (c *child) goroutineProfile(file string) error {
	return c.call(cmdGoroutineProfile+" "+file, &ack{})
}

// stop closes the child's stdin, which stops it gracefully, and kills it if
// it has not exited within the stop grace and a margin.
func (c *child) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	c.stdin.Close()
	exited := make(chan struct{})
	go func() {
		_ = c.cmd.Wait() // an exit status after a kill is expected
		close(exited)
	}()
	timer := time.NewTimer(stopGrace + 3*time.Second)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		_ = c.cmd.Process.Kill()
		<-exited
	}
}
