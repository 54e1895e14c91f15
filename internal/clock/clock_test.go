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
