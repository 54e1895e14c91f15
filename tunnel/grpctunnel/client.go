package grpctunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// ErrUnauthenticated is returned by Dial when the gateway refused the
// agent's credential. A revoked agent gets tunnel.ErrRevoked instead.
var ErrUnauthenticated = errors.New("the gateway refused the agent's credential")

// DialConfig says how an agent connects one session. The zero value of each
// optional field works.
type DialConfig struct {
	// Addr is the gateway's tunnel address, host:port.
	Addr string
	// TLS verifies the gateway; ALPN is set by gRPC.
	TLS *tls.Config
	// Token, if set, is sent as a bearer token (gateways of this version
	// authenticate agents by their client certificate in TLS instead).
	Token string
	// Hello describes the agent; Transport is filled in, and so is
	// ProtocolVersion when zero (a test may announce an older version).
	Hello *tunnelv1.Hello
	// MinIdle is how many idle streams the agent keeps ready (0 → 16).
	MinIdle int
	// Keepalive is the ping interval that finds a dead path (0 →
	// DefaultKeepalive; see MinKeepalive). Below gRPC's floor of 10 s the
	// session sends its pings itself (pingConn).
	Keepalive time.Duration
	// DialContext opens the TCP connection (an outbound proxy goes here).
	// Nil → gRPC's own dialer.
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
	// Log receives session events. Nil → no logs.
	Log *zap.Logger
}

// ClientSession is one session as the agent sees it.
type ClientSession struct {
	cfg     DialConfig
	log     *zap.Logger
	cc      *grpc.ClientConn
	client  tunnelv1.TunnelServiceClient
	ctrl    grpc.BidiStreamingClient[tunnelv1.ControlRequest, tunnelv1.ControlResponse]
	cancel  context.CancelFunc // ends the control stream and the connection
	welcome *tunnelv1.Welcome

	srv       *tunnel.Server
	streamCtx context.Context // outgoing metadata carries the session id
	idle      atomic.Int32    // streams waiting for an exchange
	total     atomic.Int32    // open exchange streams
	draining  atomic.Bool
	wg        sync.WaitGroup // one per exchange stream
	// openFailed: an exchange stream failed to open, which was logged at
	// warn; later failures of the session go to debug (when the gateway
	// goes away, every idle stream's replacement fails at once).
	openFailed atomic.Bool

	drained     chan struct{} // closed when the gateway's Drain arrives; see Drained
	drainedOnce sync.Once
	// drainReason is the reason of the gateway's Drain, once it came:
	// the session's end says it (the gateway stopping then ends the
	// connection, which gRPC reports only as "error reading from server:
	// EOF").
	drainReason atomic.Pointer[string]
	ownDrain    tunnel.DrainReason // what this agent's drain gives the gateway (SetDrainReason)
}

// SetDrainReason sets the reason the session's drain gives the gateway,
// which logs it: the agent moves the session (to another gateway replica,
// to its renewed certificate) rather than stopping. Call it before Serve's
// drain is closed; unset, the reason is tunnel.DrainStopping.
func (c *ClientSession) SetDrainReason(reason string) { c.ownDrain.Set(reason) }

// Dial connects and authenticates one session. It fails with an error
// wrapping ErrUnauthenticated when the gateway refuses the token, and
// tunnel.ErrUnavailable when it cannot check it now (its database does not
// answer).
func Dial(ctx context.Context, cfg DialConfig) (*ClientSession, error) {
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	creds := batchedTLS{TransportCredentials: credentials.NewTLS(cfg.TLS)}
	if every, timeout := keepaliveParams(cfg.Keepalive); every < clientMinPingTime {
		creds.pingEvery, creds.pingTimeout = every, timeout // gRPC would ping every 10 s only
	}
	opts := append(dialOptions(cfg.Keepalive), grpc.WithTransportCredentials(creds))
	if cfg.DialContext != nil {
		opts = append(opts, grpc.WithContextDialer(cfg.DialContext))
	}
	cc, err := grpc.NewClient("passthrough:///"+cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial gateway %s: %w", cfg.Addr, err)
	}
	// The session's streams live on sctx, not on the caller's dial context.
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	c := &ClientSession{cfg: cfg, log: log, cc: cc, client: tunnelv1.NewTunnelServiceClient(cc), cancel: cancel,
		drained: make(chan struct{})}
	fail := func(err error) (*ClientSession, error) {
		cancel()
		cc.Close()
		return nil, err
	}
	// The keepalive tells the gateway how long this agent may stay silent
	// while alive (its liveness watch; see liveness.go).
	cctx := metadata.AppendToOutgoingContext(sctx, mdKeepalive, keepaliveMD(cfg.Keepalive))
	if cfg.Token != "" {
		cctx = metadata.AppendToOutgoingContext(cctx, mdAuthorization, "Bearer "+cfg.Token)
	}
	ctrl, err := c.client.Control(cctx, grpc.WaitForReady(false))
	if err != nil {
		return fail(fmt.Errorf("connect to gateway %s: %w", cfg.Addr, err))
	}
	hello := &tunnelv1.Hello{}
	if cfg.Hello != nil {
		hello = cfg.Hello
	}
	hello.ProtocolVersion = tunnel.Announced(hello.ProtocolVersion)
	hello.Transport = "grpc"
	if err := ctrl.Send(&tunnelv1.ControlRequest{Hello: hello}); err != nil && !errors.Is(err, io.EOF) {
		return fail(fmt.Errorf("send hello to gateway %s: %w", cfg.Addr, err))
	}
	m, err := ctrl.Recv()
	if err != nil {
		switch status.Code(err) {
		case codes.Unauthenticated:
			return fail(fmt.Errorf("%w: %s", ErrUnauthenticated, status.Convert(err).Message()))
		case codes.PermissionDenied:
			return fail(fmt.Errorf("%w: %s", tunnel.ErrRevoked, strings.TrimPrefix(status.Convert(err).Message(), "revoked: ")))
		case codes.Unavailable:
			if msg, ok := strings.CutPrefix(status.Convert(err).Message(), shuttingDownPrefix); ok {
				return fail(fmt.Errorf("connect to gateway %s: %w", cfg.Addr, tunnel.ShuttingDown(msg)))
			}
			if msg, ok := strings.CutPrefix(status.Convert(err).Message(), unavailablePrefix); ok {
				return fail(fmt.Errorf("connect to gateway %s: %w", cfg.Addr, tunnel.Unavailable(msg)))
			}
		}
		return fail(fmt.Errorf("connect to gateway %s: %w", cfg.Addr, err))
	}
	if m.GetWelcome() == nil {
		return fail(fmt.Errorf("connect to gateway %s: first control message is not a welcome", cfg.Addr))
	}
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	c.ctrl = ctrl
	c.welcome = m.GetWelcome()
	c.streamCtx = metadata.AppendToOutgoingContext(sctx, mdSession, c.welcome.GetSessionId())
	return c, nil
}

