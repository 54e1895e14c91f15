package bench

import (
	"runtime"
	"syscall"
	"time"
)

// Waking on time. Go's timers wake up to a millisecond late on Linux,
// because the runtime's netpoller waits in whole milliseconds (median 0.7 ms
// late on the 2-core test machine); an emulated 20 ms link would add that to
// every crossing. nanosleep(2) does better, but a thread's default timer
// slack (50 µs) lets the kernel wake it later still: on the test VM a 10 ms
// nanosleep woke a median 253 µs late (p90 310 µs), so the emulated 20 ms
// round trip measured 20.6 ms. With the slack at 1 ns the same sleep wakes
// 92 µs late; spinning through the last spinBefore of the wait makes it
// 0.1 µs (medians of 60 sleeps each). The deliverer spins only for a chunk
// with nothing queued behind it (one request on a quiet link, where a late
// wake shows in its latency); chunks of a busy link keep the plain sleep, so
// a transfer burns no CPU spinning.

// spinBefore is how long before its time a spinning wait stops sleeping:
// above the 1-ns-slack nanosleep's usual lateness (p90 145 µs).
const spinBefore = 200 * time.Microsecond

// prSetTimerSlack is prctl(2)'s PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// preciseThread locks the calling goroutine to its thread and sets that
// thread's timer slack to 1 ns. The goroutine must not unlock it: the
// thread, whose slack is no longer the process's default, then ends with the
// goroutine instead of going back to the runtime's pool.
func preciseThread() {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0) // best effort: a failure leaves the default slack
}

// sleepUntil waits until t; with spin it spends the last spinBefore
// spinning instead of sleeping.
func sleepUntil(t time.Time, spin bool) {
	if !spin {
		nanosleepUntil(t)
		return
	}
	nanosleepUntil(t.Add(-spinBefore))
	for time.Now().Before(t) {
	}
}

func nanosleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		if syscall.Nanosleep(&ts, nil) == nil {
			return
		}
		// EINTR: sleep the rest.
	}
}
