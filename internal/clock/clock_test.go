package clock

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFake(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	ch := f.After(time.Hour)
	if !f.WaitForWaiter(1, nil) {
		t.Fatal("no waiter")
	}
	f.Advance(59 * time.Minute)
	select {
	case <-ch:
		t.Fatal("fired early")
	default:
	}
	f.Advance(time.Minute)
	if got := <-ch; !got.Equal(start.Add(time.Hour)) {
		t.Fatalf("fired at %v", got)
	}
	if f.Waiters() != 0 {
		t.Fatal("waiter kept")
	}
	if got := <-f.After(0); !got.Equal(f.Now()) {
		t.Fatal("After(0) did not fire at once")
	}
	if _, ok := Or(nil).(Real); !ok {
		t.Fatal("Or(nil) is not Real")
	}
}

// TestUntil: Until waits for a time, not a duration, so a move of the
// clock between reading it and waiting does not push the wait back: the
// wait for a time already passed ends at once (After with the duration
// read before the move would wait the whole duration past the move), and
// one for a later time ends when the clock reaches it.
func TestUntil(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f := NewFake(t0)
	deadline := t0.Add(time.Hour)
	d := deadline.Sub(f.Now()) // read before the move
	f.Advance(2 * time.Hour)
	select {
	case <-Until(f, deadline):
	default:
		t.Fatal("Until a time the clock has passed did not fire at once")
	}
	select {
	case <-f.After(d):
		t.Fatal("After fired at once; the test shows nothing")
	default:
	}
	later := Until(f, t0.Add(3*time.Hour))
	f.Advance(59 * time.Minute)
	select {
	case <-later:
		t.Fatal("Until fired a minute early")
	default:
	}
	f.Advance(time.Minute)
	select {
	case got := <-later:
		if !got.Equal(t0.Add(3 * time.Hour)) {
			t.Fatalf("fired with %v", got)
		}
	default:
		t.Fatal("Until did not fire at its time")
	}
	// The real clock: a time passed fires at once.
	select {
	case <-Until(Real{}, time.Now().Add(-time.Second)):
	case <-time.After(10 * time.Second):
		t.Fatal("Until a past time on the real clock did not fire")
	}
}
