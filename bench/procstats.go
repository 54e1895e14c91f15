package bench

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"time"
)

// procStats is one process's resource use so far.
type procStats struct {
	// CPU is user plus system CPU time since the process started.
	CPU time.Duration `json:"cpu_ns"`
	// PeakRSS is the highest resident set size since the process started
	// or since the last resetPeak, in bytes; 0 when unknown.
	PeakRSS int64 `json:"peak_rss_bytes"`
	// RSS is the resident set size now, in bytes; 0 when unknown.
	RSS int64 `json:"rss_bytes"`
	// Go is what the Go runtime itself counts now.
	Go goMemory `json:"go"`
}

// goMemory is a Go process's own count of where its memory is, from
// runtime/metrics: what the RSS figures cannot tell apart.
type goMemory struct {
	Goroutines int64 `json:"goroutines"`
	// StackBytes is the memory of goroutine stacks in use.
	StackBytes int64 `json:"stack_bytes"`
	// HeapBytes is the memory of heap objects: live ones and, until the
	// next collection has swept, dead ones.
	HeapBytes int64 `json:"heap_bytes"`
}

// goMetrics are the runtime/metrics samples goMemory is read from, in its
// fields' order.
var goMetrics = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/heap/objects:bytes",
}

// readGoMemory reads the calling process's goMemory.
func readGoMemory() goMemory {
	samples := make([]metrics.Sample, len(goMetrics))
	for i, name := range goMetrics {
		samples[i].Name = name
	}
	metrics.Read(samples)
	v := func(i int) int64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0 // not in this Go version
		}
		return int64(samples[i].Value.Uint64())
	}
	return goMemory{Goroutines: v(0), StackBytes: v(1), HeapBytes: v(2)}
}

// errNoCPUTime says this platform has no CPU time to read (not Unix): the
// CPU figures are left empty.
var errNoCPUTime = errors.New("CPU time is measured only on Unix")

// selfMeter measures the calling process.
type selfMeter struct{}

func (selfMeter) stats() (procStats, error) { return selfStats() }
func (selfMeter) resetPeak() error          { return resetPeak() }
func (selfMeter) freeMemory() error         { debug.FreeOSMemory(); return nil }
func (selfMeter) heapProfile(file string) error {
	return WriteHeapProfile(file)
}
func (selfMeter) goroutineProfile(file string) error {
	return writeGoroutineProfile(file)
}

// WriteHeapProfile writes the heap profile, as of a collection made now, to
// the file named file.
func WriteHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeGoroutineProfile writes every goroutine's stack, those with the same
// stack counted together (pprof's text form, debug=1), to the file named
// file.
func writeGoroutineProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("goroutine").WriteTo(f, 1); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// selfStats reads the calling process's CPU time (getrusage) and, where
// /proc exists, its peak and current RSS (VmHWM, VmRSS).
func selfStats() (procStats, error) {
	cpu, err := cpuTime()
	if err != nil && !errors.Is(err, errNoCPUTime) {
		return procStats{}, err
	}
	s := procStats{CPU: cpu, Go: readGoMemory()}
	s.readRSS("self")
	return s, nil
}

// readRSS sets the peak and current RSS (VmHWM, VmRSS) of /proc/PROC, PROC
// being "self" or a process id; where /proc does not exist both stay 0.
func (s *procStats) readRSS(proc string) {
	if status, err := os.ReadFile("/proc/" + proc + "/status"); err == nil {
		s.PeakRSS = statusKiB(status, "VmHWM:") << 10
		s.RSS = statusKiB(status, "VmRSS:") << 10
	}
}

// statusKiB reads a "Key:   1234 kB" line of /proc/PID/status.
func statusKiB(status []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(key)) {
			continue
		}
		fields := bytes.Fields(line[len(key):])
		if len(fields) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(string(fields[0]), 10, 64)
		return n
	}
	return 0
}

// resetPeak makes VmHWM start again from the current RSS (Linux: writing
// 5 to clear_refs), so each scenario gets its own peak.
func resetPeak() error { return resetPeakOf("self") }

// resetPeakOf is resetPeak for /proc/PROC, PROC being "self" or a process
// id (of the same user).
func resetPeakOf(proc string) error {
	f, err := os.OpenFile("/proc/"+proc+"/clear_refs", os.O_WRONLY, 0)
	if err != nil {
		return errors.Join(errors.New("reset peak RSS"), err)
	}
	_, err = f.WriteString("5")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
