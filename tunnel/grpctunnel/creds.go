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
//
// A client's connection is a pingConn: it sends lifelines and, when
// pingEvery is set, pings of its own.
type batchedTLS struct {
	credentials.TransportCredentials
	// pingEvery and pingTimeout, when pingEvery is set, make the client's
	// connection ping on its own (pingConn): the agent's keepalives below
	// gRPC's floor.
	pingEvery, pingTimeout time.Duration
	// srv, when set, learns each server connection (Server.Credentials).
	srv *Server
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
	tuneSocket(c)
	raw := tlsbatch.NewRaw(c)
	tc, info, err := b.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return newPingConn(tlsbatch.Wrap(tc, raw), true, b.pingEvery, b.pingTimeout), info, nil
}

func (b batchedTLS) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	raw := tlsbatch.NewRaw(c)
	tc, info, err := b.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return b.srv.track(newPingConn(tlsbatch.Wrap(tc, raw), false, 0, 0)), info, nil
}

// lifelineCreds are transport credentials whose handshake happens
// elsewhere (Server.Credentials of other credentials): each connection is
// tracked and sends lifelines (see pingConn), as ServerCredentials' do.
type lifelineCreds struct {
	credentials.TransportCredentials
	srv *Server // learns each connection (Server.Credentials); nil: none
}

func (l lifelineCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := l.TransportCredentials.ServerHandshake(c)
	if err != nil {
		return nil, nil, err
	}
	return l.srv.track(newPingConn(conn, false, 0, 0)), info, nil
}

func (l lifelineCreds) Clone() credentials.TransportCredentials {
	return lifelineCreds{l.TransportCredentials.Clone(), l.srv}
}

func (b batchedTLS) Clone() credentials.TransportCredentials {
	return batchedTLS{b.TransportCredentials.Clone(), b.pingEvery, b.pingTimeout, b.srv}
}

// Credentials wraps the transport credentials of the gRPC server that s is
// registered on so that each connection sends lifelines (ServerCredentials
// has them already) and so that s knows the connection
// of each session: its sessions then notice a silent agent within about a
// second of sending it an exchange (see session.live). Without it (other
// credentials), sessions are left to the keepalive.
func (s *Server) Credentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	if b, ok := c.(batchedTLS); ok {
		b.srv = s
		return b
	}
	return lifelineCreds{c, s}
}
