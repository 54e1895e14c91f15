package muxtunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// ClientConfig says how an agent starts a session on a connected Conn.
type ClientConfig struct {
	// Token is the agent credential; it decides the connector group.
	Token string
	// Hello describes the agent; Transport and Token are filled in, and so
	// is ProtocolVersion when zero (a test may announce an older version).
	Hello *tunnelv1.Hello
	// Transport names the transport in the hello ("quic" or "yamux").
	Transport string
	// MaxStreams caps the exchanges the gateway may run at once on this
	// session (0 → 10000); streams beyond it are reset.
	MaxStreams int
	// Log receives session events. Nil → no logs.
	Log *zap.Logger
}

// ClientSession is one session as the agent sees it.
type ClientSession struct {
	cfg     ClientConfig
	log     *zap.Logger
	conn    Conn
	ctrl    RawStream
	welcome *tunnelv1.Welcome

	wg sync.WaitGroup // the accept loop and the stream goroutines

	// handoff passes an accepted stream to an idle stream goroutine;
	// unbuffered, never closed.
	handoff chan RawStream
	idle    atomic.Int32 // stream goroutines waiting on handoff
	started atomic.Int32 // stream goroutines started
	onIdle  func()       // test hook: a stream goroutine is about to wait on handoff; nil

	mu   sync.Mutex
	open int32 // exchange streams being served; guarded by mu

	drained     chan struct{} // closed when the gateway's Drain arrives; see Drained
	drainedOnce sync.Once
	ownDrain    tunnel.DrainReason // what this agent's drain gives the gateway (SetDrainReason)
}

// SetDrainReason sets the reason the session's drain gives the gateway,
// which logs it: the agent moves the session (to another gateway replica,
// to its renewed certificate) rather than stopping. Call it before Serve's
// drain is closed; unset, the reason is tunnel.DrainStopping.
func (c *ClientSession) SetDrainReason(reason string) { c.ownDrain.Set(reason) }

// maxIdleStreamGoroutines bounds the goroutines that stay to serve later
// streams once theirs is done: enough for a burst of concurrent exchanges
// to find them warm.
const maxIdleStreamGoroutines = 128

// Handshake opens the control stream on c, sends the hello and waits for
// the welcome (at most 10 s, and no longer than ctx). On failure it closes
// c; a refused token gives an error wrapping ErrUnauthenticated, a gateway
// that cannot check it now (its database does not answer) one wrapping
// tunnel.ErrUnavailable.
func Handshake(ctx context.Context, c Conn, cfg ClientConfig) (*ClientSession, error) {
	fail := func(err error) (*ClientSession, error) {
		c.Close("")
		return nil, err
	}
	ctrl, err := c.OpenStream(ctx)
	if err != nil {
		return fail(fmt.Errorf("open control stream: %w", err))
	}
	hello := &tunnelv1.Hello{}
	if cfg.Hello != nil {
		hello = cloneHello(cfg.Hello)
	}
	hello.ProtocolVersion = tunnel.Announced(hello.ProtocolVersion)
	hello.Transport = cfg.Transport
	hello.Token = cfg.Token
	if err := writeMsg(ctrl, &tunnelv1.ControlRequest{Hello: hello}, maxControlSize); err != nil {
		return fail(fmt.Errorf("send hello: %w", err))
	}
	deadline := time.Now().Add(HelloTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = ctrl.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = ctrl.SetReadDeadline(time.Now()) })
	var m tunnelv1.ControlResponse
	err = readMsg(ctrl, &m, maxControlSize)
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(fmt.Errorf("read welcome: %w", err))
	}
	_ = ctrl.SetReadDeadline(time.Time{})
	if e := m.GetError(); e != nil {
		switch e.GetCode() {
		case codeUnauthenticated:
			return fail(fmt.Errorf("%w: %s", ErrUnauthenticated, e.GetMessage()))
		case codeRevoked:
			return fail(fmt.Errorf("%w: %s", tunnel.ErrRevoked, strings.TrimPrefix(e.GetMessage(), "revoked: ")))
		case codeShuttingDown:
			return fail(tunnel.ShuttingDown(e.GetMessage()))
		case codeUnavailable:
			return fail(tunnel.Unavailable(e.GetMessage()))
		}
		return fail(fmt.Errorf("the gateway refused the session: %s: %s", e.GetCode(), e.GetMessage()))
	}
	if m.GetWelcome() == nil {
		return fail(errors.New("the first control message is not a welcome"))
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &ClientSession{cfg: cfg, log: log, conn: c, ctrl: ctrl, welcome: m.GetWelcome(), handoff: make(chan RawStream),
		drained: make(chan struct{})}, nil
}

