package quictunnel

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// heldCloseTrace is a qlog trace that holds the connection's close where
// quic-go records it: after it failed the connection's streams, before it
// cancels the connection's context. reached is closed there; release lets
// the close go on.
type heldCloseTrace struct {
	reached, release chan struct{}
	once             sync.Once
}

func (h *heldCloseTrace) AddProducer() qlogwriter.Recorder { return h }
func (h *heldCloseTrace) Close() error                     { return nil }
func (h *heldCloseTrace) RecordEvent(e qlogwriter.Event) {
	if _, ok := e.(qlog.ConnectionClosed); ok {
		h.once.Do(func() { close(h.reached) })
		<-h.release
	}
}

// TestIdleTimeoutSaidAtOnce: a control stream whose read failed with QUIC's
// idle timeout reads KeepaliveEnded at once, before the connection's context
// ends. quic-go fails the streams first; the session's reader (muxtunnel's
// readControl, on the gateway and on the agent) asks right away, so the
// session read as lost and ended with "timeout: no recent network
// activity" whenever it asked in between (4 of 40 under -race).
func TestIdleTimeoutSaidAtOnce(t *testing.T) {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	held := &heldCloseTrace{reached: make(chan struct{}), release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(held.release)
		}
	}
	scfg := &quic.Config{MaxIdleTimeout: 100 * time.Millisecond, // no keepalive: both ends time out
		Tracer: func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return held }}
	ln, err := (&quic.Transport{Conn: pc}).Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}}, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := quic.DialAddr(ctx, pc.LocalAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}},
		&quic.Config{MaxIdleTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseWithError(0, "")
	defer release() // first: a connection held in its close holds up nothing else
	agent := &conn{c: cc, agent: true}
	as, err := agent.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gw := &conn{c: sc}
	ctrl, err := gw.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	for {
		if _, err = ctrl.Read(buf); err != nil {
			break
		}
	}
	select {
	case <-sc.Context().Done():
		t.Fatal("the connection's context ended before its close was recorded: the test no longer holds it")
	default:
	}
	if _, ended := gw.KeepaliveEnded(); !ended {
		t.Errorf("the control stream failed with %v; KeepaliveEnded() = false before the connection's context ended", err)
	}
	<-held.reached
	release()
	<-sc.Context().Done()
	if _, ended := gw.KeepaliveEnded(); !ended {
		t.Errorf("KeepaliveEnded() = false once the idle timeout ended the connection (%v)", context.Cause(sc.Context()))
	}
}
