package quictunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// DialConfig says how an agent connects one QUIC session. The zero value of
// each optional field works.
type DialConfig struct {
	// Addr is the gateway's tunnel address, host:port (UDP, same port
	// number as the TCP listener).
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
	// Keepalive finds a dead path (0 → DefaultKeepalive): the session ends
	// after twice it without a packet, and the agent pings after 5 s
	// without one, or after Keepalive when that is shorter (see the
	// package doc).
	Keepalive time.Duration
	// ListenPacket opens the session's UDP socket. Nil → a UDP socket on an
	// ephemeral port. Tests use it to simulate a network that drops UDP.
	ListenPacket func() (net.PacketConn, error)
	// Log receives session events. Nil → no logs.
	Log *zap.Logger
}

// Dial connects and authenticates one session. It fails with an error
// wrapping muxtunnel.ErrUnauthenticated when the gateway refuses the token.
// ctx bounds the handshake only.
func Dial(ctx context.Context, cfg DialConfig) (*muxtunnel.ClientSession, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial gateway %s (quic): %w", cfg.Addr, err)
	}
	raddr, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial gateway %s (quic): %w", cfg.Addr, err)
	}
	var pc net.PacketConn
	if cfg.ListenPacket != nil {
		pc, err = cfg.ListenPacket()
	} else {
		pc, err = net.ListenUDP("udp", nil)
	}
	if err != nil {
		return nil, fmt.Errorf("dial gateway %s (quic): udp socket: %w", cfg.Addr, err)
	}
	tlsCfg := &tls.Config{}
	if cfg.TLS != nil {
		tlsCfg = cfg.TLS.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = host
	}
	tlsCfg.NextProtos = []string{ALPN}
	tlsCfg.MinVersion = tls.VersionTLS13
	qcfg := baseConfig(cfg.Keepalive)
	qcfg.MaxIncomingStreams = int64(cfg.MaxStreams)
	if cfg.MaxStreams <= 0 {
		qcfg.MaxIncomingStreams = muxtunnel.DefaultMaxStreams
	}
	tr := &quic.Transport{Conn: pc}
	release := func() {
		tr.Close()
		pc.Close()
	}
	c, err := tr.Dial(ctx, raddr, tlsCfg, qcfg)
	if err != nil {
		release()
		return nil, fmt.Errorf("dial gateway %s (quic): %w", cfg.Addr, err)
	}
	sess, err := muxtunnel.Handshake(ctx, &conn{c: c, onClose: release, agent: true}, muxtunnel.ClientConfig{
		Token: cfg.Token, Hello: cfg.Hello, Transport: muxtunnel.TransportQUIC,
		MaxStreams: cfg.MaxStreams, Log: cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to gateway %s (quic): %w", cfg.Addr, err)
	}
	return sess, nil
}
