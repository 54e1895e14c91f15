// Package grpctunnel carries tunnel sessions over gRPC bidirectional streams
// (HTTP/2 over TLS). The agent is the gRPC client: it dials out, opens the
// Control stream to authenticate, then keeps idle Exchange streams open
// that the gateway pools and reuses (see package tunnel for why).
//
// It implements the tunnel interfaces and nothing else.
package grpctunnel

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"

	"github.com/sallyport/sallyport/tunnel"
)

// Metadata keys.
const (
	mdAuthorization = "authorization"
	mdSession       = "sallyport-session"
)

// shuttingDownPrefix starts the message of the UNAVAILABLE status that
// refuses a session while the gateway shuts down (tunnel.ErrShuttingDown).
const shuttingDownPrefix = "shutting down: "

// Defaults shared by both ends. Flow-control windows are per stream and per
// connection: a stalled exchange can hold at most streamWindow bytes in
// flight, so gateway and agent memory stays bounded whatever the body size.
// The connection window does not bound a session: gRPC gives connection
// credit back when data arrives, not when it is read, so a session can
// hold about streamWindow (and gRPC's buffers around it) for each stalled
// exchange, up to its streams (a probe: 40 stalled downloads held 30 MB in
// the gateway's receive buffers). The gateway cuts an exchange whose client
// stopped reading after its send timeout.
const (
	streamWindow = 1 << 20
	connWindow   = 16 << 20

	// maxKeepaliveTimeout bounds how long a ping may go unanswered (by
	// anything read from the peer) before the connection is closed; with
	// shorter keepalives the timeout is the keepalive itself (see
	// keepaliveParams).
	maxKeepaliveTimeout = 10 * time.Second
	// clientMinPingTime is gRPC's floor for a client's pings: it pings no
	// more often than every 10 s whatever it is told (and logs a warning
	// when told less), so an agent's keepalive below it is sent by the
	// agent's own pings (pingConn) and gRPC's stays at 10 s.
	clientMinPingTime = 10 * time.Second

	// readBuffer is gRPC's read buffer size on both ends: none. The TLS
	// connection below buffers a decrypted record already, so HTTP/2
	// frames are read straight out of it into their pooled buffers; with
	// gRPC's 32 KiB buffer in between every body byte was copied once more
	// (bulk transfers over a contended 2-core machine, both benches at
	// once: agent and gateway CPU per GiB 1-3% lower in 8 of 8 pairs).
	readBuffer = 0

	// writeBuffer is gRPC's write buffer size on both ends: the most it
	// gathers before a write to the TLS connection, which tlsbatch makes
	// one system call. gRPC writes when its queue runs dry or the buffer
	// is full, so a full buffer is a bulk transfer's; it is shared
	// (SharedWriteBuffer), taken from a pool for a write and given back,
	// so an idle connection holds none.
	//
	// It is also the queue in front of the socket that a frame gRPC's
	// writer takes up next waits behind: a new stream, a window update or
	// another exchange's answer queued while a full buffer is being
	// written waits for that write and then for the buffer to fill again
	// with the bulk transfer's frames, two buffers in all (plus the
	// socket's notSentLowat on the agent). At 256 KiB a bulk transfer cost
	// fewer system calls (download 24.1% of direct against 22.0%, upload
	// 20.4% against 18.9%, 2-core AMD EPYC VM), but on a 192 kbit/s link
	// those 512 KiB are 22 s: with one 1 MiB download under way, 15 of 89
	// small requests sent every 0.5 s got 503 overloaded (the gateway's
	// stream_wait of 10 s ran out; 24 of 88 in a loaded CI run), none of
	// 88 and 89 at 32 KiB (TestKeepaliveSaturatedLink). So gRPC's default,
	// 32 KiB, stays, and TestBulkWritesBounded holds it.
	writeBuffer = 32 << 10

	defaultMaxStreams = 10000
	defaultMaxIdle    = 1024
	defaultMinIdle    = 16
)

// Keepalive, on both ends: DefaultKeepalive is the ping interval when none
// is given; MinKeepalive is the gateway's enforcement policy, which closes
// (GOAWAY too_many_pings) a connection whose agent pings more often. The
// policy does not depend on the gateway's own keepalive: agents and
// gateways configured differently must work together, so the gateway
// accepts pings down to the smallest keepalive a config may give
// (internal/config's MinKeepalive, the same 5 s).
//
// A peer is declared dead when a ping of this end is not followed by
// anything read from it within min(keepalive, 10s): a silently dead path
// is noticed after keepalive + min(keepalive, 10s) of silence on either
// end (25 s by default, 10 s with 5 s; on the agent, keepalives below
// gRPC's floor of 10 s are pingConn's).
const (
	DefaultKeepalive = 15 * time.Second
	MinKeepalive     = 5 * time.Second
)

// keepaliveParams returns the ping interval and timeout for a keepalive of
// pingEvery (0 → DefaultKeepalive; below MinKeepalive → MinKeepalive).
func keepaliveParams(pingEvery time.Duration) (interval, timeout time.Duration) {
	if pingEvery <= 0 {
		pingEvery = DefaultKeepalive
	}
	pingEvery = max(pingEvery, MinKeepalive)
	return pingEvery, min(pingEvery, maxKeepaliveTimeout)
}

// ServerOptions returns the gRPC server options a gateway uses for the
// tunnel listener: explicit stream and message caps, windows and keepalive.
// maxStreams caps the streams of one session (0 → 10000); pingEvery is the
// gateway's keepalive, its ping interval (0 → DefaultKeepalive; see
// MinKeepalive).
func ServerOptions(maxStreams int, pingEvery time.Duration) []grpc.ServerOption {
	if maxStreams <= 0 {
		maxStreams = defaultMaxStreams
	}
	interval, timeout := keepaliveParams(pingEvery)
	return []grpc.ServerOption{
		// The Control stream plus a margin for streams that are being
		// retired while their replacements open.
		grpc.MaxConcurrentStreams(uint32(maxStreams) + 16),
		grpc.MaxRecvMsgSize(tunnel.MaxFrameSize),
		grpc.MaxSendMsgSize(tunnel.MaxFrameSize),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.MaxHeaderListSize(16 << 10),
		grpc.SharedWriteBuffer(true),
		grpc.WriteBufferSize(writeBuffer),
		grpc.ReadBufferSize(readBuffer),
		grpc.ForceServerCodecV2(frameCodec{}),
		experimental.BufferPool(bufferPool),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    interval,
			Timeout: timeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             MinKeepalive,
			PermitWithoutStream: true,
		}),
	}
}

// dialOptions are the agent's gRPC options; pingEvery as in ServerOptions.
func dialOptions(pingEvery time.Duration) []grpc.DialOption {
	interval, timeout := keepaliveParams(pingEvery)
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithWriteBufferSize(writeBuffer),
		grpc.WithReadBufferSize(readBuffer),
		experimental.WithBufferPool(bufferPool),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(frameCodec{}),
			grpc.MaxCallRecvMsgSize(tunnel.MaxFrameSize),
			grpc.MaxCallSendMsgSize(tunnel.MaxFrameSize),
		),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                max(interval, clientMinPingTime),
			Timeout:             timeout,
			PermitWithoutStream: true,
		}),
	}
}