// SessionID is the id the gateway gave this session.
func (c *ClientSession) SessionID() string { return c.welcome.GetSessionId() }

// Group is the connector group the gateway put this agent in.
func (c *ClientSession) Group() string { return c.welcome.GetGroup() }

// Replica is the id of the gateway replica that holds the session ("" from
// gateways that do not say).
func (c *ClientSession) Replica() string { return c.welcome.GetReplica() }

// Replicas is the number of gateway replicas alive on the gateway's store
// when it welcomed the session (0: unknown).
func (c *ClientSession) Replicas() uint32 { return c.welcome.GetReplicas() }

// Drained is closed when the gateway announces that it will end this
// session (it shuts down, or the session's certificate expires soon). The
// session goes on serving until Serve's drain is closed or the gateway
// closes it; the agent opens a replacement meanwhile. Only Serve reads the
// control stream, so nothing arrives here before Serve runs.
func (c *ClientSession) Drained() <-chan struct{} { return c.drained }

func (c *ClientSession) minIdle() int32 {
	if c.cfg.MinIdle <= 0 {
		return defaultMinIdle
	}
	return int32(c.cfg.MinIdle)
}

func (c *ClientSession) maxStreams() int32 {
	if m := c.welcome.GetMaxStreams(); m > 0 {
		return int32(m)
	}
	return defaultMaxStreams
}

// Serve serves exchanges with srv until the session ends (it returns the
// reason) or until drain is closed: then it tells the gateway, lets the
// exchanges in flight finish, and returns nil. Cancelling ctx aborts the
// exchanges in flight at once.
func (c *ClientSession) Serve(ctx context.Context, srv *tunnel.Server, drain <-chan struct{}) error {
	defer c.cc.Close()
	defer c.cancel()
	stop := context.AfterFunc(ctx, c.cancel)
	defer stop()
	c.srv = srv

	ctrlErr := make(chan error, 1)
	go func() {
		for {
			m, err := c.ctrl.Recv()
			if err != nil {
				ctrlErr <- err
				return
			}
			if d := m.GetDrain(); d != nil {
				c.log.Info("the gateway will end this session", zap.String("reason", d.GetReason()))
				reason := d.GetReason()
				c.drainReason.CompareAndSwap(nil, &reason)
				c.drainedOnce.Do(func() { close(c.drained) })
			}
		}
	}()
	for range c.minIdle() {
		c.openStream()
	}
	allDone := make(chan struct{})
	select {
	case err := <-ctrlErr:
		c.draining.Store(true)
		c.cancel()
		c.wg.Wait()
		return fmt.Errorf("session ended%s: %s", c.afterDrain(), endReason(err))
	case <-drain:
	}
	// Draining: the gateway stops sending exchanges, retires idle streams
	// at once and busy ones when their exchange ends.
	c.draining.Store(true)
	if err := c.ctrl.Send(&tunnelv1.ControlRequest{Drain: &tunnelv1.Drain{Reason: c.ownDrain.String()}}); err != nil {
		c.log.Warn("could not tell the gateway that the agent is draining", zap.Error(err))
	}
	go func() {
		c.wg.Wait()
		close(allDone)
	}()
	select {
	case <-allDone:
	case <-ctx.Done():
		c.cancel()
		<-allDone
	case err := <-ctrlErr:
		c.cancel()
		<-allDone
		return fmt.Errorf("session ended while draining%s: %s", c.afterDrain(), endReason(err))
	}
	_ = c.ctrl.CloseSend()
	return nil
}

