// Package muxtunnel carries tunnel sessions over a multiplexed connection on
// which the gateway opens one stream per exchange itself: QUIC (package
// quictunnel) and yamux over TLS (package yamuxtunnel) are thin adapters
// around it. Because the gateway opens the stream and writes the request at
// once, there is no idle stream pool and no added round trip.
//
// The protocol flow (control stream, framing, resets) is described in one
// place: proto/sallyport/tunnel/v1/tunnel.proto, section "QUIC and yamux".
//
// It implements the tunnel interfaces and nothing else.
package muxtunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"time"
)

// Conn is one multiplexed connection as an adapter presents it.
type Conn interface {
	// OpenStream opens a stream; it waits only when the peer's stream
	// limit is reached, and fails when ctx ends first.
	OpenStream(ctx context.Context) (RawStream, error)
	// AcceptStream waits for the next stream the peer opened.
	AcceptStream(ctx context.Context) (RawStream, error)
	// Close ends the connection and every stream on it; reason is shown to
	// the peer where the transport can carry it.
	Close(reason string)
	// Done is closed when the connection has ended, for whatever reason.
	Done() <-chan struct{}
	// RemoteAddr is the peer's address, for logs.
	RemoteAddr() string
	// TLSState is the connection's TLS state (with the peer's certificate),
	// for authentication; nil without TLS.
	TLSState() *tls.ConnectionState
}

// KeepaliveEnder is a Conn that can tell, once it has ended, that its own
// keepalive ended it (yamux's ping unanswered, QUIC's idle timeout):
// nothing came from the peer, whose host or network path is down. quiet is
// how long nothing came, 0 when the transport does not say.
type KeepaliveEnder interface {
	KeepaliveEnded() (quiet time.Duration, ok bool)
}

// keepaliveEnded asks c whether its keepalive ended it.
func keepaliveEnded(c Conn) (time.Duration, bool) {
	if k, ok := c.(KeepaliveEnder); ok {
		return k.KeepaliveEnded()
	}
	return 0, false
}

// RawStream is one bidirectional byte stream of a Conn.
type RawStream interface {
	io.Reader
	io.Writer
	// CloseWrite ends the sending direction cleanly: the peer reads EOF
	// after the data.
	CloseWrite() error
	// CloseRead says nothing more will be read (all that matters was), so
	// the transport may release the stream without waiting for the peer.
	CloseRead()
	// Reset aborts both directions: blocked Read and Write calls return
	// at once, and the peer's fail (or, where the transport has no reset,
	// end before the exchange's `end`, which the peer treats as a reset).
	Reset()
	// SetReadDeadline bounds blocked and future Reads (zero: none).
	SetReadDeadline(t time.Time) error
}

// ReliableCloser is a RawStream whose CloseWrite delivers every byte
// written before it however long the peer takes to read them (QUIC, where
// a closed sending direction is retransmitted until acknowledged; not
// yamux, which resets a closed stream that the peer does not close within
// its timeout). On such a stream the agent closes its sending direction
// right after its `end`, so the FIN usually travels with the last frame;
// the gateway has then read the whole stream when it finishes, and its
// CloseRead asks nothing of the agent. Otherwise each exchange would end
// with a STOP_SENDING from the gateway and a RESET_STREAM in reply.
type ReliableCloser interface {
	RawStream
	// CloseDeliversAll reports that CloseWrite is reliable as above.
	CloseDeliversAll() bool
}

// Transport names reported in Hello and logged by the gateway.
const (
	TransportQUIC  = "quic"
	TransportYamux = "yamux"
)

// Errors.
var (
	// ErrSessionClosed and ErrDraining are returned by OpenStream; nothing
	// was sent, so the caller may pick another session.
	ErrSessionClosed = errors.New("tunnel session closed")
	ErrDraining      = errors.New("tunnel session is draining")
	// ErrUnauthenticated is returned by Handshake when the gateway refused
	// the agent's credential (a revoked agent gets tunnel.ErrRevoked).
	ErrUnauthenticated = errors.New("the gateway refused the agent's credential")
	// ErrStreamReset is returned by Recv when the stream was aborted, by
	// the peer or by this side (a deadline, Reset); the transport's own
	// error, joined to it, says which. Its text named the peer for both,
	// and a gateway that gave up at the app's timeout logged "reset by the
	// peer" for its own reset.
	ErrStreamReset = errors.New("tunnel stream reset")
)

// Defaults shared by both ends.
const (
	// DefaultMaxStreams caps the exchange streams of one session, like the
	// gRPC transport's tunnel.max_streams_per_session default.
	DefaultMaxStreams = 10000
	// HelloTimeout bounds the wait for the agent's hello on the gateway and
	// for the welcome on the agent.
	HelloTimeout = 10 * time.Second
	// maxControlSize bounds one control message (hello, welcome, drain).
	maxControlSize = 64 << 10
)
