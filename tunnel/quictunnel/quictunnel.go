// Package quictunnel carries tunnel sessions over QUIC (quic-go): the agent
// dials the gateway's UDP port (the tunnel's TCP port number), opens the
// control stream, and the gateway opens one stream per exchange. The
// session logic is package muxtunnel's; this package adapts quic-go to it
// and sets QUIC's limits on purpose.
//
// It implements the tunnel interfaces and nothing else.
package quictunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// ALPN is the protocol name negotiated in the QUIC handshake.
const ALPN = "sallyport-quic/1"

// Limits, chosen on purpose:
//
//   - Windows: a stream starts with a 1 MiB receive window (as the gRPC
//     transport's), which quic-go's auto-tuning may grow to 4 MiB on links
//     with a large bandwidth-delay product; the connection starts at 4 MiB
//     and may grow to 16 MiB. So a stalled exchange holds at most 4 MiB and
//     a whole session at most 16 MiB of unread data (unlike gRPC, whose
//     connection window is given back as data arrives, and yamux, which
//     has none: see grpctunnel's options).
//   - Streams: the gateway accepts exactly one stream from an agent (the
//     control stream); QUIC itself refuses a second one (STREAM_LIMIT_ERROR
//     closes the connection). The agent accepts up to 10000 exchange
//     streams at once from the gateway, the gateway's default
//     max_streams_per_session.
//   - Keepalive: the agent sends a PING after 5 s without a packet, which
//     keeps NAT mappings open (UDP mappings often expire after 30 s) and
//     the gateway's own pings rarely needed; 30 s without any
//     packet ends the session. The agent's pings are that frequent for two
//     reasons. When a NAT gives the agent a new source port (its mapping
//     expired, a CGNAT or a router restarted), the gateway learns the new
//     address only from the agent's next packet: until then its requests
//     go to the old port and are lost, so a request waited up to the ping
//     period (12 s measured with 15 s). And quic-go restarts its idle
//     timer on the first packet it sends after the last one it received,
//     so an agent on a dead path notices after the ping period plus the
//     idle timeout: 45 s with 15 s pings, 35 s now. The gateway pings
//     after 5 s without a packet too (it pinged after 15 s, and so noticed
//     a dead path only after 40 to 45 s; see baseConfig). Those are the
//     defaults. A keepalive K (Listener.Keepalive on the gateway,
//     DialConfig.Keepalive on the agent; DefaultKeepalive, 15 s, when not
//     given) makes the idle timeout 2K; both ends ping after min(5 s, K)
//     without a packet. The peers use the smaller of
//     their two idle timeouts, so the side with the shorter keepalive
//     decides for both: a dead path is noticed after 2K to 2K + min(5 s,
//     K) (30 to 35 s by default, 10 to 15 s with 5 s; measured in the
//     end-to-end TestKeepaliveConfigured: 10 and 15 s). The gateway
//     notices a dead agent sooner when it sends it exchanges: a QUIC
//     connection counts the packets it receives (muxtunnel.LiveConn), and
//     a request that draws no acknowledgement sets the session aside
//     after 1 s and closes it after 6 s (the agent's 5 s ping period and
//     1 s; see muxtunnel's liveness watch), whatever the keepalive.
//   - Packet size: 1200 bytes of UDP payload (QUIC's minimum), always.
//     quic-go's default of 1280 bytes at first does not fit a path whose
//     MTU is 1280 (IPv6's minimum, common on tunnels and VPNs: 1232 bytes
//     of payload over IPv6, 1252 over IPv4): every datagram of the
//     handshake was lost and the session never came up. Path MTU discovery
//     is off: quic-go never lowers the size it found (quic-go issue 3955),
//     so when a roaming agent's path shrinks (Wi-Fi to LTE, a VPN coming
//     up) a session that had grown to 1452 bytes stays up, keepalives and
//     small exchanges pass, and every large body stalls for ever. The cost
//     is about 10% more CPU per GiB in bulk transfers (BenchmarkDownloadRelay
//     over QUIC: 73-76 → 82-84 ms of CPU per 16 MiB, 226/202 → 203/188
//     MB/s); where that matters more than a roaming link, use gRPC.
//   - Handshake: 5 s without a packet, or 10 s in all, and the attempt is
//     dropped. At most 256 handshakes run at once on a gateway; more are
//     refused until one finishes.
const (
	streamWindow    = 1 << 20
	maxStreamWindow = 4 << 20
	connWindow      = 4 << 20
	maxConnWindow   = 16 << 20
	// agentKeepalivePeriod is the agent's longest (see Keepalive above): a
	// packet of about 40 bytes each way every 5 s per idle session.
	agentKeepalivePeriod = 5 * time.Second
	handshakeTimeout     = 5 * time.Second
	maxHandshakes        = 256
	// packetSize is the UDP payload of every packet: QUIC's minimum (see
	// Packet size above).
	packetSize = 1200

	// Stream error codes (RESET_STREAM / STOP_SENDING).
	codeDone  quic.StreamErrorCode = 0 // everything needed was read
	codeReset quic.StreamErrorCode = 1 // the exchange was aborted
)

