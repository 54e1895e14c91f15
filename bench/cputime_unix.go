//go:build unix

package bench

import (
	"syscall"
	"time"
)

// cpuTime is the calling process's user plus system CPU time, every thread
// included.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
