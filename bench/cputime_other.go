//go:build !unix

package bench

import (
	"errors"
	"time"
)

// cpuTime is not measured on this platform yet.
func cpuTime() (time.Duration, error) {
	return 0, errors.New("CPU time is measured only on Unix")
}
