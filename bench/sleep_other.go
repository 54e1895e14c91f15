//go:build !linux

package bench

import "time"

// preciseThread does nothing outside Linux.
func preciseThread() {}

// sleepUntil waits until t (with the runtime's timer precision); spin is
// not used outside Linux.
func sleepUntil(t time.Time, _ bool) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}
