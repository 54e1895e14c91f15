// Package yamuxtunnel carries tunnel sessions over yamux inside TLS, on the
// same TCP port as the gRPC transport: the gateway tells the two apart by
// the ALPN protocol the agent asks for ("sallyport-yamux/1" here, "h2" for
// gRPC). The session logic is package muxtunnel's; this package adapts
// yamux to it and sets yamux's limits on purpose.
//
// It implements the tunnel interfaces and nothing else.
package yamuxtunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	stdlog "log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// ALPN is the protocol name the agent asks for in the TLS handshake.
const ALPN = "sallyport-yamux/1"

// Limits, chosen on purpose (yamux's defaults are a 256 KiB stream window,
// which caps one exchange at 256 KiB per round trip — 5 MB/s on a 50 ms
// link — and a 5 minute wait before a half-closed stream is freed):
//
//   - Stream window 1 MiB, as the gRPC transport's: a stream opens with
//     yamux's fixed 256 KiB and the first window update (sent when the
//     stream is opened or accepted) raises it to 1 MiB. yamux has no
//     connection window; the gateway caps the streams per session
//     (max_streams_per_session), which bounds the total.
//   - Accept backlog 1024: streams the gateway opened that the agent has
//     not acknowledged yet. The gateway writes the request without waiting
//     for the acknowledgement, so this only limits a burst of new exchanges
//     within one round trip.
//   - Keepalive: a ping after 15 s without anything read from the peer
//     (DefaultKeepalive, or the keepalive given, at least MinKeepalive);
//     nothing read for 10 s after it, or for the keepalive when it is
//     shorter, ends the session, so a dead peer is noticed within
//     keepalive + min(keepalive, 10s): about 25 s by default, as with
//     gRPC, 10 s with 5 s. Each end pings on its own schedule, so an agent
//     and a gateway configured differently each notice within their own
//     keepalive. This is the package's keepalive, not yamux's (see
//     keepalive.go): yamux's waits for the answer to its ping, which on a
//     saturated slow link queues behind the data and ended sessions that
//     were moving; a frame may wait writeTimeout (5 minutes) to be written.
//     A side that receives data and sends nothing writes a lifeline every
//     2.5 to 3.75 s, so that its peer, which only sends, reads something.
//   - Dead agents: the gateway notices sooner when it sends exchanges
//     there. A live agent's yamux acknowledges each new stream at once
//     (and a ping), so a gateway session is a muxtunnel.Prober that counts
//     the bytes it read: an exchange that draws nothing for 1 s sets the
//     session aside, and nothing at all for the agent's keepalive and 1 s
//     closes it (muxtunnel's liveness watch): a live agent that hears
//     nothing pings after its keepalive, which it announces in its first
//     frame (keepalive.go; 2 min, the longest allowed, is assumed of an
//     agent that does not). Measured with a blackholed agent of two:
//     closed after 16.1 s with the default keepalives (25.1 s before) and
//     6 s with 5 s (10 s before).
//   - Open timeout 5 minutes (was 30 s; yamux's default is 75 s): a stream
//     the gateway opened that the agent has not acknowledged by then ends
//     the whole session. The acknowledgement queues behind the agent's
//     data like anything else it sends: at 256 kbit/s with a 1 MiB
//     download under way it waited more than 30 s, and the session ended
//     with every exchange on it. Dead paths are the keepalive's; this only
//     catches an agent that stopped accepting streams.
//   - Close timeout 5 s: a stream ended on one side is forcibly reset if the
//     peer does not end it too. yamux has no reset of its own, so this is
//     how an aborted exchange stops a peer that is still writing.
//   - Write buffer 64 KiB (coalescingConn): yamux's frames gather there and
//     go to TLS in one write per batch; a full buffer holds yamux back, so
//     a peer that stops reading still trips the write timeout above.
const (
	streamWindow       = 1 << 20
	acceptBacklog      = 1024
	streamCloseTimeout = 5 * time.Second
	streamOpenTimeout  = 5 * time.Minute
	// tlsHandshakeTimeout bounds the agent's TLS handshake.
	tlsHandshakeTimeout = 10 * time.Second
)

// Keepalive: DefaultKeepalive is the ping interval when none is given,
// MinKeepalive the shortest used (internal/config refuses shorter ones).
const (
	DefaultKeepalive = 15 * time.Second
	MinKeepalive     = 5 * time.Second
)

