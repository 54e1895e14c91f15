package agent

import (
	"context"
	"io"
	"net"
)

// bodyWriter is a request body that writes itself to a connection from
// the memory it arrived in (the tunnel's request body: see
// tunnel's bodyPipe.WriteBodyTo).
type bodyWriter interface {
	WriteBodyTo(w io.Writer, max int64) (int64, error)
}

// bodyConn is a plain TCP connection of the HTTP/1.1 backend transport.
// net/http writes a request body of known length to it with ReadFrom and
// an io.LimitedReader around the body; when that body is a bodyWriter,
// ReadFrom lets it write itself (one writev per batch of received frames)
// instead of copying it through a 32 KiB buffer, one write(2) each.
// Anything else goes to the TCP connection's own ReadFrom.
type bodyConn struct {
	*net.TCPConn
}

func (c bodyConn) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if b, ok := lr.R.(bodyWriter); ok {
			n, err := b.WriteBodyTo(c.TCPConn, lr.N)
			lr.N -= n
			return n, err
		}
	}
	return c.TCPConn.ReadFrom(r)
}

// withBodyConns wraps the plain TCP connections that dial returns in
// bodyConn.
func withBodyConns(dial backendDialFunc) backendDialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok && err == nil {
			return bodyConn{tc}, nil
		}
		return c, err
	}
}
