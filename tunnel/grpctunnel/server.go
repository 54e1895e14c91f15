package grpctunnel

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// Errors of OpenStream. Both mean nothing was sent: pick another session.
var (
	ErrSessionClosed = errors.New("tunnel session closed")
	ErrDraining      = errors.New("tunnel session is draining")
)

// Server is the gateway end: it implements the TunnelService. The zero value
// refuses every agent; set Authenticate and OnSession.
type Server struct {
	tunnelv1.UnimplementedTunnelServiceServer

	// Authenticate decides who the agent of a new session is from its TLS
	// connection state (with the client certificate the listener accepted;
	// nil without TLS) and the bearer token it sent ("" when none). An error
	// refuses the session and its message is shown to the agent; one
	// wrapping tunnel.ErrRevoked is reported as PERMISSION_DENIED, one
	// wrapping tunnel.ErrUnavailable as UNAVAILABLE, others as
	// UNAUTHENTICATED.
	// Implementations compare secrets in constant time.
	Authenticate func(state *tls.ConnectionState, token string) (tunnel.Identity, error)
	// OnSession is called once for each accepted session, before the agent
	// is welcomed (so it is routable by the time the agent reports that it
	// is connected) and before any of its streams can be opened.
	OnSession func(tunnel.Session)
	// Log receives session events. Nil → no logs.
	Log *zap.Logger
	// MaxStreams caps the streams of one session (0 → 10000). It must match
	// the gRPC server's MaxConcurrentStreams (see ServerOptions).
	MaxStreams int
	// MaxIdle caps the idle streams pooled per session (0 → 1024); streams
	// beyond it are retired when their exchange ends.
	MaxIdle int
	// HelloTimeout bounds the wait for the agent's hello (0 → 10s).
	HelloTimeout time.Duration
	// ProtocolVersion is the highest tunnel protocol version announced in
	// Welcome and used on sessions (0 → tunnel.ProtocolVersion); tests
	// lower it to play an older gateway.
	ProtocolVersion uint32
	// Replica is the id of this gateway replica, sent in every Welcome
	// ("" → none).
	Replica string
	// Replicas returns the number of gateway replicas alive, sent in every
	// Welcome so that agents spread their sessions over them (nil → 0,
	// unknown: agents do not spread).
	Replicas func() uint32
	// NewWatch makes the liveness watch of a session whose connection the
	// server knows (Credentials), which sets the session aside within
	// about a second when its agent stops answering (see liveness.go): the
	// gateway gives the QUIC and yamux sessions' (muxtunnel.NewWatch).
	// Nil → none: sessions are left to the keepalive.
	NewWatch func(s WatchedSession, c ProbingPeer, log *zap.Logger) Watch

	mu       sync.Mutex
	sessions map[string]*session // guarded by mu
	// closing is DrainAll's reason once it was called: new sessions are
	// refused; "" before. Guarded by mu.
	closing string
	// conns are the connections of the gRPC server (Credentials) by
	// their addresses (connKey): a session finds its own by its peer's.
	// Guarded by mu.
	conns map[string][]*pingConn

	opened atomic.Uint64 // exchange streams accepted
	waits  atomic.Uint64 // OpenStream calls that found no idle stream
}

// Stats are counters over the server's lifetime.
type Stats struct {
	// StreamsOpened counts exchange streams the agents opened. On warm
	// sessions it stays flat while exchanges reuse pooled streams.
	StreamsOpened uint64
	// StreamWaits counts exchanges that found no idle stream and had to wait
	// for the agent to open one (a round trip).
	StreamWaits uint64
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{StreamsOpened: s.opened.Load(), StreamWaits: s.waits.Load()}
}

// Register adds the service to gs.
func (s *Server) Register(gs *grpc.Server) { tunnelv1.RegisterTunnelServiceServer(gs, s) }

func (s *Server) replicas() uint32 {
	if s.Replicas == nil {
		return 0
	}
	return s.Replicas()
}

func (s *Server) log() *zap.Logger {
	if s.Log == nil {
		return zap.NewNop()
	}
	return s.Log
}

func (s *Server) maxStreams() int {
	if s.MaxStreams <= 0 {
		return defaultMaxStreams
	}
	return s.MaxStreams
}

func (s *Server) maxIdle() int {
	if s.MaxIdle <= 0 {
		return defaultMaxIdle
	}
	return s.MaxIdle
}