// keepaliveParams returns the ping interval and timeout of a keepalive of
// pingEvery (0 → DefaultKeepalive; see Keepalive above).
func keepaliveParams(pingEvery time.Duration) (every, timeout time.Duration) {
	if pingEvery <= 0 {
		pingEvery = DefaultKeepalive
	}
	pingEvery = max(pingEvery, MinKeepalive)
	return pingEvery, min(pingEvery, maxPingTimeout)
}

// config is yamux's configuration for one end. Its keepalive is off: the
// session's own (keepalive.go) replaces it.
func config(log *zap.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = acceptBacklog
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = writeTimeout
	c.MaxStreamWindowSize = streamWindow
	c.StreamCloseTimeout = streamCloseTimeout
	c.StreamOpenTimeout = streamOpenTimeout
	c.LogOutput = nil
	if log == nil {
		log = zap.NewNop()
	}
	c.Logger = yamuxLogger(log)
	return c
}

// yamuxLogger writes yamux's log lines to log at info level, but for those
// that normal traffic causes: "frame for missing stream" follows every
// stream that one side reset while the other's data was on the way (a
// client that aborts a download or a WebSocket), so it goes to debug.
func yamuxLogger(log *zap.Logger) yamux.Logger {
	return stdlog.New(yamuxLogWriter{log.WithOptions(zap.AddCallerSkip(3))}, "", 0)
}

type yamuxLogWriter struct{ log *zap.Logger }

func (w yamuxLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "yamux: frame for missing stream") {
		w.log.Debug(msg)
	} else {
		w.log.Info(msg)
	}
	return len(p), nil
}

// conn adapts a yamux session to muxtunnel.Conn, and to muxtunnel.Prober
// for the gateway's liveness watch: what the peer sent is counted by the
// lifeConn under yamux, a live agent acknowledges each new stream at once,
// and a ping draws an answer (Probe).
type conn struct {
	s      *yamux.Session
	remote string
	tls    *tls.ConnectionState // nil when the connection is not TLS
	life   *lifeConn            // under yamux; never nil

	probing atomic.Bool // a Probe's ping waits for its answer
}

func (a *conn) TLSState() *tls.ConnectionState { return a.tls }

// newConn wraps s, which runs on c through lc.
func newConn(s *yamux.Session, c net.Conn, lc *lifeConn) *conn {
	a := &conn{s: s, remote: c.RemoteAddr().String(), life: lc}
	if tc, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		st := tc.ConnectionState()
		a.tls = &st
	}
	return a
}

var _ muxtunnel.Prober = (*conn)(nil)

func (a *conn) OpenStream(ctx context.Context) (muxtunnel.RawStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := a.s.OpenStream()
	if err != nil {
		return nil, err
	}
	return &rawStream{s: s}, nil
}

func (a *conn) AcceptStream(ctx context.Context) (muxtunnel.RawStream, error) {
	s, err := a.s.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, err
	}
	return &rawStream{s: s}, nil
}

func (a *conn) Close(string) { _ = a.s.Close() }

func (a *conn) Done() <-chan struct{} { return a.s.CloseChan() }
func (a *conn) RemoteAddr() string    { return a.remote }

// KeepaliveEnded reports whether the session's keepalive closed it
// (muxtunnel.KeepaliveEnder), and how long nothing had come from the peer.
func (a *conn) KeepaliveEnded() (time.Duration, bool) {
	d := a.life.deadFor.Load()
	return time.Duration(d), d > 0
}

// Received counts the bytes read from the peer (muxtunnel.LiveConn): a
// live agent answers a new stream with its acknowledgement, a ping with
// its answer, and while it receives data it writes at least a lifeline
// every 3.75 s (keepalive.go).
func (a *conn) Received() uint64 { return uint64(a.life.got.Load()) }

// RTT is unknown (muxtunnel.LiveConn): the watch's floor of a second holds.
func (a *conn) RTT() time.Duration { return 0 }

// PeerKeepalive is the longest a live agent stays silent while it hears
// nothing (muxtunnel.LiveConn): it pings after its keepalive without
// anything read, and it says that keepalive in its first frame
// (keepaliveFrame); maxPeerKeepalive, the longest an agent may have, when
// it said none (an agent of an older version). Meaningful on the
// gateway's end only.
func (a *conn) PeerKeepalive() time.Duration {
	if d := time.Duration(a.life.peerKeepalive.Load()); d > 0 {
		return d
	}
	return maxPeerKeepalive
}

