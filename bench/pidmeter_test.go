package bench

import (
	"testing"
	"time"
)

// TestStatCPU: user plus system time from a /proc/PID/stat line, counted
// from the last ")" whatever the command name holds.
func TestStatCPU(t *testing.T) {
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
	line := "4242 (frp c) (x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 75 0 0 20 0 9 0 100 1000 300\n"
	if got, err := statCPU([]byte(line)); err != nil || got != 3250*time.Millisecond {
		t.Errorf("statCPU = %v, %v; want 3.25s (250 + 75 ticks of 10 ms)", got, err)
	}
	for _, bad := range []string{
		"4242 frpc S 1 4242",                              // no parentheses
		"4242 (frpc) S 1 4242 4242 0 -1 4194560 1500 0 0", // cut short
		"4242 (frpc) S 1 4242 4242 0 -1 4194560 1500 0 0 0 x 75 0",
		"4242 (frpc) S 1 4242 4242 0 -1 4194560 1500 0 0 0 -5 75 0",
	} {
		if got, err := statCPU([]byte(bad)); err == nil {
			t.Errorf("statCPU(%q) = %v, want an error", bad, got)
		}
	}
}