func (s *Server) helloTimeout() time.Duration {
	if s.HelloTimeout <= 0 {
		return 10 * time.Second
	}
	return s.HelloTimeout
}

// DrainAll tells every connected agent that the gateway is shutting down,
// and refuses new sessions from then on (tunnel.ErrShuttingDown): an agent
// replacing its drained session must reach another replica, not this
// gateway, which is about to close it. A session is either registered
// before DrainAll and gets the message, or refused.
func (s *Server) DrainAll(reason string) {
	s.mu.Lock()
	s.closing = reason
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	for _, ss := range list {
		_ = ss.SendDrain(reason)
	}
}

// SendDrain tells the agent of this session that the gateway will end it
// (reason says why, e.g. its certificate expires). The session keeps
// carrying exchanges; the gateway stops picking it and closes it later.
func (ss *session) SendDrain(reason string) error {
	return ss.sendControl(&tunnelv1.ControlResponse{Drain: &tunnelv1.Drain{Reason: reason}})
}

var errUnauthenticated = status.Error(codes.Unauthenticated, "unauthenticated: the gateway accepts no agents")

// unavailablePrefix starts the message of the UNAVAILABLE status that
// refuses a session the gateway cannot check now (tunnel.ErrUnavailable:
// its database does not answer). The client tells it by the prefix from
// gRPC's own UNAVAILABLE (a connection that failed), which it does not
// begin.
const unavailablePrefix = "unavailable: "

// Control authenticates an agent and lives as long as its session.
func (s *Server) Control(cs grpc.BidiStreamingServer[tunnelv1.ControlRequest, tunnelv1.ControlResponse]) error {
	ctx := cs.Context()
	remote := remoteAddr(ctx)
	id, err := s.authenticate(ctx)
	if err != nil {
		return err
	}
	group := id.Group

	// Everything after this runs with a reader goroutine so that the
	// handler can return (and so end the stream) without waiting on Recv.
	msgs := make(chan *tunnelv1.ControlRequest, 1)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := cs.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				// The stream ended as a message came (an agent's Drain
				// while the gateway stops): the handler must hear of it,
				// or it waits for ever, its session never closed.
				recvErr <- context.Cause(ctx)
				return
			}
		}
	}()
	var hello *tunnelv1.Hello
	timer := time.NewTimer(s.helloTimeout())
	select {
	case m := <-msgs:
		timer.Stop()
		hello = m.GetHello()
	case err := <-recvErr:
		timer.Stop()
		return err
	case <-timer.C:
		s.log().Warn("agent refused: no hello in time", zap.String("remote", remote))
		return status.Error(codes.DeadlineExceeded, "no hello message in time")
	}
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first control message must be a hello")
	}

	ss := s.newSession(cs, hello, id, remote)
	if ss == nil {
		s.log().Info("agent session refused: the gateway is shutting down",
			zap.String("agent", hello.GetName()), zap.String("remote", remote))
		return status.Error(codes.Unavailable, shuttingDownPrefix+"the gateway is shutting down; "+
			"connect to another replica or retry later")
	}
	defer ss.Close(nil)
	// Register before the welcome: once the agent has it (and says it is
	// connected) the gateway must already route to the session; exchanges
	// picked in between wait for the agent's first idle streams.
	if s.OnSession != nil {
		s.OnSession(ss)
	}
	welcome := &tunnelv1.ControlResponse{Welcome: &tunnelv1.Welcome{
		ProtocolVersion: tunnel.Announced(s.ProtocolVersion),
		SessionId:       ss.info.ID,
		Group:           group,
		MaxStreams:      uint32(s.maxStreams()),
		Replica:         s.Replica,
		Replicas:        s.replicas(),
	}}
	if err := ss.sendControl(welcome); err != nil {
		if errors.Is(err, ErrSessionClosed) && ss.reason != nil {
			// Closed as it was registered (one session too many for its
			// connector, or its revocation could not be checked): the
			// agent learns why.
			msg := "the gateway closed the session: " + ss.reason.Error()
			if errors.Is(ss.reason, tunnel.ErrUnavailable) {
				msg = unavailablePrefix + msg
			}
			return status.Error(codes.Unavailable, msg)
		}
		return err
	}
	s.log().Info("agent session started",
		zap.String("session", ss.info.ID), zap.String("agent", ss.info.AgentName),
		zap.String("group", group), zap.String("version", ss.info.Version),
		zap.String("transport", ss.info.Transport), zap.String("remote", remote))
	var agentDrain *string // the reason of the agent's drain, once it announced one
	for {
		select {
		case m := <-msgs:
			if d := m.GetDrain(); d != nil {
				s.log().Info("agent is draining", zap.String("session", ss.info.ID),
					zap.String("agent", ss.info.AgentName), zap.String("reason", d.GetReason()))
				if agentDrain == nil {
					r := d.GetReason()
					agentDrain = &r
				}
				ss.drain()
			}
		case err := <-recvErr:
			reason, deadPath := s.sessionEndReason(err, agentDrain, ss.conn)
			ss.deadPath.Store(deadPath)
			// Its exchanges in flight fail with the reason (endError).
			ss.Close(errors.New(reason))
			s.log().Info("agent session ended", zap.String("session", ss.info.ID),
				zap.String("agent", ss.info.AgentName), zap.String("reason", reason))
			return nil
		case <-ss.done:
			s.log().Info("agent session ended", zap.String("session", ss.info.ID),
				zap.String("agent", ss.info.AgentName), zap.String("reason", s.closedReason()))
			return status.Error(codes.Unavailable, "session closed by the gateway: "+ss.endReason().Error())
		}
	}
}

