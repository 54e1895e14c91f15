package procstune

import (
	"context"
	"math"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	calmWindow = Reading{Events: 5000, P90: 10 * time.Microsecond, CPU: 0.4}
	midWindow  = Reading{Events: 5000, P90: 70 * time.Microsecond}
	busyWindow = Reading{Events: 5000, P90: 400 * time.Microsecond}
	idleWindow = Reading{Events: MinEvents - 1, P90: time.Second}
)

// feed runs the windows through p and returns its decision after each.
func feed(p *Policy, windows ...Reading) []bool {
	out := make([]bool, len(windows))
	for i, w := range windows {
		out[i] = p.Next(w)
	}
	return out
}

func repeat(r Reading, n int) []Reading {
	out := make([]Reading, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func TestPolicyOnePAfterCalmWindows(t *testing.T) {
	p := NewPolicy()
	got := feed(p, repeat(calmWindow, BaseCalm)...)
	for i, single := range got[:BaseCalm-1] {
		if single {
			t.Fatalf("one P after %d calm windows, want %d", i+1, BaseCalm)
		}
	}
	if !got[BaseCalm-1] || !p.Single() {
		t.Fatalf("still on the default after %d calm windows", BaseCalm)
	}
	// Windows between the thresholds keep one P.
	if got := feed(p, repeat(midWindow, 20)...); got[len(got)-1] != true {
		t.Fatal("a window between the thresholds left one P")
	}
}

func TestPolicyBusyOrMiddleWindowRestartsTheCount(t *testing.T) {
	for _, w := range []Reading{busyWindow, midWindow} {
		p := NewPolicy()
		feed(p, repeat(calmWindow, BaseCalm-1)...)
		if p.Next(w) {
			t.Fatalf("window %+v: one P", w)
		}
		if got := feed(p, repeat(calmWindow, BaseCalm-1)...); got[len(got)-1] {
			t.Fatalf("after window %+v: one P before %d new calm windows", w, BaseCalm)
		}
		if !p.Next(calmWindow) {
			t.Fatalf("after window %+v: not one P after %d new calm windows", w, BaseCalm)
		}
	}
}

func TestPolicyIdleWindowIsCalm(t *testing.T) {
	p := NewPolicy()
	if got := feed(p, repeat(idleWindow, BaseCalm)...); !got[BaseCalm-1] {
		t.Fatal("an idle process (few scheduling events, whatever their latency) stayed on the default")
	}
	// A few slow events do not call an idle process on one P busy either.
	if !p.Next(idleWindow) {
		t.Fatal("an idle window left one P")
	}
}

func TestPolicyBusyWindowLeavesOneP(t *testing.T) {
	// A process whose goroutines seldom switch but use a whole CPU.
	saturated := Reading{Events: MinEvents - 1, CPU: 0.95}
	for _, w := range []Reading{busyWindow, saturated} {
		p := NewPolicy()
		feed(p, repeat(calmWindow, BaseCalm)...)
		if p.Next(w) || p.Single() {
			t.Fatalf("window %+v on one P did not go back to the default", w)
		}
		if p.Next(w) {
			t.Fatalf("window %+v on the default went to one P", w)
		}
	}
}

// TestPolicyCPUBetweenTheThresholds: short waits but most of a CPU in use
// neither go to one P nor leave it.
func TestPolicyCPUBetweenTheThresholds(t *testing.T) {
	warm := Reading{Events: 5000, P90: 10 * time.Microsecond, CPU: 0.8}
	p := NewPolicy()
	if got := feed(p, repeat(warm, 3*BaseCalm)...); got[len(got)-1] {
		t.Fatalf("went to one P with %.2f CPUs in use", warm.CPU)
	}
	feed(p, repeat(calmWindow, BaseCalm)...)
	if got := feed(p, repeat(warm, 3*BaseCalm)...); !got[len(got)-1] {
		t.Fatalf("left one P with %.2f CPUs in use and short waits", warm.CPU)
	}
}

func TestPolicyReturnsDoubleTheCalmNeeded(t *testing.T) {
	p := NewPolicy()
	want := BaseCalm
	for range 10 {
		feed(p, repeat(calmWindow, want)...)
		if !p.Single() {
			t.Fatalf("not one P after %d calm windows", want)
		}
		p.Next(busyWindow) // a return soon after going to one P
		want = min(want*2, MaxCalm)
		if p.Need() != want {
			t.Fatalf("calm windows needed = %d, want %d", p.Need(), want)
		}
	}
	if p.Need() != MaxCalm {
		t.Fatalf("calm windows needed = %d, want the cap %d", p.Need(), MaxCalm)
	}
	// A stay of settleWindows on one P forgets the returns.
	feed(p, repeat(calmWindow, MaxCalm)...)
	feed(p, repeat(calmWindow, settleWindows)...)
	if p.Need() != BaseCalm {
		t.Fatalf("after %d windows on one P, calm windows needed = %d, want %d", settleWindows, p.Need(), BaseCalm)
	}
	// A return after a long stay does not double.
	p.Next(busyWindow)
	if p.Need() != BaseCalm {
		t.Fatalf("a return after a long stay doubled the calm windows needed to %d", p.Need())
	}
}

func TestP90(t *testing.T) {
	us := func(n float64) float64 { return n * 1e-6 }
	buckets := []float64{math.Inf(-1), 0, us(10), us(50), us(100), us(1000), math.Inf(1)}
	hist := func(counts ...uint64) *metrics.Float64Histogram {
		return &metrics.Float64Histogram{Counts: counts, Buckets: buckets}
	}
	tests := []struct {
		name      string
		prev, cur *metrics.Float64Histogram
		want      Reading
	}{
		{"no histogram", nil, nil, Reading{}},
		{"nothing new", hist(0, 5, 5, 0, 0, 0), hist(0, 5, 5, 0, 0, 0), Reading{}},
		{"all fast", nil, hist(0, 100, 0, 0, 0, 0), Reading{Events: 100}},
		{"10% slow is the 90th percentile", nil, hist(0, 89, 0, 0, 11, 0), Reading{Events: 100, P90: 100 * time.Microsecond}},
		{"9% slow is not", nil, hist(0, 91, 0, 0, 9, 0), Reading{Events: 100}},
		{"only the window counts", hist(0, 0, 0, 0, 50, 0), hist(0, 100, 0, 0, 50, 0), Reading{Events: 100}},
		{"window of slow events", hist(0, 1000, 0, 0, 0, 0), hist(0, 1000, 0, 20, 80, 0), Reading{Events: 100, P90: 100 * time.Microsecond}},
		{"the open top bucket", nil, hist(0, 0, 0, 0, 0, 7), Reading{Events: 7, P90: time.Millisecond}},
		{"a bucket below zero reads as zero", nil, hist(3, 0, 0, 0, 0, 0), Reading{Events: 3}},
		{"a count that went down counts as new", hist(0, 50, 0, 0, 0, 0), hist(0, 10, 0, 0, 0, 0), Reading{Events: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := P90(tt.prev, tt.cur); got != tt.want {
				t.Errorf("P90 = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestP90OfTheRuntimesHistogram reads the real histogram: its buckets
// start at -Inf or 0 and the reading is some duration.
func TestP90OfTheRuntimesHistogram(t *testing.T) {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	var h metrics.Float64Histogram
	copyHistogram(&h, s[0])
	if len(h.Counts) == 0 || len(h.Buckets) != len(h.Counts)+1 {
		t.Fatalf("runtime histogram has %d counts and %d bounds", len(h.Counts), len(h.Buckets))
	}
	r := P90(nil, &h)
	if r.Events == 0 || r.P90 < 0 || r.P90 > time.Minute {
		t.Fatalf("P90 of this process's scheduling since start = %+v", r)
	}
}

// TestTunerFollowsTheScheduler runs a tuner against this process's real
// scheduler: idle, it goes to one P; with more goroutines wanting to run
// than there are Ps (each waits up to the runtime's 10 ms preemption
// slice), it goes back at once; Stop puts back what it changed.
func TestTunerFollowsTheScheduler(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	multi := max(orig, 2) // set explicitly, so that a one-CPU machine runs the test too
	switched := make(chan bool, 16)
	var sets atomic.Int32
	tu := start(20*time.Millisecond, func(single bool) {
		sets.Add(1)
		if single {
			runtime.GOMAXPROCS(1)
		} else {
			runtime.GOMAXPROCS(multi)
		}
	}, func(single bool, r Reading) {
		t.Logf("one P: %v after %+v", single, r)
		switched <- single
	})
	t.Cleanup(tu.Stop)
	runtime.GOMAXPROCS(multi)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait := func(want bool) {
		t.Helper()
		for {
			select {
			case got := <-switched:
				if got == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no switch to one P = %v within the deadline", want)
			}
		}
	}
	wait(true)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS = %d after the switch to one P", n)
	}

	// Spinners: four goroutines that never block.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := 0; i < 1000; i++ {
					_ = i * i
				}
			}
		})
	}
	wait(false)
	close(stop)
	wg.Wait()
	if n := runtime.GOMAXPROCS(0); n != multi {
		t.Fatalf("GOMAXPROCS = %d after the switch back, want %d", n, multi)
	}

	wait(true)
	before := sets.Load()
	tu.Stop()
	if n := runtime.GOMAXPROCS(0); n != multi || sets.Load() != before+1 {
		t.Fatalf("after Stop on one P: GOMAXPROCS %d and %d sets, want %d and %d", n, sets.Load(), multi, before+1)
	}
	tu.Stop() // twice is safe
}

func TestStartRespectsTheEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if tu := Start(nil); tu != nil {
		tu.Stop()
		t.Fatal("Start ran a tuner although GOMAXPROCS is set in the environment")
	}
}

func TestOneTunerPerProcess(t *testing.T) {
	t.Setenv("GOMAXPROCS", "") // empty is unset
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	runtime.GOMAXPROCS(2)
	first := Start(nil)
	if first == nil {
		t.Fatal("no tuner with GOMAXPROCS 2 and none in the environment")
	}
	if second := Start(nil); second != nil {
		second.Stop()
		first.Stop()
		t.Fatal("a second tuner started in the same process")
	}
	first.Stop()
	again := Start(nil)
	if again == nil {
		t.Fatal("no tuner after the first one stopped")
	}
	again.Stop()
	var nilTuner *Tuner
	nilTuner.Stop() // safe
}

func TestStartOnOneCPUDoesNothing(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	runtime.GOMAXPROCS(1)
	if tu := Start(nil); tu != nil {
		tu.Stop()
		t.Fatal("Start ran a tuner in a process of one P")
	}
}

// TestTunerLeavesOnePWhenGoroutinesWait: bursts of short work that leave
// the process's one P mostly idle but make goroutines queue for it (as
// many exchanges at once do) send the process back to the default through
// the latency signal alone.
func TestTunerLeavesOnePWhenGoroutinesWait(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	multi := max(orig, 2)
	type change struct {
		single bool
		r      Reading
	}
	switched := make(chan change, 16)
	tu := start(50*time.Millisecond, func(single bool) {
		if single {
			runtime.GOMAXPROCS(1)
		} else {
			runtime.GOMAXPROCS(multi)
		}
	}, func(single bool, r Reading) { switched <- change{single, r} })
	t.Cleanup(tu.Stop)
	runtime.GOMAXPROCS(multi)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	next := func() change {
		t.Helper()
		select {
		case c := <-switched:
			return c
		case <-ctx.Done():
			t.Fatal("no switch within the deadline")
			return change{}
		}
	}
	if c := next(); !c.single {
		t.Fatalf("first switch %+v, want one P", c)
	}

	// Every 5 ms, 32 goroutines each work for 40 µs: about a quarter of
	// one CPU, but the last of each burst waits more than a millisecond.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	bursts := make([]chan struct{}, 32)
	for i := range bursts {
		bursts[i] = make(chan struct{}, 1)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-bursts[i]:
				}
				for begin := time.Now(); time.Since(begin) < 40*time.Microsecond; {
				}
			}
		})
	}
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, b := range bursts {
				select {
				case b <- struct{}{}:
				default:
				}
			}
		}
	})
	c := next()
	close(stop)
	wg.Wait()
	t.Logf("switch: %+v", c)
	if c.single {
		t.Fatalf("second switch %+v, want the default", c)
	}
	if c.r.CPU > BusyCPU || c.r.P90 <= LeaveAbove || c.r.Events < MinEvents {
		t.Fatalf("left one P on %+v: not on the scheduling latency alone", c.r)
	}
	if n := runtime.GOMAXPROCS(0); n != multi {
		t.Fatalf("GOMAXPROCS = %d, want %d", n, multi)
	}
	tu.Stop()
}
