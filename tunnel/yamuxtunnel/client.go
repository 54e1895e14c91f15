package yamuxtunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/tlsbatch"
)

// DialConfig says how an agent connects one yamux session. The zero value
// of each optional field works.
type DialConfig struct {
	// Addr is the gateway's tunnel address, host:port.
	Addr string
	// TLS verifies the gateway. Nil → system roots; ServerName defaults to
	// the host of Addr; ALPN is set here.
	TLS *tls.Config
	// Token is the agent credential; it decides the connector group.
	Token string
	// Hello describes the agent.
	Hello *tunnelv1.Hello
	// MaxStreams caps the exchanges the gateway may run at once (0 → 10000).
	MaxStreams int
	// Keepalive is the agent's ping interval that finds a dead path
	// (0 → DefaultKeepalive; see the package doc).
	Keepalive time.Duration
	// DialContext opens the TCP connection (an outbound proxy goes here).
	// Nil → a plain TCP dial.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Log receives session events. Nil → no logs.
	Log *zap.Logger
}

// Dial connects and authenticates one session. It fails with an error
// wrapping muxtunnel.ErrUnauthenticated when the gateway refuses the token.
// ctx bounds the connection set-up only.
func Dial(ctx context.Context, cfg DialConfig) (*muxtunnel.ClientSession, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial gateway %s (yamux): %w", cfg.Addr, err)
	}
	dial := cfg.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 20 * time.Second}).DialContext
	}
	raw, err := dial(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial gateway %s (yamux): %w", cfg.Addr, err)
	}
	tlsCfg := &tls.Config{}
	if cfg.TLS != nil {
		tlsCfg = cfg.TLS.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = host
	}
	tlsCfg.NextProtos = []string{ALPN}
	if tlsCfg.MinVersion < tls.VersionTLS12 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	tc := tlsbatch.Client(raw, tlsCfg)
	hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	err = tc.TLS().HandshakeContext(hctx)
	cancel()
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("dial gateway %s (yamux): tls: %w", cfg.Addr, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
		tc.Close()
		return nil, fmt.Errorf("dial gateway %s (yamux): the gateway does not speak yamux (ALPN %q); is it an older version?", cfg.Addr, p)
	}
	rc := &readErrConn{Conn: tc}
	mc, err := start(rc, cfg.Log, cfg.Keepalive, true)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("dial gateway %s (yamux): %w", cfg.Addr, err)
	}
	sess, err := muxtunnel.Handshake(ctx, mc, muxtunnel.ClientConfig{
		Token: cfg.Token, Hello: cfg.Hello, Transport: muxtunnel.TransportYamux,
		MaxStreams: cfg.MaxStreams, Log: cfg.Log,
	})
	if err != nil {
		if re := rc.err.Load(); re != nil {
			// yamux reports only "session shutdown"; why the connection
			// ended is in its read error, such as the gateway's TLS alert
			// for a client certificate it refuses (TLS 1.3 sends it after
			// the client's handshake is done).
			err = fmt.Errorf("%w (the connection: %w)", err, *re)
		}
		return nil, fmt.Errorf("connect to gateway %s (yamux): %w", cfg.Addr, err)
	}
	return sess, nil
}

// readErrConn keeps the first read error of its connection.
type readErrConn struct {
	*tlsbatch.Conn
	err atomic.Pointer[error]
}

func (c *readErrConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.err.CompareAndSwap(nil, &err)
	}
	return n, err
}
