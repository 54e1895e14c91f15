package tunnel

import (
	"fmt"
	"time"
)

// KeepaliveEndedReason says, for the log of self ("gateway" or "agent"),
// that its keepalive ended a session's connection because nothing came
// from peer for quiet (0: the transport does not say how long, QUIC's idle
// timeout): the peer's host or the network path is down, which is neither
// side closing it.
func KeepaliveEndedReason(peer, self string, quiet time.Duration) string {
	when := "within the keepalive"
	if quiet > 0 {
		when = "for " + quiet.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("nothing came from the %s %s: the %s's keepalive ended the connection "+
		"(the %s's host or its network path is down)", peer, when, self, peer)
}
