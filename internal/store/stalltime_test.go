package store

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/shortskip"
)

// backdate moves the start of s's calls under way d back, as if they had
// waited d more.
func backdate(s *DB, d time.Duration) {
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	for id, start := range s.calls.running {
		s.calls.running[id] = start.Add(-d)
	}
}

// TestStalledKeptAcrossBriefPingFailure: a call waiting for a lock, during
// which a ping answered, is a stall; a ping that fails once after (the
// database down for a second) makes the store read down, not stalled,
// while it fails, but does not erase the stall: once a ping answers again
// the call under way, and after its end the slow call, count again.
// Before, the failed ping forgot every call begun before it: Stalled said
// nothing once the database answered again, though the call still waited.
func TestStalledKeptAcrossBriefPingFailure(t *testing.T) {
	s := open(t, t.TempDir())
	const memory = time.Minute
	end := s.calls.begin()
	backdate(s, SlowCall+time.Second) // it has waited 4 s for a lock
	s.calls.up()                      // and a ping answered meanwhile
	if err := s.Stalled(time.Now(), memory); !errors.Is(err, ErrStalled) {
		t.Fatalf("a call waiting 4s, a ping answering: %v; want ErrStalled", err)
	}
	s.calls.down(time.Now())
	if err := s.Stalled(time.Now(), memory); err != nil {
		t.Fatalf("while the ping fails: %v; want nil (down, not stalled)", err)
	}
	s.calls.up()
	err := s.Stalled(time.Now(), memory)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "has waited 4s") {
		t.Fatalf("once a ping answers again, the call still waiting: %v; want ErrStalled saying it has waited 4s", err)
	}
	end()
	s.calls.down(time.Now())
	s.calls.up()
	err = s.Stalled(time.Now(), memory)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "took 4s") {
		t.Fatalf("after its end and another failed ping: %v; want ErrStalled saying a call took 4s", err)
	}
	if err := s.Stalled(time.Now().Add(memory), memory); err != nil {
		t.Fatalf("memory after the slow call: %v; want nil", err)
	}
}

// TestStalledOutageNotConfirmed: calls that waited while the database did
// not answer are no stall once it answers again, also when the first ping
// after the outage answers while they still wait (it only says the
// outage is over); a call that waits SlowCall more after that is one.
func TestStalledOutageNotConfirmed(t *testing.T) {
	s := open(t, t.TempDir())
	const memory = time.Minute
	end := s.calls.begin()
	backdate(s, SlowCall+time.Second)
	s.calls.down(time.Now()) // no ping answered while it waited
	s.calls.up()             // the outage is over
	if err := s.Stalled(time.Now().Add(time.Second), memory); err != nil {
		t.Fatalf("a call that waited for an outage, still under way: %v; want nil", err)
	}
	s.calls.up() // a ping right after: the call has not waited SlowCall since
	if err := s.Stalled(time.Now().Add(time.Second), memory); err != nil {
		t.Fatalf("a call under way a second after the outage: %v; want nil", err)
	}
	end()
	if err := s.Stalled(time.Now(), memory); err != nil {
		t.Fatalf("after the end of a call that waited for an outage: %v; want nil", err)
	}

	// A call waiting SlowCall after the database answered again (a ping
	// says so then) is a stall, wherever it began.
	end = s.calls.begin()
	defer end()
	backdate(s, 2*SlowCall)
	s.calls.down(time.Now())
	s.calls.mu.Lock()
	s.calls.isDown, s.calls.upAt = false, time.Now().Add(-SlowCall-time.Second) // answered again 4 s ago
	s.calls.mu.Unlock()
	if err := s.Stalled(time.Now(), memory); err != nil {
		t.Fatalf("before a ping confirms it: %v; want nil", err)
	}
	s.calls.up()
	if err := s.Stalled(time.Now(), memory); !errors.Is(err, ErrStalled) {
		t.Fatalf("a call still waiting when a ping answered, SlowCall after the outage: %v; want ErrStalled", err)
	}
}

