// Package tunnel is the transport-neutral relay protocol shared by the
// gateway and the agent: how one HTTP exchange (request, response, bodies,
// trailers, upgrades and errors) travels on one stream of a session.
//
// # Design
//
// A session is one connection that an agent dialled out to the gateway. It
// carries many exchanges at once, each on its own Stream with its own flow
// control, so a client that stops reading slows only its own exchange and
// never its neighbours (no head-of-line blocking between exchanges).
//
// The gateway must never wait for the agent before it can send a request.
// With gRPC only the dialling side (the agent) can open streams, so the
// agent keeps a few idle Exchange streams open per session and the gateway
// pools them; an exchange takes an idle stream and writes its request at
// once. When both directions of an exchange end cleanly the stream goes
// back to the pool and carries a later exchange: a burst of N concurrent
// exchanges leaves N warm streams behind, so even the requests right after
// a burst spend no round trip on setup. QUIC and yamux let the gateway open
// streams itself and use one fresh stream per exchange instead.
//
// A small exchange is one Frame each way: the request head, its body and
// `end` travel together, and so do the response head, body and `end`.
// Larger bodies move in bounded chunks (ChunkSize); backpressure comes from
// the transport's per-stream flow control, never from buffering a whole
// body. The wire format and its versioning are described in
// proto/sallyport/tunnel/v1/tunnel.proto.
//
// The hot path is measured, not guessed: BenchmarkSmallExchange and
// TestSmallExchangeAllocs hold one small exchange on the tunnel leg to at
// most 40 allocations (20 today), mostly by decoding frames by hand (see
// decode.go); transports hand received body bytes over without copying them
// again (UnmarshalFrameAliasing) and may reuse them once RoundTrip or
// ServeStream calls Recv again (see Stream).
//
// The gateway side is RoundTrip, which the gateway's http.RoundTripper for
// httputil.ReverseProxy calls on a stream it took from a session. The agent side is ServeStream, which reads the
// exchanges arriving on a stream and hands each request to an
// http.RoundTripper that reaches the backend.
package tunnel

import (
	"context"
	"time"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// Frame is the unit of the tunnel protocol.
type Frame = tunnelv1.Frame

// ProtocolVersion is the highest tunnel protocol version this build speaks
// (the changelog is in proto/sallyport/tunnel/v1/tunnel.proto).
const ProtocolVersion = 4

// Announced is the protocol version a peer set to v announces: v, or
// ProtocolVersion when v is zero (a test may play an older peer).
func Announced(v uint32) uint32 {
	if v == 0 {
		return ProtocolVersion
	}
	return v
}

// SessionVersion is the protocol version of a session: the lower of the
// agent's (from its Hello; zero, from an agent that says nothing, is 1) and
// the gateway's (set to gateway, see Announced).
func SessionVersion(agent, gateway uint32) uint32 {
	return max(1, min(agent, Announced(gateway)))
}

// VersionUnavailable is the first protocol version whose agents know the
// QUIC and yamux refusal code "unavailable" (ErrUnavailable). Older ones
// take an unknown code for a failed transport (transport auto: QUIC →
// gRPC), so they are refused as before, "unauthenticated" with
// StoreDownText, which they recognise.
const VersionUnavailable = 4

// VersionExpectContinue is the first protocol version whose agents honour
// RequestHead.expect_continue (and answer it with Frame.send_body).
const VersionExpectContinue = 2

// VersionInformational is the first protocol version whose agents relay the
// backend's informational responses (Frame.informational) when
// RequestHead.informational asks for them.
const VersionInformational = 3

const (
	// ChunkSize is the most body bytes put in one Frame.
	ChunkSize = 128 << 10
	// CoalesceLimit is the largest body sent in the same Frame as its head.
	CoalesceLimit = 64 << 10
	// MaxFrameSize bounds one encoded Frame (head with headers up to 64 KiB
	// plus a coalesced body), enforced by every transport.
	MaxFrameSize = 1 << 20
)

// Stream is one ordered, reliable, flow-controlled stream of Frames within a
// session. Send and Recv may run at the same time in two goroutines, but
// neither may be called by two goroutines at once.
type Stream interface {
	// Send writes f. It blocks while the peer's flow-control window is full.
	// The stream does not keep f after Send returns.
	Send(f *Frame) error
	// Recv returns the next Frame. It returns io.EOF when the peer ended the
	// stream cleanly.
	//
	// RoundTrip and ServeStream are done with a frame, its Data included,
	// when they call Recv again (they keep only the heads and trailers it
	// points to), so a transport may reuse that memory from then on; and at
	// a clean Finish, which comes after the reader is done with every frame
	// (but not at an unclean one, which may run while the reader still
	// copies the data).
	Recv() (*Frame, error)
	// Finish releases the stream after an exchange. clean reports that both
	// directions ended with `end` and nothing is left unread: the transport
	// may then carry another exchange on it or close it gracefully. Otherwise
	// the stream is reset and blocked Send and Recv calls fail. Finish may be
	// called from any goroutine and more than once; the first call decides.
	Finish(clean bool)
}

// Session is the gateway's view of one agent connection.
type Session interface {
	// OpenStream returns a stream for a new exchange. On a warm session it
	// does not wait for the network. It fails when the session is closed or
	// draining, or when ctx ends first.
	OpenStream(ctx context.Context) (Stream, error)
	// Info describes the agent at the other end.
	Info() SessionInfo
	// Draining is closed when the agent announced that it is shutting down.
	Draining() <-chan struct{}
	// Done is closed when the session has ended.
	Done() <-chan struct{}
	// Close ends the session and every stream on it.
	Close(reason error)
}

// SessionInfo describes the agent end of a session.
type SessionInfo struct {
	ID         string // session id, unique per gateway process
	AgentID    string // stable id of the agent process, shared by its sessions
	AgentName  string // the agent's name (host name by default)
	Group      string // connector group decided by the agent's credential
	Version    string // agent build version
	Platform   string // agent OS/arch
	Transport  string // "grpc", "quic" or "yamux"
	RemoteAddr string // address the agent connected from
	// ConnectorID is the enrolled connector (from its client certificate).
	ConnectorID string
	// Started is when the session was accepted.
	Started time.Time
	// CertSerial and CertExpires describe the client certificate the
	// session was opened with (see Identity).
	CertSerial  string
	CertExpires time.Time
	// Connections is the number of sessions the agent keeps (its Hello);
	// 0: an older agent that does not say.
	Connections uint32
	// ProtocolVersion is the tunnel protocol version of the session: the
	// lower of the agent's (its Hello) and the gateway's. Zero from a
	// Session that does not say is version 1.
	ProtocolVersion uint32
}
