package grpctunnel

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Liveness: a gRPC agent whose host died or whose path was cut silently
// says nothing, and the gateway's keepalive notices only after keepalive +
// min(keepalive, 10s) (25 s by default, 10 s with 5 s); meanwhile the
// registry went on picking its sessions, and every exchange sent there
// waited as long, although another agent of the group was fine. QUIC and
// yamux sessions notice within about a second (muxtunnel's liveness
// watch), because a live agent's transport answers a new exchange at once.
// A gRPC agent does not: an exchange goes out on a pooled stream, and
// nothing comes back until its response (3 s for a slow backend).
//
// So each gateway session watches its exchanges with the watch the server
// is given (Server.NewWatch: the gateway gives muxtunnel's, as transports
// import no other transport), and asks the agent for an answer when one
// starts a wait: an HTTP/2 PING written on the session's connection (pingConn's
// Probe), which a live agent's gRPC answers with a PING ACK at once, ahead
// of its queued data. Anything read from the agent counts as the answer.
// An exchange unanswered for a second sets the session aside (Silent: the
// registry picks it only when no other session can take the exchange),
// and the agent's other sessions are asked; nothing at all from the agent
// for its keepalive and a second closes the session (a live agent pings
// after its keepalive without a read, so it is never silent that long).
// The agent says its keepalive in the control stream's metadata
// (mdKeepalive); an agent of an older version says none, and is given
// maxPeerKeepalive, so that only the keepalive closes its sessions (it is
// still set aside within a second: its gRPC answers the PING too).
// Measured with one agent of two blackholed: set aside 1 to 1.5 s after
// the next exchange sent to it, closed 6 s after it with keepalives of 5 s
// (10 s before) and 16 s with the defaults (25 s before), which is also
// how long the exchanges already sent there wait (a GET among them is then
// sent again over the other agent). A PING goes out only when an exchange
// finds the watch idle, or its window is ambiguous, and never while
// another is unanswered (pingConn.Probe); a live agent's gRPC counts no
// strikes for it (a client enforces no ping policy).
//
// The session finds its connection by the addresses gRPC reports for the
// stream's peer (connKey), which the connection registered when it was
// made (Server.Credentials).

// mdKeepalive is the control stream's metadata key in which the agent says
// its keepalive, in milliseconds: after that long without a read it pings.
// Gateways of older versions ignore it.
const mdKeepalive = "sallyport-keepalive"

// maxPeerKeepalive is the longest keepalive an agent may have (the
// configuration's maximum), assumed of an agent that says none.
const maxPeerKeepalive = 2 * time.Minute

// peerKeepalive is the keepalive the agent said in md (mdKeepalive),
// within [MinKeepalive, maxPeerKeepalive]; maxPeerKeepalive when it said
// none or nonsense.
func peerKeepalive(md metadata.MD) time.Duration {
	v := md.Get(mdKeepalive)
	if len(v) != 1 {
		return maxPeerKeepalive
	}
	ms, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || ms <= 0 || ms > int64(maxPeerKeepalive/time.Millisecond) {
		return maxPeerKeepalive
	}
	return max(time.Duration(ms)*time.Millisecond, MinKeepalive)
}

// keepaliveMD is the value of mdKeepalive for an agent's keepalive (0 →
// DefaultKeepalive): the period after which it pings without a read,
// whether gRPC's pings or pingConn's.
func keepaliveMD(keepalive time.Duration) string {
	every, _ := keepaliveParams(keepalive)
	return strconv.FormatInt(every.Milliseconds(), 10)
}

// connKey identifies a connection by its two addresses.
func connKey(local, remote fmt.Stringer) string {
	if local == nil || remote == nil {
		return ""
	}
	return local.String() + " " + remote.String()
}

// track registers p, a connection of the gRPC server, until it closes;
// s nil: nothing.
func (s *Server) track(p *pingConn) *pingConn {
	if s == nil {
		return p
	}
	key := connKey(p.LocalAddr(), p.RemoteAddr())
	if key == "" {
		return p
	}
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[string][]*pingConn)
	}
	s.conns[key] = append(s.conns[key], p)
	s.mu.Unlock()
	p.onClose = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		l := s.conns[key]
		for i, c := range l {
			if c == p {
				l = append(l[:i], l[i+1:]...)
				break
			}
		}
		if len(l) == 0 {
			delete(s.conns, key)
		} else {
			s.conns[key] = l
		}
	}
	return p
}

