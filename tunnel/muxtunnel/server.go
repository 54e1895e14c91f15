package muxtunnel

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// Server is the gateway end of the muxed transports. The zero value refuses
// every agent; set Authenticate and OnSession.
type Server struct {
	// Authenticate decides who the agent of a new session is from its TLS
	// connection state (with the client certificate the listener accepted)
	// and the token of its hello ("" when none), exactly as the gRPC
	// transport's hook. An error refuses the session and its message is
	// shown to the agent; one wrapping tunnel.ErrRevoked is reported as
	// "revoked", one wrapping tunnel.ErrUnavailable as "unavailable",
	// others as "unauthenticated". It is called in one place, authenticate.
	Authenticate func(state *tls.ConnectionState, token string) (tunnel.Identity, error)
	// OnSession is called once for each accepted session, before the agent
	// is welcomed (so it is routable by the time the agent reports that it
	// is connected) and before any of its streams can be opened.
	OnSession func(tunnel.Session)
	// Log receives session events. Nil → no logs.
	Log *zap.Logger
	// MaxStreams caps the exchange streams the gateway keeps open on one
	// session (0 → 10000). An exchange that finds every slot busy waits
	// (OpenStream's ctx bounds it).
	MaxStreams int
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
	// DrainWait bounds how long DrainAll waits for the agents to take the
	// shutdown message (0 → 5s).
	DrainWait time.Duration

	mu       sync.Mutex
	sessions map[*session]struct{} // guarded by mu
	// closing is DrainAll's reason once it was called: new sessions are
	// refused; "" before. Guarded by mu.
	closing string

	opened atomic.Uint64 // exchange streams opened by the gateway
	waits  atomic.Uint64 // OpenStream calls that found every slot busy
}

// Stats are counters over the server's lifetime.
type Stats struct {
	// StreamsOpened counts exchange streams: one per exchange, opened by
	// the gateway without waiting for the agent.
	StreamsOpened uint64
	// StreamWaits counts exchanges that had to wait because the session
	// already carried MaxStreams exchanges.
	StreamWaits uint64
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{StreamsOpened: s.opened.Load(), StreamWaits: s.waits.Load()}
}

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
		return DefaultMaxStreams
	}
	return s.MaxStreams
}

func (s *Server) helloTimeout() time.Duration {
	if s.HelloTimeout <= 0 {
		return HelloTimeout
	}
	return s.HelloTimeout
}

// authenticate is the one place where an agent's credential is checked.
func (s *Server) authenticate(c Conn, hello *tunnelv1.Hello) (tunnel.Identity, error) {
	if s.Authenticate == nil {
		return tunnel.Identity{}, errors.New("the gateway accepts no agents")
	}
	return s.Authenticate(c.TLSState(), hello.GetToken())
}

// Codes of ControlResponse.error.
const (
	codeUnauthenticated = "unauthenticated"
	codeRevoked         = "revoked"
	codeClosed          = "closed"        // the gateway closed the session as it registered it
	codeShuttingDown    = "shutting-down" // the gateway shuts down: try another replica (tunnel.ErrShuttingDown)
	codeUnavailable     = "unavailable"   // the gateway cannot check the agent now, its database does not answer: retry (tunnel.ErrUnavailable)
)