// cloneHello copies the fields of h, so that filling in the token never
// touches the caller's message.
func cloneHello(h *tunnelv1.Hello) *tunnelv1.Hello {
	return &tunnelv1.Hello{
		Name: h.GetName(), Version: h.GetVersion(), Platform: h.GetPlatform(), AgentId: h.GetAgentId(),
		ProtocolVersion: h.GetProtocolVersion(), Connections: h.GetConnections(),
	}
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

// Transport is "quic" or "yamux".
func (c *ClientSession) Transport() string { return c.cfg.Transport }

// Close ends the session at once without serving it.
func (c *ClientSession) Close() { c.conn.Close("agent closed the session") }

func (c *ClientSession) maxStreams() int32 {
	if c.cfg.MaxStreams <= 0 {
		return DefaultMaxStreams
	}
	return int32(c.cfg.MaxStreams)
}

// Serve serves the exchanges the gateway opens with srv until the session
// ends (it returns the reason) or until drain is closed: then it tells the
// gateway, lets the exchanges in flight finish, and returns nil. Cancelling
// ctx aborts the exchanges in flight at once.
func (c *ClientSession) Serve(ctx context.Context, srv *tunnel.Server, drain <-chan struct{}) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.conn.Close("")

	ctrlErr := make(chan error, 1)
	go func() { ctrlErr <- c.readControl() }()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.acceptStreams(sctx, srv)
	}()
	defer c.wg.Wait()

	select {
	case err := <-ctrlErr:
		cancel()
		c.conn.Close("")
		return fmt.Errorf("session ended: %w", err)
	case <-drain:
	}
	// Draining: the gateway opens no new streams and closes the session
	// once the exchanges in flight are over (M4).
	if err := writeMsg(c.ctrl, &tunnelv1.ControlRequest{Drain: &tunnelv1.Drain{Reason: c.ownDrain.String()}}, maxControlSize); err != nil {
		c.log.Warn("could not tell the gateway that the agent is draining", zap.Error(err))
		cancel()
		c.conn.Close("")
		return nil
	}
	select {
	case <-ctrlErr:
	case <-ctx.Done():
	}
	cancel()
	c.conn.Close("agent drained")
	return nil
}

// readControl handles the gateway's control messages until the stream
// ends, and returns why.
func (c *ClientSession) readControl() error {
	for {
		var m tunnelv1.ControlResponse
		if err := readMsg(c.ctrl, &m, maxControlSize); err != nil {
			if quiet, ok := keepaliveEnded(c.conn); ok {
				return errors.New(tunnel.KeepaliveEndedReason("gateway", "agent", quiet))
			}
			if errors.Is(err, io.EOF) {
				return errors.New("the gateway closed the session")
			}
			return err
		}
		switch {
		case m.GetDrain() != nil:
			c.log.Info("the gateway will end this session", zap.String("reason", m.GetDrain().GetReason()))
			c.drainedOnce.Do(func() { close(c.drained) })
		default:
			// A message this version does not know: skip it.
		}
	}
}

// acceptStreams serves each stream the gateway opens until the connection
// ends.
func (c *ClientSession) acceptStreams(ctx context.Context, srv *tunnel.Server) {
	for {
		raw, err := c.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		if !c.acquire() {
			raw.Reset()
			c.log.Warn("the gateway opened more streams than allowed; resetting one",
				zap.Int32("max_streams", c.maxStreams()))
			continue
		}
		// Fast path: an idle stream goroutine takes it. A goroutine counted
		// in idle has committed to receive from handoff (or to leave when
		// ctx ends), so the send waits at most for it to reach its select.
		// Slow path: a new one (a burst, or the first exchanges of the
		// session).
		if c.idle.Load() > 0 {
			select {
			case c.handoff <- raw:
				// The sender uncounts the receiver: were it the receiver,
				// the next Load could still count it and the send would
				// wait for a goroutine that is busy.
				c.idle.Add(-1)
			case <-ctx.Done():
				raw.Reset()
				c.release()
				return
			}
			continue
		}
		c.wg.Add(1)
		c.started.Add(1)
		go c.serveStreams(ctx, srv, raw)
	}
}

// serveStreams serves raw and then, while fewer than
// maxIdleStreamGoroutines others wait, the later streams handed to it, until
// ctx ends. Reusing the goroutine spares growing a fresh stack for every
// exchange (runtime.newstack was 5% of the CPU of small exchanges).
func (c *ClientSession) serveStreams(ctx context.Context, srv *tunnel.Server, raw RawStream) {
	defer c.wg.Done()
	for {
		c.serveStream(ctx, srv, raw)
		if !c.becomeIdle() {
			return
		}
		if c.onIdle != nil {
			c.onIdle()
		}
		select {
		case raw = <-c.handoff: // acceptStreams uncounted us
		case <-ctx.Done():
			c.idle.Add(-1)
			return
		}
	}
}

// becomeIdle counts the caller among the idle stream goroutines, or reports
// that enough already wait. The count never goes above the cap, not even for
// a moment, so acceptStreams may trust it: every goroutine it counts will
// take a stream from handoff.
func (c *ClientSession) becomeIdle() bool {
	for {
		n := c.idle.Load()
		if n >= maxIdleStreamGoroutines {
			return false
		}
		if c.idle.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// serveStream serves the one exchange of raw.
func (c *ClientSession) serveStream(ctx context.Context, srv *tunnel.Server, raw RawStream) {
	defer c.release()
	st := newStream(raw, false, nil)
	err := srv.ServeStream(ctx, st)
	st.abort() // no-op when it ended cleanly
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrStreamReset) {
		c.log.Warn("exchange stream failed", zap.Error(err))
	}
}

// acquire counts one more exchange stream, or reports that the cap is
// reached.
func (c *ClientSession) acquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open >= c.maxStreams() {
		return false
	}
	c.open++
	return true
}

func (c *ClientSession) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
}
