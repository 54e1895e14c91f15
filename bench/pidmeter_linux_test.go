package bench

import (
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPIDMeter reads this process and a child from /proc: the CPU time
// agrees with getrusage's to within the 10 ms ticks, the RSS is the named
// process's own, and what only the harness's own children can do is
// refused with errNotOurs. Linux only (this file's name): the figures come
// from /proc.
func TestPIDMeter(t *testing.T) {
	// Use some CPU first (bounded), so that there are ticks to compare.
	sum := sha256.Sum256(nil)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if s, err := selfStats(); err == nil && s.CPU > 100*time.Millisecond {
			break
		}
		for range 1000 {
			sum = sha256.Sum256(sum[:])
		}
	}
	self, err := newPIDMeter(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := self.stats()
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := selfStats()
	if d := ours.CPU - ps.CPU; ps.CPU <= 0 || d < -30*time.Millisecond || d > 30*time.Millisecond {
		t.Errorf("CPU from /proc %v, from getrusage %v", ps.CPU, ours.CPU)
	}
	if ps.RSS <= 0 || ps.PeakRSS < ps.RSS || ps.Go != (goMemory{}) {
		t.Errorf("stats %+v: want RSS, a peak at least as high and no runtime figures", ps)
	}
	if err := self.resetPeak(); err != nil {
		t.Errorf("reset peak of a process of the same user: %v", err)
	}
	for name, f := range map[string]func() error{
		"freeMemory":       self.freeMemory,
		"heapProfile":      func() error { return self.heapProfile(t.TempDir() + "/heap") },
		"goroutineProfile": func() error { return self.goroutineProfile(t.TempDir() + "/g") },
	} {
		if err := f(); !errors.Is(err, errNotOurs) {
			t.Errorf("%s: %v, want errNotOurs", name, err)
		}
	}

	// A child that reads its stdin until it ends: its own RSS, far below this test
	// process's.
	child := exec.Command("cat")
	in, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	pid := child.Process.Pid
	cm, err := newPIDMeter(pid)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := cm.stats()
	if err != nil || cs.RSS <= 0 || cs.RSS*2 > ps.RSS {
		t.Errorf("child cat: %+v, %v; want an RSS of its own, below half of this process's %d", cs, err, ps.RSS)
	}
	in.Close()
	if err := child.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	// Gone: the meter made while it ran reads no more, and says why with
	// the pid (a run whose target restarted stops with this).
	if _, err := cm.stats(); err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(pid)+": ") ||
		!strings.Contains(err.Error(), "exits or restarts during the run") {
		t.Errorf("stats of a process that exited: %v", err)
	}
	// Nor can a new one be made, and it says how to check.
	if _, err := newPIDMeter(pid); err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(pid)+": ") || !strings.Contains(err.Error(), "is it running") {
		t.Errorf("meter of an exited process: %v", err)
	}
	if _, err := newPIDMeter(0); err == nil || !strings.Contains(err.Error(), "want a process id above 0") {
		t.Errorf("pid 0: %v", err)
	}
}
