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

	// keepaliveTime and keepaliveTimeout make a dead peer noticed within
	// about 25 s even when the session is idle.
	keepaliveTime    = 15 * time.Second
	keepaliveTimeout = 10 * time.Second

	// readBuffer is gRPC's read buffer size on both ends: none. The TLS
	// connection below buffers a decrypted record already, so HTTP/2
	// frames are read straight out of it into their pooled buffers; with
	// gRPC's 32 KiB buffer in between every body byte was copied once more
	// (bulk transfers over a contended 2-core machine, both benches at
	// once: agent and gateway CPU per GiB 1-3% lower in 8 of 8 pairs).
	readBuffer = 0

	defaultMaxStreams = 10000
	defaultMaxIdle    = 1024
	defaultMinIdle    = 16
)

// ServerOptions returns the gRPC server options a gateway uses for the
// tunnel listener: explicit stream and message caps, windows and keepalive.
// maxStreams caps the streams of one session (0 → 10000).
func ServerOptions(maxStreams int) []grpc.ServerOption {
	if maxStreams <= 0 {
		maxStreams = defaultMaxStreams
	}
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
		grpc.ReadBufferSize(readBuffer),
		grpc.ForceServerCodecV2(frameCodec{}),
		experimental.BufferPool(bufferPool),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    keepaliveTime,
			Timeout: keepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
	}
}

func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithReadBufferSize(readBuffer),
		experimental.WithBufferPool(bufferPool),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(frameCodec{}),
			grpc.MaxCallRecvMsgSize(tunnel.MaxFrameSize),
			grpc.MaxCallSendMsgSize(tunnel.MaxFrameSize),
		),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                keepaliveTime,
			Timeout:             keepaliveTimeout,
			PermitWithoutStream: true,
		}),
	}
}
