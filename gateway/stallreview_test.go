package gateway

import (
	"strings"
	"testing"
)

// TestStallCutLogSaysWhatToDo: the line logged for an exchange the stall
// budget cut when no client held more than its share says what to do,
// since the one cut may be a user's download on a slow link (a gateway
// that serves more downloads bound by their clients' links at once than
// public.max_stalled_exchanges has them cut once their writes block for
// 100 ms); the line for a client over its share, which holds streams it
// does not read, does not ask for more room.
func TestStallCutLogSaysWhatToDo(t *testing.T) {
	const advice = "raise public.max_stalled_exchanges"
	for _, c := range []stallCut{{bytes: true}, {bytes: false}} {
		if msg := cutMessage(c, stallsPerClient, stallsPerAddress); !strings.Contains(msg, advice) {
			t.Errorf("a cut for the %s of clients within their share logs %q, which does not say what to do: want it to say %q",
				stallCutBound(c), msg, advice)
		}
		c.heavy = true
		if msg := cutMessage(c, stallsPerClient, stallsPerAddress); strings.Contains(msg, advice) {
			t.Errorf("a cut for the %s of a client over its share logs %q: want no advice to make room for it", stallCutBound(c), msg)
		}
	}
}

func stallCutBound(c stallCut) string {
	if c.bytes {
		return "bytes held"
	}
	return "count of stalled exchanges"
}
