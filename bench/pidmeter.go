package bench

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// TargetRoles are the places a target's processes can be measured in
// (Config.TargetPIDs): where the gateway, the agent and the backend stand
// in the relay the harness starts, so that their figures land in the same
// columns and JSON names.
var TargetRoles = []string{RoleGateway, RoleAgent, RoleBackend}

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// Linux whatever the kernel's own tick.
const userHZ = 100

// errNotOurs says a process the harness did not start cannot be asked to
// collect its garbage or to write a profile.
var errNotOurs = errors.New("not a process the harness started: it cannot collect garbage or write profiles on request")

// pidMeter measures a process the harness did not start, a target's, from
// /proc (Linux): its CPU time (in 10 ms steps), RSS and peak RSS. The
// runtime's own figures (procStats.Go) stay zero.
type pidMeter struct{ pid int }

// newPIDMeter returns a meter of process pid, once one reading worked.
func newPIDMeter(pid int) (pidMeter, error) {
	m := pidMeter{pid}
	if pid <= 0 {
		return m, fmt.Errorf("pid %d: want a process id above 0", pid)
	}
	_, err := m.stats()
	return m, err
}

// stats reads the process's figures. A process that is not there (never
// was, exited, or was restarted under a new pid during the run) is an
// error that names the pid and says so.
func (m pidMeter) stats() (procStats, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.pid))
	if err != nil {
		return procStats{}, fmt.Errorf("pid %d: %w: is it running? A target's process that exits or restarts "+
			"during the run cannot be measured, and the figures come from /proc, which only Linux has", m.pid, err)
	}
	cpu, err := statCPU(stat)
	if err != nil {
		return procStats{}, fmt.Errorf("/proc/%d/stat: %w", m.pid, err)
	}
	s := procStats{CPU: cpu}
	s.readRSS(strconv.Itoa(m.pid))
	return s, nil
}

// statCPU reads user plus system CPU time from a /proc/PID/stat line. The
// command name, second, is in parentheses and may hold spaces and
// parentheses itself: the fields are counted from the last ")".
func statCPU(stat []byte) (time.Duration, error) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("no command name in parentheses")
	}
	// After the name: state (field 3), ..., utime (14), stime (15).
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, field := range f[11:13] {
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("CPU time %q: not a count of ticks", field)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

func (m pidMeter) resetPeak() error { return resetPeakOf(strconv.Itoa(m.pid)) }

func (pidMeter) freeMemory() error             { return errNotOurs }
func (pidMeter) heapProfile(string) error      { return errNotOurs }
func (pidMeter) goroutineProfile(string) error { return errNotOurs }