// tracer, set by tests only (export_test.go), records the qlog events of
// every connection; nil records nothing.
var tracer func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace

// Keepalive: DefaultKeepalive is the keepalive when none is given,
// MinKeepalive the shortest used (internal/config refuses shorter ones).
const (
	DefaultKeepalive = 15 * time.Second
	MinKeepalive     = 5 * time.Second
)

// keepaliveOrDefault is pingEvery with its default and floor.
func keepaliveOrDefault(pingEvery time.Duration) time.Duration {
	if pingEvery <= 0 {
		return DefaultKeepalive
	}
	return max(pingEvery, MinKeepalive)
}

// baseConfig is the QUIC config of both ends for a keepalive of pingEvery
// (0 → DefaultKeepalive): an idle timeout of 2 × pingEvery, and a PING
// after min(5 s, pingEvery) without a packet. The gateway pings as soon as
// the agent does: quic-go restarts its idle timer at the first packet it
// sends after the last one it received, so a gateway that pinged only after
// pingEvery noticed a dead path after 3 × pingEvery less the agent's ping
// period (40–45 s by default), not 2 × pingEvery to 2 × pingEvery + 5 s
// as the agent does. While the agent is alive its pings come first, each
// side's timer restarts at the other's packets, and the two take turns: an
// idle session still carries about one ping and its acknowledgement every
// 5 s.
func baseConfig(pingEvery time.Duration) *quic.Config {
	pingEvery = keepaliveOrDefault(pingEvery)
	return &quic.Config{
		Tracer:                         tracer,
		InitialPacketSize:              packetSize,
		DisablePathMTUDiscovery:        true,
		HandshakeIdleTimeout:           handshakeTimeout,
		MaxIdleTimeout:                 2 * pingEvery,
		KeepAlivePeriod:                min(agentKeepalivePeriod, pingEvery),
		InitialStreamReceiveWindow:     streamWindow,
		MaxStreamReceiveWindow:         maxStreamWindow,
		InitialConnectionReceiveWindow: connWindow,
		MaxConnectionReceiveWindow:     maxConnWindow,
		MaxIncomingUniStreams:          -1, // the protocol uses none
	}
}

// conn adapts a QUIC connection to muxtunnel.Conn.
type conn struct {
	c         *quic.Conn
	closeOnce sync.Once
	onClose   func() // releases the client's UDP socket; nil on the gateway
	// agent: this is the agent's end, whose streams read a normal close
	// of the session after their own end as the end of the stream (see
	// rawStream.Read); the gateway's keep the error, which names why.
	agent bool
	// idleEnded: a stream's Read or Write failed with QUIC's idle timeout
	// (see KeepaliveEnded).
	idleEnded atomic.Bool
}

var _ muxtunnel.LiveConn = (*conn)(nil)

func (a *conn) OpenStream(ctx context.Context) (muxtunnel.RawStream, error) {
	s, err := a.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &rawStream{s: s, eofOnPeerClose: a.agent, conn: a}, nil
}

func (a *conn) AcceptStream(ctx context.Context) (muxtunnel.RawStream, error) {
	s, err := a.c.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return &rawStream{s: s, eofOnPeerClose: a.agent, conn: a}, nil
}

func (a *conn) Close(reason string) {
	a.closeOnce.Do(func() {
		_ = a.c.CloseWithError(0, reason)
		if a.onClose != nil {
			a.onClose()
		}
	})
}

func (a *conn) Done() <-chan struct{} { return a.c.Context().Done() }

func (a *conn) TLSState() *tls.ConnectionState {
	st := a.c.ConnectionState().TLS
	return &st
}
func (a *conn) RemoteAddr() string { return a.c.RemoteAddr().String() }

// rawStream adapts a QUIC stream to muxtunnel.RawStream.
type rawStream struct {
	s *quic.Stream
	// wroteAll: CloseWrite succeeded, so this side's part of the
	// exchange is written and will be delivered (ReliableCloser).
	wroteAll atomic.Bool
	// eofOnPeerClose: the agent's stream (see conn.agent).
	eofOnPeerClose bool
	conn           *conn // the stream's connection (idleEnded)
}

