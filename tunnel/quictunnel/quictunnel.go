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
	"sync"
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
//   - Keepalive: a PING every 15 s keeps NAT mappings open (UDP mappings
//     often expire after 30 s); 30 s without any packet ends the session,
//     so a dead peer is noticed about as fast as with gRPC.
//   - Handshake: 5 s without a packet, or 10 s in all, and the attempt is
//     dropped. At most 256 handshakes run at once on a gateway; more are
//     refused until one finishes.
const (
	streamWindow     = 1 << 20
	maxStreamWindow  = 4 << 20
	connWindow       = 4 << 20
	maxConnWindow    = 16 << 20
	keepalivePeriod  = 15 * time.Second
	idleTimeout      = 30 * time.Second
	handshakeTimeout = 5 * time.Second
	maxHandshakes    = 256

	// Stream error codes (RESET_STREAM / STOP_SENDING).
	codeDone  quic.StreamErrorCode = 0 // everything needed was read
	codeReset quic.StreamErrorCode = 1 // the exchange was aborted
)

// tracer, set by tests only (export_test.go), records the qlog events of
// every connection; nil records nothing.
var tracer func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace

func baseConfig() *quic.Config {
	return &quic.Config{
		Tracer:                         tracer,
		HandshakeIdleTimeout:           handshakeTimeout,
		MaxIdleTimeout:                 idleTimeout,
		KeepAlivePeriod:                keepalivePeriod,
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
}

var _ muxtunnel.Conn = (*conn)(nil)

func (a *conn) OpenStream(ctx context.Context) (muxtunnel.RawStream, error) {
	s, err := a.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &rawStream{s: s}, nil
}

func (a *conn) AcceptStream(ctx context.Context) (muxtunnel.RawStream, error) {
	s, err := a.c.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return &rawStream{s: s}, nil
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
type rawStream struct{ s *quic.Stream }

func (r *rawStream) Read(p []byte) (int, error) {
	n, err := r.s.Read(p)
	return n, mapErr(err)
}

func (r *rawStream) Write(p []byte) (int, error) {
	n, err := r.s.Write(p)
	return n, mapErr(err)
}

func (r *rawStream) CloseWrite() error { return r.s.Close() }
func (r *rawStream) CloseRead()        { r.s.CancelRead(codeDone) }

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