// ServeConn runs one agent connection until it ends or ctx is cancelled;
// transport names it in SessionInfo and logs. It always closes c. A
// connection refused during the handshake returns the reason.
func (s *Server) ServeConn(ctx context.Context, c Conn, transport string) error {
	defer c.Close("")
	remote := c.RemoteAddr()
	log := s.log().With(zap.String("transport", transport), zap.String("remote", remote))
	hello, ctrl, refused, err := s.readHello(ctx, c)
	if err != nil {
		select {
		case <-refused: // nil when no control stream came: never ready
			err = fmt.Errorf("%w before its hello", errExtraStream)
		default:
		}
		log.Warn("agent refused: no valid hello", zap.Error(err))
		return err
	}
	id, err := s.authenticate(c, hello)
	if err != nil {
		code, msg := codeUnauthenticated, "unauthenticated: "+err.Error()
		switch {
		case errors.Is(err, tunnel.ErrRevoked):
			code, msg = codeRevoked, err.Error()
		case errors.Is(err, tunnel.ErrUnavailable):
			// Not the agent's credential: the gateway could not check it
			// now. Agents older than the code read the words.
			code, msg = codeUnavailable, err.Error()
			if hello.GetProtocolVersion() < tunnel.VersionUnavailable {
				// Older agents take an unknown code for a failed
				// transport: as before, with the words they recognise.
				code, msg = codeUnauthenticated, "unauthenticated: "+err.Error()
			}
		}
		log.Warn("agent refused: "+refusalKind(err), zap.String("reason", err.Error()))
		_ = writeMsg(ctrl, &tunnelv1.ControlResponse{Error: &tunnelv1.Error{Code: code, Message: msg}}, maxControlSize)
		_ = ctrl.CloseWrite()
		// Let the answer reach the agent: it closes the connection when it
		// has read it.
		waitClosed(ctrl, time.Second)
		return fmt.Errorf("agent refused: %s: %w", refusalKind(err), err)
	}
	group := id.Group
	ss := s.newSession(c, ctrl, hello, id, transport)
	if ss == nil {
		log.Info("agent session refused: the gateway is shutting down", zap.String("agent", hello.GetName()))
		_ = writeMsg(ctrl, &tunnelv1.ControlResponse{Error: &tunnelv1.Error{Code: codeShuttingDown,
			Message: tunnel.ErrShuttingDown.Error() + "; connect to another replica or retry later"}}, maxControlSize)
		_ = ctrl.CloseWrite()
		waitClosed(ctrl, time.Second)
		return fmt.Errorf("agent refused: %w", tunnel.ErrShuttingDown)
	}
	defer ss.Close(nil)
	// Register before the welcome: once the agent has it (and says it is
	// connected) the gateway must already route to the session. A stream
	// opened in between waits in the agent's accept backlog.
	if s.OnSession != nil {
		s.OnSession(ss)
	}
	ss.welcomed.Store(true)
	select {
	case <-ss.done:
		// Closed as it was registered (one session too many for its
		// connector, or its revocation could not be checked): the agent
		// learns why.
		code, msg := codeClosed, "the gateway closed the session"
		if ss.reason != nil {
			msg = ss.reason.Error()
			if errors.Is(ss.reason, tunnel.ErrUnavailable) && hello.GetProtocolVersion() >= tunnel.VersionUnavailable {
				code = codeUnavailable
			}
		}
		_ = writeMsg(ctrl, &tunnelv1.ControlResponse{Error: &tunnelv1.Error{Code: code, Message: msg}}, maxControlSize)
		_ = ctrl.CloseWrite()
		waitClosed(ctrl, time.Second)
		return fmt.Errorf("agent refused: %s", msg)
	default:
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
		// Not the gateway's stop (the deferred Close's reason): the agent
		// reset its control stream, or the connection broke.
		ss.close(nil, welcomeFailed)
		return fmt.Errorf("send welcome: %w", err)
	}
	log = log.With(zap.String("session", ss.info.ID), zap.String("agent", ss.info.AgentName))
	log.Info("agent session started", zap.String("group", group), zap.String("version", ss.info.Version))

	ended := make(chan string, 2)
	go func() { ended <- ss.readControl(log) }()
	go func() { ended <- ss.refuseStreams(log, refused) }()
	var reason string
	select {
	case reason = <-ended:
	case <-ss.done:
		reason = "closed by the gateway"
		if errors.Is(ss.reason, errAgentDrained) {
			// The agent announced its drain (it stops, or moves the
			// session) and its last exchange is over: the close was the
			// agent's doing.
			reason = tunnel.AgentDrainedReason(ss.agentDrain)
		}
	case <-ctx.Done():
		reason = gatewayStopped
	}
	if quiet, ok := keepaliveEnded(ss.conn); ok && ctx.Err() == nil {
		// Not the agent's close: read as such, a dead agent's sessions
		// counted as lost, like a crash that reset the connection.
		ss.deadPath.Store(true)
		reason = tunnel.KeepaliveEndedReason("agent", "gateway", quiet)
	}
	ss.close(nil, reason)
	ss.endConn(reason)
	log.Info("agent session ended", zap.String("reason", reason))
	return nil
}

