package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	keysv1 "github.com/sallyport/sallyport/proto/sallyport/keys/v1"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
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
// the gRPC servers: the sessions' server takes connections with a client
// certificate with Accept, the enrollment server those without one from
// Certless (see enrollServerOptions).
type alpnListener struct {
	ln      net.Listener
	tls     *tls.Config
	onYamux func(net.Conn)
	log     *zap.Logger
	// maxPending and maxCertless are the per-address limits (0 →
	// maxPendingHandshakes and maxCertlessConns; tests lower them).
	maxPending, maxCertless int

	pending addrCounts // TLS handshakes under way, per address
	noCert  addrCounts // open connections without a client certificate, per address

	grpcConns chan net.Conn // handshaken h2 connections with a certificate; never closed
	certless  *connQueue    // handshaken h2 connections without one
	ctx       context.Context
	cancel    context.CancelFunc // ends pending handshakes and Accept
	wg        sync.WaitGroup     // the accept loop and pending handshakes
	closeOnce sync.Once
}

func newALPNListener(ln net.Listener, tlsCfg *tls.Config, onYamux func(net.Conn), log *zap.Logger) *alpnListener {
	return newALPNListenerLimits(ln, tlsCfg, onYamux, log, 0, 0)
}

// newALPNListenerLimits is newALPNListener with other per-address limits
// (0: the default).
func newALPNListenerLimits(ln net.Listener, tlsCfg *tls.Config, onYamux func(net.Conn), log *zap.Logger,
	maxPending, maxCertless int) *alpnListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &alpnListener{
		ln: ln, tls: tlsCfg, onYamux: onYamux, log: log, maxPending: maxPending, maxCertless: maxCertless,
		grpcConns: make(chan net.Conn), ctx: ctx, cancel: cancel,
	}
	l.certless = &connQueue{l: l, conns: make(chan net.Conn), done: make(chan struct{})}
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
		key := addrKey(c.RemoteAddr())
		if !l.pending.take(key, orInt(l.maxPending, maxPendingHandshakes)) {
			l.log.Warn("agent refused: too many TLS handshakes under way from its address; closed at once",
				zap.String("remote", c.RemoteAddr().String()), zap.Int("limit", orInt(l.maxPending, maxPendingHandshakes)))
			c.Close()
			continue
		}
		l.wg.Add(1)
		go l.handshake(c, key)
	}
}