// closedReason says why the gateway closed a session (Close): as
// sessionEndReason, and as the QUIC and yamux sessions say it.
func (s *Server) closedReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != "" {
		return "gateway stopped"
	}
	return "closed by the gateway"
}

// sessionEndReason says why an agent's control stream ended with err, in
// the words of the QUIC and yamux sessions' log (muxtunnel): the gateway
// stopping (DrainAll was called: its gRPC server cancels the streams), the
// agent after its drain (agentDrain, its reason: it stops, or it moves the
// session), or the agent closing its connection.
// gRPC reports the last two, and the first, alike: the stream's context
// canceled ("Canceled: context canceled"), or io.EOF for a CloseSend.
// Other errors (a transport error) are said as they are. deadPath reports
// that the gateway's keepalive ended the connection: the session counts as
// silent (Silent), not as closed by its agent.
func (s *Server) sessionEndReason(err error, agentDrain *string, conn *pingConn) (reason string, deadPath bool) {
	s.mu.Lock()
	stopping := s.closing != ""
	s.mu.Unlock()
	switch {
	case stopping:
		return "gateway stopped", false
	case !agentGone(err):
		return endReason(err), false
	case agentDrain != nil:
		return tunnel.AgentDrainedReason(*agentDrain), false
	}
	if conn != nil {
		if quiet, here := conn.endedHere(); here && quiet >= MinKeepalive {
			// gRPC's keepalive closed the connection (it waits at least
			// MinKeepalive): its ping went unanswered. gRPC reports that
			// to the handler as the agent's own close (the stream's
			// context canceled).
			return tunnel.KeepaliveEndedReason("agent", "gateway", quiet), true
		} else if here {
			return "the gateway's gRPC ended the connection (a protocol error, or an agent that pings more often " +
				"than every " + MinKeepalive.String() + ": GOAWAY too_many_pings; see the gateway's log)", false
		}
	}
	return "closed by the agent", false
}

// agentGone reports whether err, from Recv on a control stream, says only
// that the agent's side ended: its connection closed or reset (the
// stream's context canceled) or it closed the stream (io.EOF).
func agentGone(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || cancelled(err)
}

