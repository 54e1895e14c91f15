package muxtunnel

// What the gateway's registry reads of a session to tell a live agent
// process from a dead one after a later process of its connector set it
// aside (gateway's supersedeLocked): whether anything came from the agent
// since, and a way to ask it.

// Heard counts what the session's connection received from the agent so
// far (LiveConn.Received: packets over QUIC, bytes over yamux); any change
// is a sign of life. A live agent is heard at least every keepalive: it
// pings, and it answers the gateway's pings. ok is false when the
// connection cannot tell (not a LiveConn).
func (ss *session) Heard() (n uint64, ok bool) {
	if ss.live == nil { // made only for a LiveConn, which it watches
		return 0, false
	}
	return ss.live.c.Received(), true
}

// Ask asks the agent for a sign of life without blocking: a live agent's
// transport answers within a round trip (counted by Heard); a dead one's
// session is set aside by its liveness watch within about a second and
// closed some seconds later (see liveness.go). Nothing on a connection
// that cannot tell.
func (ss *session) Ask() {
	if ss.live != nil {
		ss.live.ask()
	}
}