// afterDrain says, for the session's end, that the gateway announced it
// and why ("" when it did not).
func (c *ClientSession) afterDrain() string {
	r := c.drainReason.Load()
	if r == nil {
		return ""
	}
	if *r == "" {
		return " after the gateway's drain"
	}
	return " after the gateway's drain (" + *r + ")"
}

// openStream opens one more idle exchange stream and serves it.
func (c *ClientSession) openStream() {
	c.total.Add(1)
	c.idle.Add(1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		sctx, cancel := context.WithCancel(c.streamCtx)
		defer cancel()
		gs, err := c.client.Exchange(sctx)
		if err != nil {
			c.idle.Add(-1)
			c.total.Add(-1)
			if sctx.Err() == nil {
				c.logOpenFailed(err)
			}
			return
		}
		st := &clientStream{c: c, gs: gs, cancel: cancel}
		st.idle.Store(true)
		err = c.srv.ServeStream(sctx, st)
		if st.idle.Swap(false) {
			c.idle.Add(-1)
		}
		c.total.Add(-1)
		if err != nil && sctx.Err() == nil && status.Code(err) != codes.Aborted {
			c.log.Warn("exchange stream failed", zap.Error(err))
		}
		c.replenish()
	}()
}

// logOpenFailed logs that an exchange stream failed to open: at warn the
// first time in the session, at debug after that.
func (c *ClientSession) logOpenFailed(err error) {
	if c.openFailed.CompareAndSwap(false, true) {
		c.log.Warn("could not open an exchange stream (further failures of this session are logged at debug)", zap.Error(err))
		return
	}
	c.log.Debug("could not open an exchange stream", zap.Error(err))
}

// replenish keeps MinIdle streams ready.
func (c *ClientSession) replenish() {
	for !c.draining.Load() && c.streamCtx.Err() == nil &&
		c.idle.Load() < c.minIdle() && c.total.Load() < c.maxStreams() {
		c.openStream()
	}
}

// clientStream is one Exchange stream on the agent.
type clientStream struct {
	c      *ClientSession
	gs     grpc.BidiStreamingClient[tunnelv1.Frame, tunnelv1.Frame]
	cancel context.CancelFunc
	idle   atomic.Bool // waiting for an exchange
	last   *[]byte     // buffer of the frame Recv returned last; owned by the receiver
	spare  *pieceFrame // unused frame for the next RecvData; owned by the receiver
}

func (s *clientStream) Send(f *tunnel.Frame) error { return s.gs.Send(f) }

// SendData implements tunnel.DataSender.
func (s *clientStream) SendData(buf *[]byte, n int, release func(*[]byte)) error {
	return sendData(s.gs, buf, n, release)
}

// Recv receives into a pooled buffer and returns the previous one to the
// pool: tunnel.ServeStream, the only reader, is done with a frame's data
// when it calls Recv again (see tunnel.Stream and lease.Recv).
func (s *clientStream) Recv() (*tunnel.Frame, error) {
	s.putLast()
	pf := new(pooledFrame)
	if err := s.gs.RecvMsg(pf); err != nil {
		return nil, err
	}
	return s.received(pf), nil
}

// RecvData implements tunnel.DataReceiver: a frame with only data stays in
// gRPC's buffers (see pieceFrame).
func (s *clientStream) RecvData() (*tunnel.Frame, tunnel.Data, error) {
	s.putLast()
	pf := s.spare
	if pf == nil {
		pf = new(pieceFrame)
	}
	s.spare = nil
	if err := s.gs.RecvMsg(pf); err != nil {
		return nil, tunnel.Data{}, err
	}
	if d := pf.kept; d != nil {
		pf.kept = nil
		s.spare = pf
		return nil, d.data(), nil
	}
	return s.received(&pf.pooledFrame), tunnel.Data{}, nil
}

// putLast returns the buffer of the frame received last to the pool.
func (s *clientStream) putLast() {
	if s.last != nil {
		bufferPool.Put(s.last)
		s.last = nil
	}
}

// received takes over pf's buffer and notes that an exchange began.
func (s *clientStream) received(pf *pooledFrame) *tunnel.Frame {
	s.last = pf.buf
	f := &pf.Frame
	if f.Request != nil && s.idle.Swap(false) {
		s.c.idle.Add(-1)
		s.c.replenish()
	}
	return f
}

// KeepData implements tunnel.DataKeeper: the buffer of the frame Recv
// returned last goes to the caller instead of back to the pool.
func (s *clientStream) KeepData() (*[]byte, func(*[]byte), bool) {
	b := s.last
	s.last = nil
	return b, putBuffer, b != nil
}

// Finish(true) marks the stream idle again: the gateway pooled it for the
// next exchange. Finish(false) resets it.
func (s *clientStream) Finish(clean bool) {
	if !clean {
		s.cancel()
		return
	}
	if !s.idle.Swap(true) {
		s.c.idle.Add(1)
	}
}
