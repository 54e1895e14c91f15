// Package gctune keeps the garbage collector of a long-running gateway or
// agent process from collecting while its heap is small.
//
// With Go's default GOGC=100 the next collection starts when the heap has
// grown by as much as is live. A proxy's live heap is small (a few MiB:
// connection state, pools), while it allocates per request, so under load it
// collected a dozen times a second and the collector's work (marking, assists,
// sweeping) was about a fifth of the gateway's and the agent's CPU for small
// exchanges. The tuner lifts GOGC after every collection so that the next one
// starts no earlier than at Floor bytes of heap; once the live heap is large
// (many held exchanges), the percentage falls back to the default and memory
// grows as it would without the tuner.
//
// An explicit GOGC or GOMEMLIMIT in the environment means the operator chose
// the collector's settings: the tuner then does nothing.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultFloor is the heap size below which the tuned process does not
// collect: 32 MiB. Under load a gateway or agent then holds about 45 MiB of
// RSS instead of about 34 MiB.
const DefaultFloor = 32 << 20

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales
// with GOGC, so the percentage must stay at or below floor/heapMinimum×100
// or a tiny live heap would get a goal far above the floor.
const heapMinimum = 4 << 20

// The runtime's heap goal is live + (live + stacks + globals) × GOGC/100;
// these metrics are its terms after the last collection.
var goalTerms = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// Percent returns the GOGC value that puts the next collection at floor
// bytes of heap for a live heap of live bytes and scannable stacks and
// globals of roots bytes, but never below base (the percentage the process
// started with) and never so high that the runtime's minimum heap goal
// (4 MiB × GOGC/100) passes the floor.
func Percent(live, roots, floor uint64, base int) int {
	if base < 0 {
		return base // GOGC=off stays off
	}
	if floor <= live {
		return base
	}
	scan := live + roots
	if scan == 0 {
		scan = 1
	}
	p := (floor - live) * 100 / scan
	if limit := floor * 100 / heapMinimum; p > limit {
		p = limit
	}
	if int(p) < base {
		return base
	}
	return int(p)
}

// Tuner adjusts GOGC after every collection. Create it with Start.
type Tuner struct {
	floor   uint64
	base    int
	stopped atomic.Bool
	samples []metrics.Sample // goalTerms
	mu      sync.Mutex       // serialises tune and Stop
	onTune  func(percent int)
}

// sentinel is garbage whose finalizer runs once per collection.
type sentinel struct{ t *Tuner }

// Start begins tuning with the given floor (DefaultFloor when 0) and returns
// the tuner, or nil when GOGC or GOMEMLIMIT is set in the environment. The
// first adjustment happens after the next collection. Only one tuner should
// run in a process: it sets a process-wide setting.
func Start(floor uint64) *Tuner {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	return start(floor, nil)
}

func start(floor uint64, onTune func(int)) *Tuner {
	if floor == 0 {
		floor = DefaultFloor
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	t := &Tuner{
		floor:   floor,
		base:    base,
		samples: make([]metrics.Sample, len(goalTerms)),
		onTune:  onTune,
	}
	for i, name := range goalTerms {
		t.samples[i].Name = name
	}
	t.arm()
	return t
}

// arm leaves a sentinel behind whose finalizer runs after the next
// collection that finds it unreachable.
func (t *Tuner) arm() {
	s := &sentinel{t: t}
	runtime.SetFinalizer(s, func(s *sentinel) { s.t.tune() })
}

// tune runs in the finalizer goroutine after a collection.
func (t *Tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	metrics.Read(t.samples)
	var terms [3]uint64
	for i := range t.samples {
		if t.samples[i].Value.Kind() == metrics.KindUint64 {
			terms[i] = t.samples[i].Value.Uint64()
		}
	}
	p := Percent(terms[0], terms[1]+terms[2], t.floor, t.base)
	debug.SetGCPercent(p)
	if t.onTune != nil {
		t.onTune(p)
	}
	t.arm()
}

// Stop ends tuning and restores the percentage the process started with.
// Safe on a nil Tuner and more than once.
func (t *Tuner) Stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Swap(true) {
		return
	}
	debug.SetGCPercent(t.base)
}