// drainEndWait bounds how long the end of a session whose agent was sent a
// Drain waits for the agent to close the connection (see endConn).
var drainEndWait = time.Second // a variable for tests

// endConn closes the connection of a session that ended (Close was called);
// reason is for the agent when the session's Close gave none. When the
// agent was sent a Drain, the gateway first ends its side of the control
// stream and lets the agent close the connection (it does at the stream's
// end, once it has read everything before it), for at most drainEndWait:
// QUIC discards the data an agent received but had not read yet when the
// gateway's CONNECTION_CLOSE arrives, so a shutdown that closed the
// sessions right after DrainAll lost the Drain, and the agent took the end
// for a lost session (a warning, "Application error 0x0 (remote)") where
// yamux and gRPC agents had heard of it.
//
// Only a Close without a reason (the gateway stops: CloseAll, ServeConn's
// context) ends that way; a Close with one (a revocation, a certificate
// that expired or was retired, a silent agent) closes the connection at
// once, with whatever still runs on it, as Close's callers expect. The
// wait is bounded by closing the connection, which also ends a CloseWrite
// that waits (yamux's waits until its FIN is written, behind everything
// queued for an agent that takes nothing, up to its 5-minute write
// timeout).
func (ss *session) endConn(reason string) {
	if ss.reason != nil {
		reason = ss.reason.Error()
	}
	// No control message is being written (the lock is free) and none
	// starts now that done is closed: ending the stream cannot cut one.
	if ss.orderly && ss.sendMu.TryLock() {
		t := time.AfterFunc(drainEndWait, func() { ss.conn.Close(reason) })
		err := ss.ctrl.CloseWrite()
		ss.sendMu.Unlock()
		if err == nil {
			<-ss.conn.Done() // the agent closed it, or t did
		}
		t.Stop()
	}
	ss.conn.Close(reason)
}

// readHello accepts the control stream and reads the hello, within the
// hello timeout. From the control stream on, it watches for streams the
// agent opens (see watchStreams): refused is closed at the first, which
// also ends a hello that is still awaited.
func (s *Server) readHello(ctx context.Context, c Conn) (_ *tunnelv1.Hello, _ RawStream, refused <-chan struct{}, _ error) {
	deadline := time.Now().Add(s.helloTimeout())
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ctrl, err := c.AcceptStream(hctx)
	if err != nil {
		if hctx.Err() != nil {
			return nil, nil, nil, errors.New("no control stream in time")
		}
		return nil, nil, nil, fmt.Errorf("accept control stream: %w", err)
	}
	refused = watchStreams(c)
	_ = ctrl.SetReadDeadline(deadline)
	read := make(chan struct{})
	go func() {
		select {
		case <-refused:
			_ = ctrl.SetReadDeadline(time.Now()) // the hello read fails at once
		case <-read:
		}
	}()
	var req tunnelv1.ControlRequest
	err = readMsg(ctrl, &req, maxControlSize)
	close(read)
	if err != nil {
		ctrl.Reset()
		return nil, nil, refused, fmt.Errorf("read hello: %w", err)
	}
	_ = ctrl.SetReadDeadline(time.Time{})
	if req.GetHello() == nil {
		ctrl.Reset()
		return nil, nil, refused, errors.New("the first control message is not a hello")
	}
	return req.GetHello(), ctrl, refused, nil
}

// errExtraStream: the agent opened a stream besides its control stream.
var errExtraStream = errors.New("agent opened more streams than allowed")

// watchStreams accepts the streams the agent opens besides its control
// stream, which the protocol forbids (M1), from the moment the control
// stream is accepted: a stream nobody accepts is not harmless before the
// hello either, since yamux buffers up to its 256 KiB initial window on
// each of up to 1,024 of them (one connection without a certificate held
// 64-128 MiB for the whole hello timeout). The first one is reset and
// closes the returned channel; the goroutine ends with the connection.
func watchStreams(c Conn) <-chan struct{} {
	refused := make(chan struct{})
	go func() {
		st, err := c.AcceptStream(context.Background())
		if err != nil {
			return // the connection ended
		}
		st.Reset()
		close(refused)
	}()
	return refused
}

