package bench

import (
	"syscall"
	"time"
)

// sleepUntil waits until t. Go's timers wake up to a millisecond late on
// Linux, because the runtime's netpoller waits in whole milliseconds (median
// 0.7 ms late on the 2-core test machine); an emulated 20 ms link would add
// that to every crossing. nanosleep(2) wakes within tens of microseconds. The
// goroutine holds an OS thread while it sleeps, which the link's few
// deliverers can afford.
func sleepUntil(t time.Time) {
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
