package quictunnel

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// TestIdleTimeoutEndedSaysSo: a connection that QUIC's idle timeout ended
// (nothing came from the agent: its host or path died) says so
// (muxtunnel.KeepaliveEnder), so that the gateway logs the keepalive's end
// and counts the session as silent, not as "timeout: no recent network
// activity" and lost; one closed by a peer does not.
func TestIdleTimeoutEndedSaysSo(t *testing.T) {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, idle := range []bool{true, false} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		qcfg := &quic.Config{MaxIdleTimeout: 100 * time.Millisecond} // no keepalive: both ends time out
		ln, err := (&quic.Transport{Conn: pc}).Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}}, qcfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cc, err := quic.DialAddr(ctx, pc.LocalAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}}, qcfg)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := &conn{c: sc}
		if _, ended := c.KeepaliveEnded(); ended {
			t.Error("a live connection says its keepalive ended it")
		}
		if !idle {
			_ = cc.CloseWithError(0, "agent closed")
		}
		<-sc.Context().Done()
		if _, ended := c.KeepaliveEnded(); ended != idle {
			t.Errorf("idle timeout: %v; KeepaliveEnded() = %v (the end: %v)", idle, ended, context.Cause(sc.Context()))
		}
		_ = cc.CloseWithError(0, "")
		<-cc.Context().Done()
		ln.Close()
		pc.Close()
		cancel()
	}
}
