package grpctunnel

// What the gateway's registry reads of a session to tell a live agent
// process from a dead one after a later process of its connector set it
// aside (gateway's supersedeLocked): whether anything came from the agent
// since, and a way to ask it.

// Heard counts the bytes read from the agent on the session's connection
// so far (pingConn.Received); any change is a sign of life. A live agent
// is heard at least every keepalive: it pings after its keepalive without
// a read, and it answers the gateway's pings. ok is false when the
// session's connection is unknown (see session.watch).
func (ss *session) Heard() (n uint64, ok bool) {
	if ss.conn == nil || ss.live == nil {
		return 0, false
	}
	return ss.conn.Received(), true
}

// Ask asks the agent for a sign of life without blocking (the liveness
// watch's Ask: a PING, which a live agent's gRPC answers at once, counted
// by Heard); a dead agent's session is set aside by the watch within
// about a second and closed after its keepalive and a second. Nothing when
// the session has no watch.
func (ss *session) Ask() {
	if ss.live != nil {
		ss.live.Ask()
	}
}
