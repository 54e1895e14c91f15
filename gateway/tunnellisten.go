package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"

	"github.com/sallyport/sallyport/tunnel/tlsbatch"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// The tunnel's TCP port serves two transports, told apart by the ALPN
// protocol the agent asks for in the TLS handshake: "h2" is gRPC, and
// yamuxtunnel.ALPN is yamux. UDP on the same port number is QUIC.
const alpnH2 = "h2"

// tlsHandshakeTimeout bounds the TLS handshake of a tunnel connection, so a
// client that does not speak TLS costs a goroutine for at most this long.
const tlsHandshakeTimeout = 10 * time.Second

// alpnListener accepts the tunnel's TCP connections, completes their TLS
// handshakes, hands yamux connections to onYamux and queues the others for
// the gRPC server, which takes them with Accept.
type alpnListener struct {
	ln      net.Listener
	tls     *tls.Config
	onYamux func(net.Conn)
	log     *zap.Logger

	grpcConns chan net.Conn // handshaken h2 connections; never closed
	ctx       context.Context
	cancel    context.CancelFunc // ends pending handshakes and Accept
	wg        sync.WaitGroup     // the accept loop and pending handshakes
	closeOnce sync.Once
}

func newALPNListener(ln net.Listener, tlsCfg *tls.Config, onYamux func(net.Conn), log *zap.Logger) *alpnListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &alpnListener{
		ln: ln, tls: tlsCfg, onYamux: onYamux, log: log,
		grpcConns: make(chan net.Conn), ctx: ctx, cancel: cancel,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *alpnListener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("tunnel listener: accept failed; retrying", zap.Error(err), zap.Duration("retry_in", delay))
			select {
			case <-time.After(delay):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		l.wg.Add(1)
		go l.handshake(c)
	}
}

// handshake completes TLS on c and routes it by ALPN.
func (l *alpnListener) handshake(c net.Conn) {
	defer l.wg.Done()
	// tlsbatch: each write of gRPC or yamux reaches the socket in one
	// system call, not one per 16 KiB record.
	tc := tlsbatch.Server(c, l.tls)
	ctx, cancel := context.WithTimeout(l.ctx, tlsHandshakeTimeout)
	err := tc.TLS().HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.log.Debug("tunnel connection failed the TLS handshake", zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
		c.Close()
		return
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case yamuxtunnel.ALPN:
		l.onYamux(tc)
	default: // "h2", or no ALPN: gRPC refuses what is not HTTP/2
		select {
		case l.grpcConns <- tc:
		case <-l.ctx.Done():
			tc.Close()
		}
	}
}

// Accept returns the next gRPC connection.
func (l *alpnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.grpcConns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting; pending handshakes are abandoned.
func (l *alpnListener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.ln.Close()
	})
	return nil
}

// wait returns when the accept loop and every pending handshake are done.
func (l *alpnListener) wait() { l.wg.Wait() }

func (l *alpnListener) Addr() net.Addr { return l.ln.Addr() }

// handshakenTLS is the gRPC server's transport credentials for connections
// whose TLS handshake alpnListener already did: it passes the connection
// state on as the peer's AuthInfo, so that the client certificate of a
// connection stays visible to the gRPC handlers.
type handshakenTLS struct{}

func (handshakenTLS) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("gateway: handshakenTLS is for servers only")
}

func (handshakenTLS) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil, nil, errors.New("gateway: tunnel connection without TLS")
	}
	return c, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (handshakenTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}
func (h handshakenTLS) Clone() credentials.TransportCredentials { return h }
func (handshakenTLS) OverrideServerName(string) error           { return nil }

// listenTunnel binds the tunnel's TCP listener and the UDP socket of QUIC on
// the same port number. With port 0 it retries until the kernel's pick for
// TCP is free for UDP too.
func listenTunnel(addr string) (net.Listener, net.PacketConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	for range 20 {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		p := tcp.Addr().(*net.TCPAddr).Port
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, fmt.Errorf("udp (QUIC) on the tunnel port: %w", lastErr)
}