// waitClosed reads st until the peer closes it or d passes.
func waitClosed(st RawStream, d time.Duration) {
	_ = st.SetReadDeadline(time.Now().Add(d))
	_, _ = io.Copy(io.Discard, io.LimitReader(st, maxControlSize))
}

// newSession registers a session, or returns nil when the server is
// closing (see DrainAll).
func (s *Server) newSession(c Conn, ctrl RawStream, h *tunnelv1.Hello, id tunnel.Identity, transport string) *session {
	ss := &session{
		srv:      s,
		conn:     c,
		ctrl:     ctrl,
		slots:    make(chan struct{}, s.maxStreams()),
		idle:     make(chan struct{}, 1),
		draining: make(chan struct{}),
		done:     make(chan struct{}),
		info: tunnel.SessionInfo{
			ID:          newID(),
			AgentID:     h.GetAgentId(),
			Connections: h.GetConnections(),
			AgentName:   h.GetName(),
			Group:       id.Group,
			ConnectorID: id.ConnectorID,
			CertSerial:  id.CertSerial,
			CertExpires: id.CertExpires,
			Started:     time.Now(),
			Version:     h.GetVersion(),
			Platform:    h.GetPlatform(),
			Transport:   transport,
			RemoteAddr:  c.RemoteAddr(),

			ProtocolVersion: tunnel.SessionVersion(h.GetProtocolVersion(), s.ProtocolVersion),
		},
	}
	if t := h.GetTransport(); t != "" && t != transport {
		s.log().Warn("agent reports another transport than it uses",
			zap.String("reported", t), zap.String("transport", transport))
	}
	if lc, ok := c.(LiveConn); ok {
		ss.live = newLiveWatch(ss, lc, s.log().With(zap.String("transport", transport), zap.String("remote", c.RemoteAddr()),
			zap.String("session", ss.info.ID), zap.String("agent", ss.info.AgentName)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != "" {
		return nil
	}
	if s.sessions == nil {
		s.sessions = make(map[*session]struct{})
	}
	s.sessions[ss] = struct{}{}
	return ss
}

func (s *Server) list() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		out = append(out, ss)
	}
	return out
}

// DrainAll tells every connected agent that the gateway is shutting down,
// and refuses new sessions from then on (code "shutting-down"): an agent
// replacing its drained session must reach another replica, not this
// gateway, which is about to close it. A session is either registered
// before DrainAll and gets the message, or refused.
// The messages go out side by side, and DrainAll waits for them at most
// DrainWait: an agent that takes none of its flow-control window (a QUIC
// stream write has no deadline) must not hold up the shutdown, or the
// other agents' messages. A send still blocked then ends when CloseAll
// closes its session.
func (s *Server) DrainAll(reason string) {
	s.mu.Lock()
	s.closing = reason
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range s.list() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = ss.SendDrain(reason)
		}()
	}
	sent := make(chan struct{})
	go func() {
		wg.Wait()
		close(sent)
	}()
	wait := s.DrainWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-sent:
	case <-t.C:
		if s.Log != nil {
			s.Log.Warn("some agents did not take the shutdown message in time; their sessions are closed without it",
				zap.Duration("waited", wait))
		}
	}
}

// SendDrain tells the agent of this session that the gateway will end it
// (reason says why, e.g. its certificate expires). The session keeps
// carrying exchanges; the gateway stops picking it and closes it later.
func (ss *session) SendDrain(reason string) error {
	return ss.sendControl(&tunnelv1.ControlResponse{Drain: &tunnelv1.Drain{Reason: reason}})
}

// CloseAll ends every session. The connection of one whose agent was sent
// a Drain ends once the agent has read it (see endConn), within
// drainEndWait.
func (s *Server) CloseAll() {
	for _, ss := range s.list() {
		ss.Close(nil)
	}
}

