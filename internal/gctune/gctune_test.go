package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name               string
		live, roots, floor uint64
		base, wantPercent  int
	}{
		{"small heap reaches the floor", 4 * mib, 0, 32 * mib, 100, 700},
		{"stacks and globals count", 4 * mib, 4 * mib, 32 * mib, 100, 350},
		{"heap at the floor keeps the base", 32 * mib, mib, 32 * mib, 100, 100},
		{"large heap keeps the base", 300 * mib, mib, 32 * mib, 100, 100},
		{"never below the base", 20 * mib, 2 * mib, 32 * mib, 100, 100},
		{"a higher base is kept", 16 * mib, 0, 32 * mib, 200, 200},
		{"tiny heap: the minimum goal stays at the floor", 1024, 0, 32 * mib, 100, 800},
		{"zero heap", 0, 0, 64 * mib, 100, 1600},
		{"GOGC=off stays off", 4 * mib, 0, 32 * mib, -1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percent(tt.live, tt.roots, tt.floor, tt.base); got != tt.wantPercent {
				t.Errorf("Percent(%d, %d, %d, %d) = %d, want %d", tt.live, tt.roots, tt.floor, tt.base, got, tt.wantPercent)
			}
		})
	}
}

// TestTunesAfterEveryCollection checks that each collection re-tunes GOGC
// so that the runtime's heap goal is the floor, and that Stop restores the
// starting percentage.
func TestTunesAfterEveryCollection(t *testing.T) {
	t.Setenv("GOGC", "") // the test's own environment must not turn Start off
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	const floor = 256 << 20 // far above this test's heap
	tuned := make(chan int, 16)
	tu := start(floor, func(p int) { tuned <- p })
	defer tu.Stop()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	for i := range 2 {
		p, ok := collectUntilTuned(ctx, tuned)
		if !ok {
			t.Fatalf("collection %d: the tuner did not run", i+1)
		}
		if p <= 100 {
			t.Fatalf("collection %d: tuned to %d, want more than 100 for a floor far above the heap", i+1, p)
		}
		metrics.Read(goal)
		// Integer percentages round down: the goal lands within 1% under the floor.
		if g := goal[0].Value.Uint64(); g > floor || g < floor-floor/100 {
			t.Fatalf("collection %d: heap goal %d MiB at GOGC=%d, want the floor, %d MiB", i+1, g>>20, p, floor>>20)
		}
	}

	tu.Stop()
	// Collections run by collectUntilTuned before Stop may have tuned more
	// than once; what they reported is not what this part checks.
	for len(tuned) > 0 {
		<-tuned
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("after Stop GOGC is %d, want the starting 100", got)
	}
	// The sentinel armed before Stop is collected in the next cycle; its
	// finalizer must not tune again. Each marker's finalizer is queued in a
	// later cycle than that sentinel's, so once three have run, it has too.
	for range 3 {
		collectAndWaitFinalizers(ctx, t)
	}
	select {
	case p := <-tuned:
		t.Errorf("tuned to %d after Stop", p)
	default:
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC changed to %d after Stop", got)
	}
}

// collectAndWaitFinalizers runs a collection and waits until a finalizer
// queued by it has run.
func collectAndWaitFinalizers(ctx context.Context, t *testing.T) {
	t.Helper()
	ran := make(chan struct{})
	dropMarker(ran)
	runtime.GC()
	select {
	case <-ran:
	case <-ctx.Done():
		t.Fatal("the marker's finalizer did not run")
	}
}

func TestStartRespectsEnvironment(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, map[string]string{"GOGC": "150", "GOMEMLIMIT": "1GiB"}[env])
			if tu := Start(0); tu != nil {
				tu.Stop()
				t.Fatalf("Start tuned although %s is set", env)
			}
		})
	}
	var nilTuner *Tuner
	nilTuner.Stop() // must not panic
}

// dropMarker leaves unreachable garbage whose finalizer closes ran.
func dropMarker(ran chan struct{}) {
	runtime.SetFinalizer(new([16]byte), func(*[16]byte) { close(ran) })
}

// collectUntilTuned runs collections until the tuner reports one. A single
// runtime.GC can miss the sentinel when it was allocated black during a
// cycle already running, so under load one collection is not always enough.
func collectUntilTuned(ctx context.Context, tuned <-chan int) (int, bool) {
	for {
		runtime.GC()
		select {
		case p := <-tuned:
			return p, true
		case <-ctx.Done():
			return 0, false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