// watchRig is a store with a watch whose pokes land on a channel.
func watchRig(t *testing.T, memory time.Duration) (*DB, chan struct{}) {
	t.Helper()
	s := open(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	poked := make(chan struct{}, 16)
	s.WatchStalls(ctx, memory, func() { poked <- struct{}{} })
	return s, poked
}

// tick runs the watch's tick at now, as its timer does.
func tick(s *DB, now time.Time) bool {
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	return s.calls.tick(now)
}

// TestWatchStallsSchedule: the watch is told once when a call has waited
// SlowCall (not for every call that piles up behind it within SlowCall),
// at once when a slow call ends untold, and when the memory of the last
// slow call has passed, not before.
func TestWatchStallsSchedule(t *testing.T) {
	const memory = time.Minute
	s, poked := watchRig(t, memory)
	w := &s.calls
	end := w.begin()
	w.mu.Lock()
	var start time.Time
	for _, st := range w.running {
		start = st
	}
	due := w.due
	w.mu.Unlock()
	if !due.Equal(start.Add(SlowCall)) {
		t.Fatalf("a call begun at %v: the watch is due at %v, want SlowCall later", start, due)
	}
	if tick(s, start.Add(SlowCall-time.Millisecond)) {
		t.Fatal("told before the call has waited SlowCall")
	}
	end2 := w.begin() // another, behind the first
	if !tick(s, start.Add(SlowCall)) {
		t.Fatal("not told once the call has waited SlowCall")
	}
	if tick(s, start.Add(SlowCall+time.Second)) {
		t.Fatal("told again within SlowCall, of the call behind it")
	}
	end2()
	backdate(s, SlowCall+time.Second)
	end() // a slow call, told of: its memory is due
	w.mu.Lock()
	slowEnd, _ := w.lastSlow()
	due = w.due
	w.mu.Unlock()
	if slowEnd.IsZero() || due.After(slowEnd.Add(memory)) {
		t.Fatalf("a slow call ended at %v: the watch is due at %v, want by its memory's end", slowEnd, due)
	}
	if tick(s, slowEnd.Add(memory-time.Millisecond)) {
		t.Fatal("told before the slow call's memory has passed")
	}
	if !tick(s, slowEnd.Add(memory)) {
		t.Fatal("not told when the slow call's memory has passed")
	}
	if tick(s, slowEnd.Add(2*memory)) {
		t.Fatal("told twice of one memory's end")
	}

	// A slow call ending untold (the timer late) is told at once.
	w.mu.Lock()
	w.toldUpTo = time.Now().Add(-2 * SlowCall) // the ticks above ran ahead of real time
	w.mu.Unlock()
	end = w.begin()
	backdate(s, SlowCall+time.Second)
	end()
	<-poked // the timer, armed for now, pokes
}

// TestRecheckStalls: a recheck asked for pokes the watcher once, after
// the delay asked, however often it was asked meanwhile.
func TestRecheckStalls(t *testing.T) {
	s, _ := watchRig(t, time.Minute)
	now := time.Now()
	s.RecheckStalls(time.Hour)
	s.RecheckStalls(time.Hour)
	if tick(s, now.Add(time.Hour-time.Second)) {
		t.Fatal("poked before the recheck is due")
	}
	if !tick(s, now.Add(time.Hour+time.Second)) {
		t.Fatal("not poked when the recheck is due")
	}
	if tick(s, now.Add(2*time.Hour)) {
		t.Fatal("poked twice for one recheck")
	}
}

// TestWatchStallsPokes: the watch's timer tells the watcher, on its own,
// once a call has waited SlowCall, while the call still waits.
func TestWatchStallsPokes(t *testing.T) {
	shortskip.Long(t, "waits SlowCall")
	s, poked := watchRig(t, time.Minute)
	end := s.calls.begin()
	defer end()
	<-poked
	if err := s.Stalled(time.Now(), time.Minute); !errors.Is(err, ErrStalled) {
		t.Fatalf("when the watch is told: %v; want ErrStalled", err)
	}
}

// TestWatchStallsEnds: the watch ends with its context, and a store
// without one arms nothing.
func TestWatchStallsEnds(t *testing.T) {
	s := open(t, t.TempDir())
	s.calls.begin()()
	if s.calls.timer != nil || !s.calls.due.IsZero() {
		t.Fatal("a store without a watch armed its timer")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.WatchStalls(ctx, time.Minute, func() {})
	end := s.calls.begin()
	defer end()
	stopped := make(chan struct{})
	context.AfterFunc(ctx, func() { close(stopped) })
	cancel()
	<-stopped
	for { // the watch's own AfterFunc runs beside the test's
		s.calls.mu.Lock()
		poke, due := s.calls.poke, s.calls.due
		s.calls.mu.Unlock()
		if poke == nil {
			if !due.IsZero() {
				t.Fatalf("the watch ended, its timer still due at %v", due)
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// afterFuncCtx is a context that counts the functions registered to run
// at its end (context.AfterFunc) and not stopped since.
type afterFuncCtx struct {
	done chan struct{}
	live *atomic.Int32
}

func (c afterFuncCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c afterFuncCtx) Done() <-chan struct{}       { return c.done }
func (c afterFuncCtx) Err() error                  { return nil }
func (c afterFuncCtx) Value(any) any               { return nil }

func (c afterFuncCtx) AfterFunc(f func()) (stop func() bool) {
	c.live.Add(1)
	var stopped atomic.Bool
	return func() bool {
		if stopped.Swap(true) {
			return false
		}
		c.live.Add(-1)
		return true
	}
}

// TestWatchStallsTakeoverKeepsNothing: two watchers of one store (two
// gateways of a process, whose checks take turns) leave one end of the
// watch registered on their contexts, however often they replace each
// other. Before, each turn registered one more on the taker's context,
// kept until it ended (about 380 B a turn), and each ran at its end.
func TestWatchStallsTakeoverKeepsNothing(t *testing.T) {
	s := open(t, t.TempDir())
	var live atomic.Int32
	a := afterFuncCtx{done: make(chan struct{}), live: &live}
	b := afterFuncCtx{done: make(chan struct{}), live: &live}
	for range 10 {
		s.WatchStalls(a, time.Minute, func() {})
		s.WatchStalls(b, time.Minute, func() {})
	}
	if n := live.Load(); n != 1 {
		t.Fatalf("%d ends of the watch registered on the watchers' contexts after 20 turns, want 1", n)
	}
	s.calls.mu.Lock()
	s.calls.poke = nil
	s.calls.disarm()
	s.calls.mu.Unlock()
}

// TestCallWatchAllocs: a call costs the store's watch one allocation (the
// end func), with or without a watcher.
func TestCallWatchAllocs(t *testing.T) {
	s, _ := watchRig(t, time.Minute)
	if n := testing.AllocsPerRun(1000, func() { s.calls.begin()() }); n > 1 {
		t.Errorf("%v allocations per call, want at most 1", n)
	}
}

func BenchmarkCallWatch(b *testing.B) {
	for _, watched := range []bool{false, true} {
		name := map[bool]string{false: "unwatched", true: "watched"}[watched]
		b.Run(name, func(b *testing.B) {
			var w callWatch
			if watched {
				w.poke, w.memory = func() {}, time.Minute
			}
			b.ReportAllocs()
			for b.Loop() {
				w.begin()()
			}
			w.mu.Lock()
			w.disarm()
			w.mu.Unlock()
		})
	}
}