// connOf returns the connection of the stream whose context is ctx, or nil
// when it is unknown (or ambiguous: connections without real addresses).
func (s *Server) connOf(ctx context.Context) *pingConn {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil || p.LocalAddr == nil {
		return nil
	}
	key := connKey(p.LocalAddr, p.Addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.conns[key]; len(l) == 1 {
		return l[0]
	}
	return nil
}

// Watch is a session's liveness watch (Server.NewWatch).
type Watch interface {
	// Opening notes an exchange about to be sent, before anything of it is.
	Opening()
	// Silent reports that an exchange went unanswered for about a second
	// and nothing came from the agent since.
	Silent() bool
	// Ask probes the agent and judges the answer as an exchange's.
	Ask()
	// Stop ends the watch for good.
	Stop()
}

// WatchedSession is a session as its watch sees it.
type WatchedSession interface {
	Done() <-chan struct{}
	// Close ends the session: its agent is silent for longer than a live
	// one ever is (reason says so).
	Close(reason error)
	// AgentSilent is called when the session turned Silent: the agent's
	// other sessions are asked (their Watch.Ask).
	AgentSilent()
	// Exchanges counts the exchanges the session carries (for the log).
	Exchanges() int
}

// ProbingPeer is a session's connection as its watch sees it.
type ProbingPeer interface {
	// Received counts the bytes read from the agent so far.
	Received() uint64
	// RTT is the round-trip time; 0 when unknown.
	RTT() time.Duration
	// PeerKeepalive is the longest a live agent stays silent while it
	// hears nothing: its keepalive (mdKeepalive).
	PeerKeepalive() time.Duration
	// Probe asks the agent for an answer (a PING) without blocking.
	Probe()
}

// watch makes the session's liveness watch when its connection is known;
// ctx is the control stream's. It runs before the session registers.
// The connection is kept without a watch too: a stream that broke with it
// waits for the session's end reason (endError).
func (ss *session) watch(ctx context.Context) {
	c := ss.srv.connOf(ctx)
	if c == nil {
		return
	}
	ss.conn = c
	if ss.srv.NewWatch == nil {
		return
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ss.live = ss.srv.NewWatch(liveSession{ss}, livePeer{c, peerKeepalive(md)},
		ss.srv.log().With(zap.String("transport", "grpc"), zap.String("remote", ss.remote),
			zap.String("session", ss.info.ID), zap.String("agent", ss.info.AgentName)))
}

// opening notes an exchange about to be sent on the session.
func (ss *session) opening() {
	if ss.live != nil {
		ss.live.Opening()
	}
}

// Silent reports that an exchange sent on the session went unanswered for
// about a second and nothing came from the agent since (the gateway's
// registry then picks it only when no other session can be); or, once the
// session ended, that the gateway's keepalive ended it (deadPath).
func (ss *session) Silent() bool {
	return ss.deadPath.Load() || (ss.live != nil && ss.live.Silent())
}

// askAgent asks the other sessions of ss's agent for an answer: they
// share its host and often its path, and the registry picks none of them
// while ss is silent.
func (s *Server) askAgent(ss *session) {
	if ss.info.AgentID == "" {
		return
	}
	s.mu.Lock()
	var others []*session
	for _, o := range s.sessions {
		if o != ss && o.live != nil && o.info.AgentID == ss.info.AgentID {
			others = append(others, o)
		}
	}
	s.mu.Unlock()
	for _, o := range others {
		o.live.Ask()
	}
}

// liveSession is a session as its watch sees it (WatchedSession).
type liveSession struct{ ss *session }

func (l liveSession) Done() <-chan struct{} { return l.ss.done }
func (l liveSession) AgentSilent()          { l.ss.srv.askAgent(l.ss) }

// Exchanges counts the session's streams that carry an exchange (open,
// less those idle in the pool).
func (l liveSession) Exchanges() int { return max(int(l.ss.streams.Load())-len(l.ss.idle), 0) }

// Close ends a session whose agent is silent, and its connection, at once
// (a dead path takes no close_notify): gRPC ends the exchanges on it, and
// the gateway sends a GET among them again over another agent.
func (l liveSession) Close(reason error) {
	l.ss.Close(reason)
	go l.ss.conn.abort()
}

// livePeer is a session's connection as its watch sees it
// (ProbingPeer), with the keepalive its agent said.
type livePeer struct {
	*pingConn
	keepalive time.Duration
}

func (p livePeer) PeerKeepalive() time.Duration { return p.keepalive }
