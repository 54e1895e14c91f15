// Package clock is the time source of the certificate code: the real clock,
// and a fake one that tests move forward by hand instead of sleeping.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and waits.
type Clock interface {
	Now() time.Time
	// After sends the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

// Real is the system clock.
type Real struct{}

func (Real) Now() time.Time                         { return time.Now() }
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Or returns c, or Real when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return Real{}
	}
	return c
}

// Fake is a clock that moves only when Advance or Set is called. The zero
// value starts at the zero time; use NewFake.
type Fake struct {
	mu      sync.Mutex
	now     time.Time // guarded by mu
	waiters []waiter  // guarded by mu
	added   chan struct{}
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewFake returns a fake clock set to t.
func NewFake(t time.Time) *Fake { return &Fake{now: t, added: make(chan struct{}, 1)} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After fires when the fake time reaches now+d.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.untilLocked(f.now.Add(d))
}

// untilLocked fires when the fake time reaches t, at once when it has.
func (f *Fake) untilLocked(t time.Time) <-chan time.Time {
	ch := make(chan time.Time, 1)
	if !t.After(f.now) {
		ch <- f.now
		return ch
	}
	f.waiters = append(f.waiters, waiter{at: t, ch: ch})
	select {
	case f.added <- struct{}{}:
	default:
	}
	return ch
}

// Until returns a channel that gets the time once c's time reaches t. A
// Fake waits for t itself: After(t.Sub(c.Now())) counts its duration from
// the time at the After call, so a test that moves the clock between the
// two (a goroutine preempted there) had the wait end a whole move later,
// or never (a flaky TestDrainedAgainAtOnceBacksOff: the gateway's drain of
// a session whose certificate the test's clock had moved near its end).
func Until(c Clock, t time.Time) <-chan time.Time {
	if u, ok := c.(untiler); ok {
		return u.Until(t)
	}
	return c.After(t.Sub(c.Now()))
}

// untiler is a clock that waits for a time itself (Fake, and clocks that
// embed one).
type untiler interface {
	Until(t time.Time) <-chan time.Time
}

// Until fires when the fake time reaches t, at once when it has (see the
// function Until).
func (f *Fake) Until(t time.Time) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.untilLocked(t)
}

// Waiters is the number of pending After calls.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// WaitForWaiter blocks until at least n After calls are pending or done is
// closed; it reports whether they are.
func (f *Fake) WaitForWaiter(n int, done <-chan struct{}) bool {
	for {
		if f.Waiters() >= n {
			return true
		}
		select {
		case <-f.added:
		case <-done:
			return false
		}
	}
}

// Advance moves the time forward by d and fires the waiters that are due.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	now := f.now
	keep := f.waiters[:0]
	var due []waiter
	for _, w := range f.waiters {
		if !w.at.After(now) {
			due = append(due, w)
		} else {
			keep = append(keep, w)
		}
	}
	f.waiters = keep
	f.mu.Unlock()
	for _, w := range due {
		w.ch <- now
	}
}