// handshake completes TLS on c, whose address counts as key, and routes it
// by ALPN.
func (l *alpnListener) handshake(c net.Conn, key string) {
	defer l.wg.Done()
	// tlsbatch: each write of gRPC or yamux reaches the socket in one
	// system call, not one per 16 KiB record.
	tc := tlsbatch.Server(c, l.tls)
	ctx, cancel := context.WithTimeout(l.ctx, tlsHandshakeTimeout)
	err := tc.TLS().HandshakeContext(ctx)
	cancel()
	l.pending.give(key)
	if err != nil {
		l.log.Debug("tunnel connection failed the TLS handshake", zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
		c.Close()
		return
	}
	var conn net.Conn = tc
	certless := len(tc.ConnectionState().PeerCertificates) == 0
	if certless {
		// Without a certificate a connection can only enroll (or be
		// refused a session): an address gets a few at once.
		if !l.noCert.take(key, orInt(l.maxCertless, maxCertlessConns)) {
			l.log.Warn("agent refused: too many connections without a client certificate from its address; closed at once",
				zap.String("remote", c.RemoteAddr().String()), zap.Int("limit", orInt(l.maxCertless, maxCertlessConns)))
			tc.Close()
			return
		}
		conn = &countedConn{Conn: tc, release: func() { l.noCert.give(key) }}
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case yamuxtunnel.ALPN:
		l.onYamux(conn)
	default: // "h2", or no ALPN: gRPC refuses what is not HTTP/2
		if certless {
			l.certless.put(conn)
			return
		}
		select {
		case l.grpcConns <- tc:
		case <-l.ctx.Done():
			tc.Close()
		}
	}
}

// Per source address (an IPv4 address or an IPv6 /64, as the enrollment
// limit counts them), the tunnel port runs at most maxPendingHandshakes TLS
// handshakes at once and keeps at most maxCertlessConns connections without
// a client certificate (they can only enroll, one attempt at a time per
// address, or be refused a session); more are closed as they come. So one
// address cannot fill the gateway's file descriptors, which its users and
// agents share, with connections that never authenticate: each handshake
// may take tlsHandshakeTimeout, a yamux connection waits HelloTimeout for
// its hello, an enrollment connection lives up to enrollConnAge plus
// enrollConnAgeGrace. Agents behind one address (NAT) that reconnect at
// once finish their handshakes in a round trip or two; one that finds the
// limit reached retries after its backoff.
const (
	maxPendingHandshakes = 256
	maxCertlessConns     = 32
)

func orInt(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// addrKey is what the per-address limits count a connection by.
func addrKey(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return limitKey(ip.String())
		}
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return limitKey(host)
}

// addrCounts counts connections per address. The zero value is ready.
type addrCounts struct {
	mu sync.Mutex
	n  map[string]int // guarded by mu; no zero counts
}

// take counts one more for key unless it has max already.
func (a *addrCounts) take(key string, max int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[key] >= max {
		return false
	}
	if a.n == nil {
		a.n = make(map[string]int)
	}
	a.n[key]++
	return true
}

func (a *addrCounts) give(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[key]--; a.n[key] <= 0 {
		delete(a.n, key)
	}
}

// countedConn is a tunnel connection that counts against a per-address
// limit until it is closed.
type countedConn struct {
	*tlsbatch.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Certless is the listener of the enrollment server: gRPC connections
// without a client certificate.
func (l *alpnListener) Certless() net.Listener { return l.certless }

// connQueue hands the connections that alpnListener queues for one gRPC
// server to it.
type connQueue struct {
	l     *alpnListener
	conns chan net.Conn // never closed
	done  chan struct{} // closed by Close
	once  sync.Once
}

// put hands c to the server, or closes it when the queue or the listener
// is closed.
func (q *connQueue) put(c net.Conn) {
	select {
	case q.conns <- c:
	case <-q.done:
		c.Close()
	case <-q.l.ctx.Done():
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	case <-q.l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops this queue only: the gRPC server that stops closes it, and
// the other transports go on.
func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.l.Addr() }

// The enrollment server's limits. A connection without a client
// certificate can do nothing but enroll (every session and renewal needs
// one), and with the sessions' gRPC settings it could hold
// max_streams_per_session + 16 streams, each with a handler goroutine from
// its HEADERS frame on, waiting for a request message that never comes, and
// keep them without end (answering pings): about 10 KiB per stream, 100 MB
// per TCP connection, from anyone who can reach the tunnel port. Here a
// connection holds at most enrollMaxStreams streams and lives at most
// enrollConnAge plus enrollConnAgeGrace (an enrollment takes a round trip
// or two); an idle one is closed after enrollConnIdle.
const (
	enrollMaxStreams   = 8
	enrollMaxMsg       = 64 << 10 // an EnrollRequest is a CSR, a token and a name
	enrollConnIdle     = 30 * time.Second
	enrollConnAge      = time.Minute
	enrollConnAgeGrace = 30 * time.Second
)

// enrollServerOptions are the options of the gRPC server for connections
// without a client certificate.
// enrollPrefaceTimeout bounds the wait for a certless connection's HTTP/2
// preface (see enrollServerOptions).
const enrollPrefaceTimeout = time.Second

func enrollServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(handshakenTLS{}),
		grpc.MaxConcurrentStreams(enrollMaxStreams),
		grpc.MaxRecvMsgSize(enrollMaxMsg),
		grpc.MaxHeaderListSize(16 << 10),
		// The TLS handshake is done when gRPC gets the connection: the
		// HTTP/2 preface follows at once from a real client. A connection
		// that sends none is dropped after this, and the gateway's
		// shutdown (grpc's Stop waits for connections still reading their
		// preface) is not held up longer.
		grpc.ConnectionTimeout(enrollPrefaceTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     enrollConnIdle,
			MaxConnectionAge:      enrollConnAge,
			MaxConnectionAgeGrace: enrollConnAgeGrace,
		}),
	}
}

// registerTunnelServices registers the tunnel port's gRPC services on s.
// Both servers have all of them, so that a call on the wrong one (a
// session without a certificate) is refused with its own reason.
func (g *Gateway) registerTunnelServices(s *grpc.Server) {
	g.tunnel.Register(s)
	keysv1.RegisterKeysServiceServer(s, &keysServer{g: g})
	tunnelv1.RegisterEnrollmentServiceServer(s, meteredEnroll{&enrollService{g: g}})
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
