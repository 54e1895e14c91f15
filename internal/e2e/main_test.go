// Package e2e holds the end-to-end tests of the relay: a real gateway and
// agents in process, real backends on loopback, real HTTP clients.
package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The race detector's and zaptest's background goroutines are not ours.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
