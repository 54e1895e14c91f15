// Package procstune runs a gateway or agent process on one P (GOMAXPROCS 1)
// while its goroutines seldom wait for one, and on the runtime's default
// GOMAXPROCS as soon as they do.
//
// A relayed exchange hands work from goroutine to goroutine several times
// (a connection's reader, gRPC's writer, the exchange's own goroutine). With
// more than one P, each hand-off wakes another thread that spins looking for
// work, and on a machine whose cores are shared with the backend and other
// processes that spinning takes CPU from the exchange itself: with one
// exchange at a time (`sallyport bench --scenarios small --concurrency 1`)
// gateway and agent spent about 40% more CPU per exchange on two Ps than on
// one, and the relay added about 60 µs more latency. Under load the other
// Ps earn their keep (64 concurrent exchanges: about 10% more requests per
// second on two Ps), and there goroutines do wait for a P.
//
// The signal is the runtime's own record of that wait (the
// /sched/latencies:seconds histogram): the tuner reads it every Window and
// looks at the 90th percentile of the time goroutines spent runnable
// before they ran. Above LeaveAbove, or with the process using nearly a
// whole CPU (BusyCPU: its goroutines run long without switching, which the
// runtime's sampled record sees little of), the process goes back to the
// default at once; after enough windows below EnterBelow (or with almost
// nothing scheduled: an idle process) and under CalmCPU, it goes to one P.
// A process that keeps returning soon after going to one P must stay calm
// for twice as long, up to MaxCalm windows, before it tries again.
//
// An explicit GOMAXPROCS in the environment means the operator chose: the
// tuner then does nothing, as it does on a machine (or cgroup quota) of one
// CPU.
package procstune

import (
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"time"

	"go.uber.org/zap"
)

const (
	// Window is how often the tuner reads the scheduling latencies.
	Window = 250 * time.Millisecond
	// EnterBelow: a window whose 90th percentile of scheduling latency is
	// below this is calm (one P would do).
	EnterBelow = 50 * time.Microsecond
	// LeaveAbove: a window whose 90th percentile is above this, on one P,
	// sends the process back to the default GOMAXPROCS.
	LeaveAbove = 100 * time.Microsecond
	// CalmCPU: a window in which the process used more CPU than this
	// (in CPUs: 0.75 is three quarters of one) is not calm, whatever its
	// latencies.
	CalmCPU = 0.75
	// BusyCPU: a window in which the process used more CPU than this is
	// busy: one P is about saturated.
	BusyCPU = 0.9
	// MinEvents is the number of scheduling events (the runtime samples
	// one goroutine transition in eight) below which a window counts as
	// calm whatever its percentile: the process is about idle.
	MinEvents = 20
	// BaseCalm is the number of calm windows in a row after which the
	// process goes to one P (one second).
	BaseCalm = 4
	// MaxCalm bounds the doubling of BaseCalm after returns (32 seconds).
	MaxCalm = 128
	// flapWindows: leaving one P within this many windows of entering it
	// doubles the calm windows needed next time.
	flapWindows = 8
	// settleWindows: this many windows on one P reset the calm windows
	// needed to BaseCalm.
	settleWindows = 40
)

// Reading is one window of the scheduler's record: how many goroutine
// transitions were sampled and the 90th percentile of their wait, and the
// CPU the process used in it (CPU seconds per second; 0 where the
// operating system does not say).
type Reading struct {
	Events uint64
	P90    time.Duration
	CPU    float64
}

// Policy decides, window by window, between one P and the default. The
// zero value is not ready: use NewPolicy.
type Policy struct {
	single bool
	calm   int // calm windows in a row while on the default
	need   int // calm windows needed to go to one P
	since  int // windows since going to one P
}

// NewPolicy starts on the default GOMAXPROCS.
func NewPolicy() *Policy { return &Policy{need: BaseCalm} }

// Single reports whether the policy has the process on one P.
func (p *Policy) Single() bool { return p.single }

// Need is the number of calm windows in a row the policy now waits for
// before it goes to one P.
func (p *Policy) Need() int { return p.need }

// Next takes one window's reading and returns whether the process should
// now run on one P.
func (p *Policy) Next(r Reading) bool {
	calm := (r.Events < MinEvents || r.P90 < EnterBelow) && r.CPU < CalmCPU
	busy := (r.Events >= MinEvents && r.P90 > LeaveAbove) || r.CPU > BusyCPU
	if p.single {
		p.since++
		if busy {
			if p.since <= flapWindows {
				p.need = min(p.need*2, MaxCalm)
			}
			p.single, p.calm = false, 0
			return false
		}
		if p.since == settleWindows {
			p.need = BaseCalm
		}
		return true
	}
	if !calm {
		p.calm = 0
		return false
	}
	p.calm++
	if p.calm >= p.need {
		p.single, p.since, p.calm = true, 0, 0
	}
	return p.single
}

