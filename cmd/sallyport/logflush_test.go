//go:build !agentonly

package main

import (
	"strings"
	"testing"
)

// TestLogFlushIntervalNegative: a negative --log-flush-interval stops the
// command before it starts, saying what the flag takes.
func TestLogFlushIntervalNegative(t *testing.T) {
	path := writeStoreConfig(t, "")
	_, err := runCLI(t, "gateway", "--config", path, "--log-flush-interval", "-1s")
	if err == nil || !strings.Contains(err.Error(), "--log-flush-interval -1s: must be 0 (each line at once) or a positive duration such as 100ms") {
		t.Fatalf("got %v, want the interval's error", err)
	}
}