// Probe asks the peer for an answer (muxtunnel.Prober): a yamux ping,
// which a live peer answers at once. yamux's Ping waits for the answer
// (or the session's end, or writeTimeout), so one at a time; the answer
// is counted by Received like anything read.
func (a *conn) Probe() {
	if !a.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer a.probing.Store(false)
		_, _ = a.s.Ping()
	}()
}

// rawStream adapts a yamux stream to muxtunnel.RawStream.
type rawStream struct {
	s         *yamux.Stream
	resetOnce sync.Once
}

func (r *rawStream) Read(p []byte) (int, error) {
	n, err := r.s.Read(p)
	return n, mapErr(err)
}

func (r *rawStream) Write(p []byte) (int, error) {
	n, err := r.s.Write(p)
	return n, mapErr(err)
}

func (r *rawStream) CloseWrite() error { return r.s.Close() }

// CloseRead has nothing to do: yamux frees the stream once both sides
// closed, whether or not the last bytes were read.
func (r *rawStream) CloseRead() {}

// Reset unblocks local Read and Write at once and ends the stream. The
// peer reads the end before the exchange's `end`, which it treats as a
// reset; a peer that keeps writing is reset after streamCloseTimeout.
func (r *rawStream) Reset() {
	r.resetOnce.Do(func() {
		_ = r.s.SetDeadline(time.Now())
		_ = r.s.Close()
	})
}

func (r *rawStream) SetReadDeadline(t time.Time) error { return r.s.SetReadDeadline(t) }

func mapErr(err error) error {
	if errors.Is(err, yamux.ErrConnectionReset) || errors.Is(err, yamux.ErrStreamClosed) {
		return errors.Join(muxtunnel.ErrStreamReset, err)
	}
	if errors.Is(err, yamux.ErrTimeout) {
		// A deadline set by Reset (or by the hello timeout).
		return errors.Join(muxtunnel.ErrStreamReset, err)
	}
	if err == io.EOF {
		return io.EOF
	}
	return err
}

// ServeConn runs yamux on an accepted, handshaken TLS connection and serves
// it as one agent session with srv until it ends or ctx is cancelled.
// pingEvery is the gateway's keepalive (0 → DefaultKeepalive).
func ServeConn(ctx context.Context, c net.Conn, srv *muxtunnel.Server, log *zap.Logger, pingEvery time.Duration) error {
	mc, err := start(c, log, pingEvery, false)
	if err != nil {
		c.Close()
		return err
	}
	return srv.ServeConn(ctx, mc, muxtunnel.TransportYamux)
}

// ServerConn runs the gateway end of yamux on c (after TLS) and returns it
// as a muxtunnel.Conn; ClientConn is the agent end. For tests and custom
// listeners, with the default keepalive.
func ServerConn(c net.Conn, log *zap.Logger) (muxtunnel.Conn, error) {
	mc, err := start(c, log, 0, false)
	if err != nil {
		return nil, err
	}
	return mc, nil
}

// ClientConn runs the agent end of yamux on c; see ServerConn.
func ClientConn(c net.Conn, log *zap.Logger) (muxtunnel.Conn, error) {
	mc, err := start(c, log, 0, true)
	if err != nil {
		return nil, err
	}
	return mc, nil
}

// start runs one end of yamux on c, through a coalescingConn, with a
// keepalive of pingEvery (0 → DefaultKeepalive): the agent's end (yamux's
// client) when agent, which first announces its keepalive to the gateway
// (keepaliveFrame).
func start(c net.Conn, log *zap.Logger, pingEvery time.Duration, agent bool) (*conn, error) {
	if log == nil {
		log = zap.NewNop()
	}
	every, timeout := keepaliveParams(pingEvery)
	lc := newLifeConn(c)
	wc := newCoalescingConn(lc)
	end := yamux.Server
	if agent {
		// Queued before yamux's first frame; written by the flusher, so
		// that a peer that does not read yet (net.Pipe) holds up nothing.
		end = yamux.Client
		f := keepaliveFrame(every)
		if _, err := wc.Write(f[:]); err != nil {
			wc.Close()
			return nil, err
		}
	}
	s, err := end(wc, config(log))
	if err != nil {
		wc.Close()
		return nil, err
	}
	go keepalive(s, lc, every, timeout, log)
	go lifelines(s, lc)
	return newConn(s, c, lc), nil
}