// P90 returns the 90th percentile of the events counted in cur but not in
// prev (two readings of the same cumulative histogram), as the lower bound
// of its bucket, and the number of those events.
func P90(prev, cur *metrics.Float64Histogram) Reading {
	if cur == nil || len(cur.Counts) == 0 {
		return Reading{}
	}
	delta := func(i int) uint64 {
		c := cur.Counts[i]
		if prev != nil && i < len(prev.Counts) && prev.Counts[i] <= c {
			c -= prev.Counts[i]
		}
		return c
	}
	var total uint64
	for i := range cur.Counts {
		total += delta(i)
	}
	if total == 0 {
		return Reading{}
	}
	rank := total - total/10 // the event at or above which 10% lie
	var seen uint64
	for i := range cur.Counts {
		seen += delta(i)
		if seen >= rank {
			lo := cur.Buckets[i]
			if math.IsInf(lo, -1) || lo < 0 {
				lo = 0
			}
			if lo > float64(math.MaxInt64)/1e9 {
				return Reading{Events: total, P90: time.Duration(math.MaxInt64)}
			}
			return Reading{Events: total, P90: time.Duration(math.Round(lo * 1e9))}
		}
	}
	return Reading{Events: total}
}

// Tuner switches the process's GOMAXPROCS. Create it with Start.
type Tuner struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
	// set applies a decision: true for one P, false for the default.
	set func(single bool)
	// onSwitch, when not nil, is told of each switch (tests).
	onSwitch func(single bool, r Reading)
}

// running makes sure only one tuner runs in a process: GOMAXPROCS is
// process-wide.
var (
	runningMu sync.Mutex
	running   bool
)

// Start begins tuning and returns the tuner, or nil when GOMAXPROCS is set
// in the environment, when the default is already one P, or when another
// tuner runs in this process. Switches are logged at debug level.
func Start(log *zap.Logger) *Tuner {
	if os.Getenv("GOMAXPROCS") != "" || runtime.GOMAXPROCS(0) <= 1 {
		return nil
	}
	if log == nil {
		log = zap.NewNop()
	}
	return start(Window, func(single bool) {
		if single {
			runtime.GOMAXPROCS(1)
		} else {
			runtime.SetDefaultGOMAXPROCS()
		}
	}, func(single bool, r Reading) {
		log.Debug("GOMAXPROCS changed", zap.Int("gomaxprocs", runtime.GOMAXPROCS(0)),
			zap.Bool("one_p", single), zap.Duration("sched_latency_p90", r.P90), zap.Uint64("sched_events", r.Events),
			zap.Float64("cpu", r.CPU))
	})
}

func start(window time.Duration, set func(bool), onSwitch func(bool, Reading)) *Tuner {
	runningMu.Lock()
	defer runningMu.Unlock()
	if running {
		return nil
	}
	running = true
	t := &Tuner{stop: make(chan struct{}), done: make(chan struct{}), set: set, onSwitch: onSwitch}
	go t.run(window)
	return t
}

func (t *Tuner) run(window time.Duration) {
	defer close(t.done)
	sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(sample)
	var prev, cur metrics.Float64Histogram
	copyHistogram(&prev, sample[0])
	policy := NewPolicy()
	cpuPrev, wallPrev := processCPU(), time.Now()
	tick := time.NewTicker(window)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			if policy.Single() {
				t.set(false)
			}
			return
		case <-tick.C:
		}
		metrics.Read(sample)
		copyHistogram(&cur, sample[0])
		r := P90(&prev, &cur)
		prev, cur = cur, prev
		cpuNow, wallNow := processCPU(), time.Now()
		if wall := wallNow.Sub(wallPrev); wall > 0 {
			r.CPU = float64(cpuNow-cpuPrev) / float64(wall)
		}
		cpuPrev, wallPrev = cpuNow, wallNow
		was := policy.Single()
		if now := policy.Next(r); now != was {
			t.set(now)
			if t.onSwitch != nil {
				t.onSwitch(now, r)
			}
		}
	}
}

// copyHistogram copies a sample's histogram into dst, reusing dst's
// memory: metrics.Read may reuse the sample's on the next read.
func copyHistogram(dst *metrics.Float64Histogram, s metrics.Sample) {
	dst.Counts = dst.Counts[:0]
	if s.Value.Kind() != metrics.KindFloat64Histogram {
		return
	}
	h := s.Value.Float64Histogram()
	dst.Counts = append(dst.Counts, h.Counts...)
	dst.Buckets = h.Buckets // the bounds do not change
}

// Stop ends tuning, puts the process back on the default GOMAXPROCS and
// waits for the tuner's goroutine. Safe on a nil Tuner and more than once.
func (t *Tuner) Stop() {
	if t == nil {
		return
	}
	t.once.Do(func() {
		close(t.stop)
		<-t.done
		runningMu.Lock()
		running = false
		runningMu.Unlock()
	})
}
