package grpctunnel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// watchSilentAfter is how long the gateway's liveness watch (muxtunnel's
// silentAfter) waits for anything from the agent after a new exchange
// before it sets the session aside.
const watchSilentAfter = time.Second

// TestLifelinesWithinWatch: an agent that receives data and writes nothing
// (an upload on a slow link, where the watch's probe waits behind the
// data) is heard from, by its lifelines, well within the time the
// gateway's liveness watch gives it after a new exchange: the longest gap
// between two lifelines (lifelineEvery and one tick, lifelineEvery/2)
// leaves a quarter of a second for the way back. Before, lifelines went
// every 2.5 to 3.75 s, and a new request during an upload at 128 kbit/s
// set the session aside for 1.25 to 2.3 s, 4 times in 13.5 s.
func TestLifelinesWithinWatch(t *testing.T) {
	if gap := lifelineEvery + lifelineEvery/2; gap > watchSilentAfter-watchSilentAfter/4 {
		t.Fatalf("lifelines up to %v apart while data comes in; the gateway's watch sets a session aside "+
			"after %v without a read", gap, watchSilentAfter)
	}
	// And still far within the shortest keepalive a peer may have, which
	// the lifelines are there for first.
	if gap := lifelineEvery + lifelineEvery/2; 2*gap > MinKeepalive {
		t.Fatalf("lifelines up to %v apart; a peer with a keepalive of %v ends the session after %v without a read",
			gap, MinKeepalive, 2*MinKeepalive)
	}
}

// TestEndedErrorHidesContextReasons: the error of an exchange whose
// session ended unwraps to the session's reason, unless that reason wraps a
// context's error (a revocation check whose store call timed out): the
// gateway takes context.Canceled for its client gone and DeadlineExceeded
// for a slow backend, and the exchange was neither. The stream's own error
// is unwrapped unless it only says the stream was cancelled.
func TestEndedErrorHidesContextReasons(t *testing.T) {
	plain := errors.New("its connector was revoked")
	timedOut := fmt.Errorf("checking revocation: %w", context.DeadlineExceeded)
	broke := errors.New("connection reset")
	for _, c := range []struct {
		reason, stream error
		is, isNot      []error
	}{
		{plain, context.Canceled, []error{plain}, []error{context.Canceled}},
		{plain, broke, []error{plain, broke}, nil},
		{timedOut, context.Canceled, nil, []error{context.DeadlineExceeded, context.Canceled}},
		{fmt.Errorf("x: %w", context.Canceled), broke, []error{broke}, []error{context.Canceled}},
	} {
		err := error(&endedError{reason: c.reason, err: c.stream})
		for _, e := range c.is {
			if !errors.Is(err, e) {
				t.Errorf("%v: errors.Is(%v) false, want true", err, e)
			}
		}
		for _, e := range c.isNot {
			if errors.Is(err, e) {
				t.Errorf("%v: errors.Is(%v) true, want false", err, e)
			}
		}
		if !strings.Contains(err.Error(), c.reason.Error()) {
			t.Errorf("%q does not say the reason %q", err, c.reason)
		}
	}
}
