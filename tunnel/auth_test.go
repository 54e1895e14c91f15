package tunnel

import (
	"errors"
	"testing"
)

// TestShuttingDownSaysItOnce: a gateway's refusal while it shuts down was
// logged by agents as "the gateway is shutting down: the gateway is
// shutting down; connect to another replica or retry later"; the gateway's
// words now follow once, and the error still is ErrShuttingDown.
func TestShuttingDownSaysItOnce(t *testing.T) {
	for _, c := range []struct{ msg, want string }{
		{"the gateway is shutting down; connect to another replica or retry later",
			"the gateway is shutting down; connect to another replica or retry later"},
		{"the gateway is shutting down", "the gateway is shutting down"},
		{"draining for an upgrade", "the gateway is shutting down: draining for an upgrade"}, // other words: kept
	} {
		err := ShuttingDown(c.msg)
		if err.Error() != c.want || !errors.Is(err, ErrShuttingDown) {
			t.Errorf("ShuttingDown(%q) = %q (is ErrShuttingDown: %v); want %q, ErrShuttingDown", c.msg, err, errors.Is(err, ErrShuttingDown), c.want)
		}
	}
}