// session is one agent connection as the gateway sees it.
type session struct {
	srv    *Server
	conn   Conn
	ctrl   RawStream
	sendMu sync.Mutex // serialises control messages
	info   tunnel.SessionInfo

	slots     chan struct{} // one token per open exchange stream; never closed
	idle      chan struct{} // signalled when a stream ends while draining; never closed
	draining  chan struct{}
	drainOnce sync.Once
	// agentDrain is the reason of the agent's drain; written (by
	// readControl) before draining is closed and closeWhenIdle starts,
	// read after done is closed by closeWhenIdle's Close.
	agentDrain string
	done       chan struct{}
	closeOnce  sync.Once
	reason     error                     // why Close was called; nil for none; written before done is closed
	welcomed   atomic.Bool               // the welcome is on its way: Close closes the connection
	drainSent  atomic.Bool               // a Drain is being written or was (see Close)
	orderly    bool                      // Close left the connection to endConn; written in closeOnce
	greeted    bool                      // the welcome was sent; guarded by sendMu
	held       *tunnelv1.ControlResponse // a Drain asked for before the welcome; guarded by sendMu
	// live watches that the agent answers the exchanges sent to it (see
	// liveness.go); nil when the connection cannot tell (not a LiveConn).
	live *liveWatch
	// deadPath: the gateway's keepalive (or QUIC's idle timeout) ended the
	// connection, as nothing came from the agent (KeepaliveEnder); set
	// before done is closed.
	deadPath atomic.Bool
}

var _ tunnel.Session = (*session)(nil)

func (ss *session) Info() tunnel.SessionInfo  { return ss.info }
func (ss *session) Draining() <-chan struct{} { return ss.draining }
func (ss *session) Done() <-chan struct{}     { return ss.done }

// Silent reports that an exchange sent on the session went unanswered for
// about a second and nothing came from the agent since: its host or its
// network path may be down (see liveness.go); or, once the session ended,
// that the keepalive ended it (deadPath). Otherwise false on a connection
// that cannot tell.
func (ss *session) Silent() bool {
	return ss.deadPath.Load() || (ss.live != nil && ss.live.Silent())
}

// gatewayStopped is the reason the agent reads in the close of a session
// that the gateway's stop ends without the orderly end of a drained one
// (endConn): an agent that was not sent a Drain, or whose Drain is still
// stuck in a write. With no reason, a QUIC agent logged only
// "Application error 0x0 (remote)".
const gatewayStopped = "gateway stopped"

// welcomeFailed is the reason of the close of a session whose welcome (or
// the Drain held back for it) could not be written.
const welcomeFailed = "the gateway could not write the session's welcome"

// Close ends the session; the connection and its streams end with it.
// reason says why, to the agent too (QUIC carries it in the connection's
// close); nil: the gateway stops (see endConn).
func (ss *session) Close(reason error) { ss.close(reason, gatewayStopped) }

// close is Close, with why the text the connection's close carries when
// reason is nil (ServeConn's end says why the session ended).
func (ss *session) close(reason error, why string) {
	ss.closeOnce.Do(func() {
		ss.srv.mu.Lock()
		delete(ss.srv.sessions, ss)
		ss.srv.mu.Unlock()
		ss.reason = reason
		close(ss.done)
		if ss.live != nil {
			ss.live.stop()
		}
		if !ss.welcomed.Load() {
			// Closed as it was registered: ServeConn, still before the
			// welcome, tells the agent why and closes the connection.
			return
		}
		if reason == nil && ss.drainSent.Load() && ss.sendMu.TryLock() {
			// The gateway stops, the agent was sent a Drain and no write
			// is blocked (an agent that takes no data: closing the
			// connection ends the write): ServeConn, woken by done, lets
			// the agent read the Drain before the connection closes
			// (endConn). A Close with a reason cuts at once.
			ss.orderly = true
			ss.sendMu.Unlock()
			return
		}
		msg := why
		if reason != nil {
			msg = reason.Error()
		}
		ss.conn.Close(msg)
	})
}

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
	ss.noteDrain(m)
	if err := writeMsg(ss.ctrl, m, maxControlSize); err != nil || m.GetWelcome() == nil {
		return err
	}
	ss.greeted = true
	if h := ss.held; h != nil {
		ss.held = nil
		ss.noteDrain(h)
		return writeMsg(ss.ctrl, h, maxControlSize)
	}
	return nil
}

