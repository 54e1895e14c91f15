package grpctunnel

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/sallyport/sallyport/tunnel/tlsbatch"
)

// batchedTLS is gRPC's TLS credentials with the connection made on a
// tlsbatch.Raw: each write of gRPC's transport (up to its write buffer)
// reaches the socket in one system call instead of one per 16 KiB record.
type batchedTLS struct {
	credentials.TransportCredentials
	// pingEvery and pingTimeout, when pingEvery is set, make the client's
	// connection ping on its own (pingConn): the agent's keepalives below
	// gRPC's floor.
	pingEvery, pingTimeout time.Duration
}

func newBatchedTLS(cfg *tls.Config) credentials.TransportCredentials {
	return batchedTLS{TransportCredentials: credentials.NewTLS(cfg)}
}

// ServerCredentials are the transport credentials for a gRPC server that
// does the tunnel's TLS handshakes itself (the gateway does them before
// gRPC, with package tlsbatch): credentials.NewTLS(cfg) with batched writes.
func ServerCredentials(cfg *tls.Config) credentials.TransportCredentials {
	return newBatchedTLS(cfg)
}

func (b batchedTLS) ClientHandshake(ctx context.Context, authority string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	raw := tlsbatch.NewRaw(c)
	tc, info, err := b.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	if b.pingEvery > 0 {
		return newPingConn(tlsbatch.Wrap(tc, raw), b.pingEvery, b.pingTimeout), info, nil
	}
	return tlsbatch.Wrap(tc, raw), info, nil
}

func (b batchedTLS) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	raw := tlsbatch.NewRaw(c)
	tc, info, err := b.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return tlsbatch.Wrap(tc, raw), info, nil
}

func (b batchedTLS) Clone() credentials.TransportCredentials {
	return batchedTLS{b.TransportCredentials.Clone(), b.pingEvery, b.pingTimeout}
}
