package bench

import (
	"errors"
	"testing"
)

// fixedMeter is a processMeter whose stats are set by the test.
type fixedMeter struct {
	s   procStats
	err error
}

func (m *fixedMeter) stats() (procStats, error)          { return m.s, m.err }
func (m *fixedMeter) resetPeak() error                   { return nil }
func (m *fixedMeter) freeMemory() error                  { return nil }
func (m *fixedMeter) heapProfile(string) error           { return nil }
func (m *fixedMeter) goroutineProfile(file string) error { return nil }

// TestGrown: growth per held exchange from the base readings, RSS for every
// process that has it, the Go runtime's figures only where both readings
// have them, and of several rounds the one that grew most.
func TestGrown(t *testing.T) {
	gw := &fixedMeter{s: procStats{RSS: 3 << 20, Go: goMemory{Goroutines: 310, StackBytes: 900 << 10, HeapBytes: 2 << 20}}}
	fwd := &fixedMeter{s: procStats{RSS: 5 << 20}} // a reading without the runtime's figures
	gone := &fixedMeter{err: errors.New("exited")}
	procs := []meter{{"gateway", gw}, {"forwarder-a", fwd}, {"agent", gone}}
	base := map[string]procStats{
		"gateway":     {RSS: 1 << 20, Go: goMemory{Goroutines: 10, StackBytes: 300 << 10, HeapBytes: 1 << 20}},
		"forwarder-a": {RSS: 4 << 20},
		"agent":       {RSS: 1 << 20, Go: goMemory{Goroutines: 10}},
	}
	rss, g := make(map[string]float64), make(map[string]goHeld)
	grown(procs, base, 100, rss, g)
	if want := map[string]float64{"gateway": (2 << 20) / 100.0, "forwarder-a": (1 << 20) / 100.0}; len(rss) != 2 ||
		rss["gateway"] != want["gateway"] || rss["forwarder-a"] != want["forwarder-a"] {
		t.Errorf("RSS growth %v, want %v", rss, want)
	}
	if want := (goHeld{goroutines: 3, stackBytes: 6 << 10, heapBytes: (1 << 20) / 100.0}); len(g) != 1 || g["gateway"] != want {
		t.Errorf("Go growth %+v, want gateway %+v only", g, want)
	}

	// A second round that grew less keeps the first's figures; one that
	// grew more replaces them.
	gw.s.Go = goMemory{Goroutines: 110, StackBytes: 400 << 10, HeapBytes: 1<<20 + 100}
	grown(procs, base, 100, rss, g)
	if g["gateway"].goroutines != 3 {
		t.Errorf("a smaller round replaced the larger: %+v", g["gateway"])
	}
	gw.s.Go = goMemory{Goroutines: 410, StackBytes: 1300 << 10, HeapBytes: 3 << 20}
	grown(procs, base, 100, rss, g)
	if want := (goHeld{goroutines: 4, stackBytes: 10 << 10, heapBytes: (2 << 20) / 100.0}); g["gateway"] != want {
		t.Errorf("after a larger round %+v, want %+v", g["gateway"], want)
	}

	// Without a map for them (the reading before the collection), no Go
	// figures are taken and the RSS still is.
	rss2 := make(map[string]float64)
	grown(procs, base, 100, rss2, nil)
	if len(rss2) != 2 {
		t.Errorf("RSS growth without Go figures %v", rss2)
	}
}

// TestGoHeldText: the markdown line lists each process that reported the
// runtime's figures, in the table's process order.
func TestGoHeldText(t *testing.T) {
	res := Result{Processes: map[string]Process{
		"agent":   {GoroutinesPerHeld: ptr(3.0), GoStackKiBPerHeld: ptr(14.8), GoHeapKiBPerHeld: ptr(13.1)},
		"gateway": {GoroutinesPerHeld: ptr(3.0), GoStackKiBPerHeld: ptr(14.26), GoHeapKiBPerHeld: ptr(19.8)},
		"harness": {}, // measured, but no runtime figures
	}}
	want := "gateway 3 goroutines, 14.3 KiB stacks, 19.8 KiB heap; agent 3 goroutines, 14.8 KiB stacks, 13.1 KiB heap"
	if got := res.goHeldText(); got != want {
		t.Errorf("goHeldText\n got %q\nwant %q", got, want)
	}
	if got := (&Result{Processes: map[string]Process{"harness": {}}}).goHeldText(); got != "" {
		t.Errorf("no figures: %q, want empty", got)
	}
}
