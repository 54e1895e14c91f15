//go:build !linux

package bench

import "time"

// sleepUntil waits until t (with the runtime's timer precision).
func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}