// Read reads the stream. After this side's CloseWrite, a session the peer
// closed normally ends the stream as the peer's own close would: the agent
// closes its side right after its `end` and then only waits for the
// gateway's close, and a gateway that ends a drained session once its last
// exchange is over (muxtunnel closeWhenIdle) sends CONNECTION_CLOSE, which
// can overtake the FIN of that exchange's stream. The agent then logged
// "exchange stream failed … Application error 0x0 (remote): agent drained"
// for an exchange that had succeeded: a few times at every renewal, when
// the agent moves its sessions.
func (r *rawStream) Read(p []byte) (int, error) {
	n, err := r.s.Read(p)
	if err != nil {
		r.noteEnd(err)
		if r.eofOnPeerClose && r.wroteAll.Load() && closedByPeer(err) {
			return n, io.EOF
		}
	}
	return n, mapErr(err)
}

// noteEnd notes on the stream's connection that err, a Read's or a
// Write's, is QUIC's idle timeout. quic-go fails the streams before it
// cancels the connection's context (which KeepaliveEnded reads as well),
// so a control stream's reader that asked KeepaliveEnded at once was told
// no: a session ended by the idle timeout then read as lost, its end as
// "timeout: no recent network activity" (4 of 40 under -race).
func (r *rawStream) noteEnd(err error) {
	if r.conn == nil || err == io.EOF {
		return
	}
	var idle *quic.IdleTimeoutError
	if errors.As(err, &idle) {
		r.conn.idleEnded.Store(true)
	}
}

// closedByPeer reports whether err says the peer closed the whole session
// with code 0, the code of conn.Close (a normal end, whatever the reason).
func closedByPeer(err error) bool {
	var ae *quic.ApplicationError
	return errors.As(err, &ae) && ae.Remote && ae.ErrorCode == 0
}

func (r *rawStream) Write(p []byte) (int, error) {
	n, err := r.s.Write(p)
	if err != nil {
		r.noteEnd(err)
	}
	return n, mapErr(err)
}

func (r *rawStream) CloseWrite() error {
	err := r.s.Close()
	if err == nil {
		r.wroteAll.Store(true)
	}
	return err
}

func (r *rawStream) CloseRead() { r.s.CancelRead(codeDone) }

func (r *rawStream) Reset() {
	r.s.CancelRead(codeReset)
	r.s.CancelWrite(codeReset)
}

func (r *rawStream) SetReadDeadline(t time.Time) error { return r.s.SetReadDeadline(t) }

// CloseDeliversAll: a QUIC stream's FIN and the data before it are
// retransmitted until acknowledged (muxtunnel.ReliableCloser).
func (r *rawStream) CloseDeliversAll() bool { return true }

// mapErr reports a stream reset by either side as muxtunnel.ErrStreamReset.
func mapErr(err error) error {
	if err == nil {
		// Fast path: errors.As below makes se escape, an allocation on
		// every Read and Write (7 per small exchange).
		return nil
	}
	var se *quic.StreamError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: %v", muxtunnel.ErrStreamReset, err)
	}
	return err
}

// Received counts the packets received from the agent, acknowledgements
// included (muxtunnel.LiveConn): QUIC acknowledges every packet that
// carries data within its max ack delay, so a request that goes out and
// draws no packet back within a second went to a dead agent or path.
func (a *conn) Received() uint64 { return a.c.ConnectionStats().PacketsReceived }

// RTT is the connection's smoothed round-trip time (muxtunnel.LiveConn).
func (a *conn) RTT() time.Duration { return a.c.ConnectionStats().SmoothedRTT }

// KeepaliveEnded reports whether QUIC's idle timeout ended the connection
// (muxtunnel.KeepaliveEnder): nothing came from the peer, which pings
// while it lives. How long is not said (0). A stream that failed with it
// says so before the connection's context ends (rawStream.noteEnd).
func (a *conn) KeepaliveEnded() (time.Duration, bool) {
	if a.idleEnded.Load() {
		return 0, true
	}
	select {
	case <-a.c.Context().Done():
	default:
		return 0, false
	}
	var idle *quic.IdleTimeoutError
	return 0, errors.As(context.Cause(a.c.Context()), &idle)
}

// PeerKeepalive is the agent's longest ping period (muxtunnel.LiveConn):
// it pings after agentKeepalivePeriod without a packet, or sooner.
func (a *conn) PeerKeepalive() time.Duration { return agentKeepalivePeriod }
