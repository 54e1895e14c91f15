package quictunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// Listener is the gateway's QUIC listener. Set Server and TLS.
type Listener struct {
	// Server runs each agent connection.
	Server *muxtunnel.Server
	// TLS is the tunnel certificate config; ALPN and TLS 1.3 are set here.
	TLS *tls.Config
	// HandshakeTimeout drops a handshake with no packet for this long
	// (0 → 5s; the whole handshake may take twice as long).
	HandshakeTimeout time.Duration
	// Keepalive (0 → DefaultKeepalive) makes the idle timeout twice it,
	// unless IdleTimeout is set; the gateway pings after min(5 s, it)
	// without a packet, as the agent does (see the package doc).
	Keepalive time.Duration
	// IdleTimeout ends a session that received nothing for this long
	// (0 → twice Keepalive, 30s by default). The peers use the smaller of
	// their two values, and send keepalive pings every half of it at most.
	IdleTimeout time.Duration
	// MaxHandshakes caps the handshakes in progress (0 → 256); more are
	// refused until one completes or times out.
	MaxHandshakes int
	// Log receives listener events. Nil → no logs.
	Log *zap.Logger

	handshaking atomic.Int64 // handshakes in progress
	refused     atomic.Int64 // handshakes refused over MaxHandshakes
}

func (l *Listener) log() *zap.Logger {
	if l.Log == nil {
		return zap.NewNop()
	}
	return l.Log
}

// Handshaking is the number of QUIC handshakes in progress.
func (l *Listener) Handshaking() int64 { return l.handshaking.Load() }

// Refused counts handshakes refused because MaxHandshakes were running.
func (l *Listener) Refused() int64 { return l.refused.Load() }

type slotKey struct{}

// handshakeSlot is released once: when the handshake completes or the
// connection attempt ends.
type handshakeSlot struct {
	once sync.Once
	l    *Listener
}

func (s *handshakeSlot) release() { s.once.Do(func() { s.l.handshaking.Add(-1) }) }

// connContext admits a new connection attempt while fewer than
// MaxHandshakes are in progress.
func (l *Listener) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	max := int64(l.MaxHandshakes)
	if max <= 0 {
		max = maxHandshakes
	}
	if l.handshaking.Add(1) > max {
		l.handshaking.Add(-1)
		if n := l.refused.Add(1); n&(n-1) == 0 { // log the 1st, 2nd, 4th, 8th… refusal
			l.log().Warn("too many QUIC handshakes in progress; refusing new ones", zap.Int64("max", max))
		}
		return nil, errors.New("too many handshakes")
	}
	slot := &handshakeSlot{l: l}
	// ctx ends when the connection attempt ends, whatever the reason.
	context.AfterFunc(ctx, slot.release)
	return context.WithValue(ctx, slotKey{}, slot), nil
}

// Serve accepts agent connections on pc until ctx ends, then closes every
// connection and returns once they are gone. pc is not closed.
func (l *Listener) Serve(ctx context.Context, pc net.PacketConn) error {
	tlsCfg := l.TLS.Clone()
	tlsCfg.NextProtos = []string{ALPN}
	tlsCfg.MinVersion = tls.VersionTLS13
	cfg := baseConfig(l.Keepalive)
	if l.HandshakeTimeout > 0 {
		cfg.HandshakeIdleTimeout = l.HandshakeTimeout
	}
	if l.IdleTimeout > 0 {
		cfg.MaxIdleTimeout = l.IdleTimeout
	}
	// One agent-initiated stream: the control stream (see tunnel.proto, M1).
	cfg.MaxIncomingStreams = 1
	tr := &quic.Transport{Conn: pc, ConnContext: l.connContext}
	ln, err := tr.Listen(tlsCfg, cfg)
	if err != nil {
		return fmt.Errorf("quic listener: %w", err)
	}
	var wg sync.WaitGroup
	defer func() {
		ln.Close()
		wg.Wait()
		tr.Close()
	}()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("quic listener: %w", err)
		}
		if slot, ok := c.Context().Value(slotKey{}).(*handshakeSlot); ok {
			slot.release()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.Server.ServeConn(ctx, &conn{c: c}, muxtunnel.TransportQUIC)
		}()
	}
}