func endReason(err error) string {
	if err == nil || errors.Is(err, context.Canceled) {
		return "closed"
	}
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// Exchange pools one idle stream of a session until the gateway uses it for
// exchanges and finally retires or resets it.
func (s *Server) Exchange(gs grpc.BidiStreamingServer[tunnelv1.Frame, tunnelv1.Frame]) error {
	ctx := gs.Context()
	ss, err := s.sessionFor(ctx)
	if err != nil {
		return err
	}
	if n := ss.streams.Add(1); int(n) > s.maxStreams() {
		ss.streams.Add(-1)
		s.log().Warn("agent opened more streams than allowed", zap.String("session", ss.info.ID),
			zap.Int("max_streams", s.maxStreams()))
		return status.Errorf(codes.ResourceExhausted, "more than %d streams on one session", s.maxStreams())
	}
	defer ss.streams.Add(-1)
	s.opened.Add(1)
	st := &stream{ss: ss, gs: gs, end: make(chan struct{})}
	ss.putIdle(st)
	select {
	case <-st.end:
		return st.endErr
	case <-ctx.Done():
		st.dead.Store(true)
		return ctx.Err()
	case <-ss.done:
		st.dead.Store(true)
		return status.Error(codes.Unavailable, "session closed: "+ss.endReason().Error())
	}
}

func (s *Server) sessionFor(ctx context.Context) (*session, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ids := md.Get(mdSession)
	if len(ids) != 1 {
		return nil, status.Error(codes.Unauthenticated, "exchange stream without a session id")
	}
	s.mu.Lock()
	ss := s.sessions[ids[0]]
	s.mu.Unlock()
	// The session id is a secret shared with one connection: a stream from
	// any other connection is refused even with the right id.
	if ss == nil || ss.remote != remoteAddr(ctx) {
		return nil, status.Error(codes.Unauthenticated, "unknown session")
	}
	return ss, nil
}

// newSession registers a session, or returns nil when the server is
// closing (see DrainAll).
func (s *Server) newSession(cs grpc.BidiStreamingServer[tunnelv1.ControlRequest, tunnelv1.ControlResponse], h *tunnelv1.Hello, id tunnel.Identity, remote string) *session {
	ss := &session{
		srv:      s,
		cs:       cs,
		remote:   remote,
		idle:     make(chan *stream, s.maxIdle()),
		draining: make(chan struct{}),
		done:     make(chan struct{}),
		info: tunnel.SessionInfo{
			ID:          newID(),
			AgentID:     h.GetAgentId(),
			Connections: h.GetConnections(),
			AgentName:   h.GetName(),
			Group:       id.Group,
			Version:     h.GetVersion(),
			Platform:    h.GetPlatform(),
			Transport:   "grpc",
			RemoteAddr:  remote,
			ConnectorID: id.ConnectorID,
			CertSerial:  id.CertSerial,
			CertExpires: id.CertExpires,
			Started:     time.Now(),

			ProtocolVersion: tunnel.SessionVersion(h.GetProtocolVersion(), s.ProtocolVersion),
		},
	}
	ss.watch(cs.Context()) // before other sessions can see ss (askAgent)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != "" {
		if ss.live != nil {
			ss.live.Stop()
		}
		return nil
	}
	if s.sessions == nil {
		s.sessions = make(map[string]*session)
	}
	s.sessions[ss.info.ID] = ss
	return ss
}

// session is one agent connection as the gateway sees it.
type session struct {
	srv    *Server
	cs     grpc.BidiStreamingServer[tunnelv1.ControlRequest, tunnelv1.ControlResponse]
	sendMu sync.Mutex // serialises sends on cs
	info   tunnel.SessionInfo
	remote string

	idle      chan *stream // pooled idle streams; never closed
	streams   atomic.Int32 // open exchange streams, idle or busy
	draining  chan struct{}
	drainOnce sync.Once
	done      chan struct{}
	closeOnce sync.Once
	reason    error                     // why the session ended (Close's reason, or why its control stream ended); nil for none; written before done is closed
	greeted   bool                      // the welcome was sent; guarded by sendMu
	held      *tunnelv1.ControlResponse // a Drain asked for before the welcome; guarded by sendMu

	// live watches that the agent answers the exchanges sent to it (see
	// liveness.go); nil when the session's connection is unknown
	// (credentials other than Server.Credentials) or the server has no
	// NewWatch. Set before the session registers.
	live Watch
	// conn is the session's connection when the server knows it
	// (Credentials), with or without a watch.
	conn *pingConn
	// deadPath: the gateway's keepalive ended the connection, as nothing
	// came from the agent; set before done is closed.
	deadPath atomic.Bool
}

var _ tunnel.Session = (*session)(nil)

func (ss *session) Info() tunnel.SessionInfo  { return ss.info }
func (ss *session) Draining() <-chan struct{} { return ss.draining }
func (ss *session) Done() <-chan struct{}     { return ss.done }

// sendControl sends m on the control stream. A Drain asked for before the
// welcome (by DrainAll, or the gateway's certificate watch, as the session
// registers) is held back and sent right after it: the agent takes only a
// welcome first.
func (ss *session) sendControl(m *tunnelv1.ControlResponse) error {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	select {
	case <-ss.done:
		return ErrSessionClosed
	default:
	}
	if m.GetWelcome() == nil && !ss.greeted {
		ss.held = m
		return nil
	}
	if err := ss.cs.Send(m); err != nil || m.GetWelcome() == nil {
		return err
	}
	ss.greeted = true
	if h := ss.held; h != nil {
		ss.held = nil
		return ss.cs.Send(h)
	}
	return nil
}

