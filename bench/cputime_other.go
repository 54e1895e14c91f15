//go:build !unix

package bench

import "time"

// cpuTime is not measured on this platform yet: the run goes on, and the
// CPU figures stay empty.
func cpuTime() (time.Duration, error) {
	return 0, errNoCPUTime
}