// noteDrain records, before m is written, that it is a Drain (see endConn).
func (ss *session) noteDrain(m *tunnelv1.ControlResponse) {
	if m.GetDrain() != nil {
		ss.drainSent.Store(true)
	}
}

// readControl handles the agent's control messages until the stream ends,
// and returns why it ended.
func (ss *session) readControl(log *zap.Logger) string {
	for {
		var m tunnelv1.ControlRequest
		if err := readMsg(ss.ctrl, &m, maxControlSize); err != nil {
			if errors.Is(err, io.EOF) {
				return "closed by the agent"
			}
			return err.Error()
		}
		switch {
		case m.GetDrain() != nil:
			log.Info("agent is draining", zap.String("reason", m.GetDrain().GetReason()))
			ss.drainOnce.Do(func() {
				ss.agentDrain = m.GetDrain().GetReason()
				close(ss.draining)
				go ss.closeWhenIdle()
			})
		default:
			// A message this version does not know: skip it.
		}
	}
}

// refuseStreams ends the session when the agent opens a stream (refused,
// from watchStreams): after the control stream, only the gateway opens
// streams (M1).
func (ss *session) refuseStreams(log *zap.Logger, refused <-chan struct{}) string {
	select {
	case <-refused:
	case <-ss.conn.Done():
		return "connection closed"
	}
	log.Warn("agent opened more streams than allowed; closing its session",
		zap.String("rule", "only the gateway opens streams after the control stream"))
	return errExtraStream.Error()
}

// closeWhenIdle ends a draining session once its last exchange is over:
// the gateway, which opens every stream, is the side that knows when none
// is left (M4), so the agent waits for this close.
func (ss *session) closeWhenIdle() {
	for len(ss.slots) > 0 {
		select {
		case <-ss.idle:
		case <-ss.done:
			return
		}
	}
	ss.Close(errAgentDrained)
}

// errAgentDrained is the reason closeWhenIdle closes a session the agent
// drained.
var errAgentDrained = errors.New("agent drained")

// releaseSlot frees the slot of an exchange that ended.
func (ss *session) releaseSlot() {
	<-ss.slots
	if ss.isDraining() {
		select {
		case ss.idle <- struct{}{}:
		default:
		}
	}
}

func (ss *session) isDraining() bool {
	select {
	case <-ss.draining:
		return true
	default:
		return false
	}
}

// OpenStream opens a fresh stream for one exchange. It waits only when the
// session already has MaxStreams exchanges in flight.
func (ss *session) OpenStream(ctx context.Context) (tunnel.Stream, error) {
	select {
	case <-ss.draining:
		return nil, ErrDraining
	case <-ss.done:
		return nil, ErrSessionClosed
	default:
	}
	// Fast path: a slot is free.
	select {
	case ss.slots <- struct{}{}:
	default:
		// Slow path: every slot is busy until an exchange ends.
		ss.srv.waits.Add(1)
		select {
		case ss.slots <- struct{}{}:
		case <-ss.draining:
			return nil, ErrDraining
		case <-ss.done:
			return nil, ErrSessionClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// A drain that began while this call took its slot: back off, so that
	// closeWhenIdle never closes under an exchange.
	if ss.isDraining() {
		ss.releaseSlot()
		return nil, ErrDraining
	}
	if ss.live != nil {
		ss.live.opening()
	}
	raw, err := ss.conn.OpenStream(ctx)
	if err != nil {
		if ss.live != nil {
			ss.live.openFailed()
		}
		ss.releaseSlot()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: open stream: %v", ErrSessionClosed, err)
	}
	ss.srv.opened.Add(1)
	return newStream(raw, true, ss.releaseSlot), nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// refusalKind names a refusal in the gateway's log by its cause, whatever
// code the agent's version is told.
func refusalKind(err error) string {
	switch {
	case errors.Is(err, tunnel.ErrRevoked):
		return codeRevoked
	case errors.Is(err, tunnel.ErrUnavailable):
		return codeUnavailable
	}
	return codeUnauthenticated
}