// Close ends the session; its streams end with it, with reason.
func (ss *session) Close(reason error) {
	ss.closeOnce.Do(func() {
		ss.srv.mu.Lock()
		delete(ss.srv.sessions, ss.info.ID)
		ss.srv.mu.Unlock()
		ss.reason = reason
		close(ss.done)
		if ss.live != nil {
			ss.live.Stop()
		}
	})
}

// drain stops new exchanges and retires the idle streams; busy streams are
// retired when their exchange ends.
func (ss *session) drain() {
	ss.drainOnce.Do(func() { close(ss.draining) })
	ss.retireIdle()
}

// retireIdle retires the pooled idle streams.
func (ss *session) retireIdle() {
	for {
		select {
		case st := <-ss.idle:
			st.finish(nil)
		default:
			return
		}
	}
}

func (ss *session) isDraining() bool {
	select {
	case <-ss.draining:
		return true
	case <-ss.done:
		return true
	default:
		return false
	}
}

// putIdle pools st, or retires it when the pool is full or the session is
// draining.
func (ss *session) putIdle(st *stream) {
	if ss.isDraining() {
		st.finish(nil)
		return
	}
	select {
	case ss.idle <- st:
		// A drain (or Close) that began after the check above may have
		// emptied the pool before st arrived: empty it again. Only that:
		// after a Close, closing draining too would make OpenStream
		// waiters report ErrDraining instead of ErrSessionClosed.
		if ss.isDraining() {
			ss.retireIdle()
		}
	default:
		st.finish(nil)
	}
}

// OpenStream takes an idle stream; on a warm session this never waits.
func (ss *session) OpenStream(ctx context.Context) (tunnel.Stream, error) {
	armed := false // this wait armed the liveness watch
	for {
		// Fast path: an idle stream is ready.
		select {
		case st := <-ss.idle:
			if l := st.lease(); l != nil {
				ss.opening()
				return l, nil
			}
			continue
		default:
		}
		// Slow path: every stream is busy; the agent opens more as soon as
		// it sees its idle streams taken.
		ss.srv.waits.Add(1)
		if !armed && !ss.isDraining() && ctx.Err() == nil {
			// The wait is an exchange's, and watched as one (the agent's
			// gRPC answers the watch's probe, whether or not it can open
			// a stream now): a dead agent opens none, and the exchanges
			// that wait for one, after a burst took every idle stream,
			// waited for the keepalive, with the session still picked.
			// Not when no stream will be taken (draining, closed, the
			// exchange given up).
			armed = true
			ss.opening()
		}
		select {
		case st := <-ss.idle:
			if l := st.lease(); l != nil {
				ss.opening()
				return l, nil
			}
		case <-ss.draining:
			return nil, ErrDraining
		case <-ss.done:
			return nil, ErrSessionClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// stream is one Exchange stream on the gateway.
type stream struct {
	ss *session
	gs grpc.BidiStreamingServer[tunnelv1.Frame, tunnelv1.Frame]

	dead    atomic.Bool   // its context ended while it sat in the pool
	end     chan struct{} // closed to make the handler return
	endErr  error         // written before end is closed
	endOnce sync.Once
}

// lease hands the stream to one exchange, or returns nil when it is dead.
func (st *stream) lease() *lease {
	if st.dead.Load() || st.gs.Context().Err() != nil {
		return nil
	}
	return &lease{st: st}
}

// finish makes the handler return err (nil retires the stream cleanly).
func (st *stream) finish(err error) {
	st.endOnce.Do(func() {
		st.endErr = err
		close(st.end)
	})
}

var errReset = status.Error(codes.Aborted, "exchange reset by the gateway")

// lease is a stream while one exchange uses it; a late Finish from an
// earlier exchange cannot touch the next one.
type lease struct {
	st       *stream
	finished atomic.Bool
	last     *[]byte     // buffer of the frame Recv returned last; owned by the receiver
	spare    *pieceFrame // unused frame for the next RecvData; owned by the receiver
	// first is the frame of the first Recv (RoundTrip's response head; a
	// small exchange receives only that one), in the lease's allocation;
	// owned by the receiver.
	first     pooledFrame
	recvFirst bool // first was used; owned by the receiver
}

func (l *lease) Send(f *tunnel.Frame) error {
	if l.finished.Load() {
		return ErrSessionClosed
	}
	if err := l.st.gs.Send(f); err != nil {
		return l.st.ss.endError(err)
	}
	return nil
}

// Recv receives into a pooled buffer. tunnel.RoundTrip, the only reader of
// a lease, is done with a frame's data when it calls Recv again (see
// tunnel.Stream), so the previous buffer goes back to the pool here, and
// the last one at a clean Finish. An unclean Finish does not release it: it
// may run in another goroutine while the reader still copies the data out;
// that last buffer is left to the GC.
// SendData implements tunnel.DataSender.
func (l *lease) SendData(buf *[]byte, n int, release func(*[]byte)) error {
	if l.finished.Load() {
		return ErrSessionClosed
	}
	if err := sendData(l.st.gs, buf, n, release); err != nil {
		return l.st.ss.endError(err)
	}
	return nil
}

func (l *lease) Recv() (*tunnel.Frame, error) {
	if err := l.beforeRecv(); err != nil {
		return nil, err
	}
	f := &l.first
	if l.recvFirst {
		f = new(pooledFrame)
	}
	l.recvFirst = true
	if err := l.st.gs.RecvMsg(f); err != nil {
		return nil, l.st.ss.endError(err)
	}
	l.last = f.buf
	return &f.Frame, nil
}

// RecvData implements tunnel.DataReceiver: a frame with only data stays in
// gRPC's buffers (see pieceFrame).
func (l *lease) RecvData() (*tunnel.Frame, tunnel.Data, error) {
	if err := l.beforeRecv(); err != nil {
		return nil, tunnel.Data{}, err
	}
	f := l.spare
	if f == nil {
		f = new(pieceFrame)
	}
	l.spare = nil
	if err := l.st.gs.RecvMsg(f); err != nil {
		return nil, tunnel.Data{}, l.st.ss.endError(err)
	}
	if d := f.kept; d != nil {
		f.kept = nil
		l.spare = f
		return nil, d.data(), nil
	}
	l.last = f.buf
	return &f.Frame, tunnel.Data{}, nil
}

// beforeRecv returns the previous frame's buffer to the pool and refuses a
// finished lease.
func (l *lease) beforeRecv() error {
	if l.last != nil {
		bufferPool.Put(l.last)
		l.last = nil
	}
	if l.finished.Load() {
		return ErrSessionClosed
	}
	return nil
}

func (l *lease) Finish(clean bool) {
	if !l.finished.CompareAndSwap(false, true) {
		return
	}
	if clean {
		// A clean finish comes after the reader's last Recv, once it has
		// copied out the data (tunnel.Stream): the last buffer can go back
		// to the pool. A small exchange receives once, so without this its
		// buffer was garbage every time.
		if l.last != nil {
			bufferPool.Put(l.last)
			l.last = nil
		}
		l.st.ss.putIdle(l.st)
		return
	}
	l.st.finish(errReset)
}

// authenticate runs the Authenticate hook on the stream's connection.
func (s *Server) authenticate(ctx context.Context) (tunnel.Identity, error) {
	remote := remoteAddr(ctx)
	token := bearerToken(ctx)
	var state *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			state = &ti.State
		}
	}
	if s.Authenticate == nil {
		return tunnel.Identity{}, errUnauthenticated
	}
	id, err := s.Authenticate(state, token)
	if err == nil {
		return id, nil
	}
	if errors.Is(err, tunnel.ErrRevoked) {
		s.log().Warn("agent refused: revoked", zap.String("remote", remote), zap.String("reason", err.Error()))
		return id, status.Error(codes.PermissionDenied, err.Error())
	}
	if errors.Is(err, tunnel.ErrUnavailable) {
		// Not the agent's credential: the gateway could not check it now.
		s.log().Warn("agent refused: unavailable", zap.String("remote", remote), zap.String("reason", err.Error()))
		return id, status.Error(codes.Unavailable, unavailablePrefix+err.Error())
	}
	s.log().Warn("agent refused: unauthenticated", zap.String("remote", remote), zap.String("reason", err.Error()))
	return id, status.Error(codes.Unauthenticated, "unauthenticated: "+err.Error())
}

func bearerToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(mdAuthorization)
	if len(v) != 1 {
		return ""
	}
	tok, ok := strings.CutPrefix(v[0], "Bearer ")
	if !ok {
		return ""
	}
	return tok
}

func remoteAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
