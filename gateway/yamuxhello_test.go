package gateway

import (
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// TestYamuxStreamsBeforeHelloEndTheConnection (tunnel/muxtunnel's
// watchStreams): a yamux client (no certificate needed) that opens
// streams besides its control stream before sending its hello has its
// connection closed at once. The gateway used to accept nothing but the
// control stream until the hello (10 s), and yamux buffers up to the
// 256 KiB initial window on each of up to 1,024 unaccepted streams:
// 256 streams of 256 KiB each held 64-128 MiB of the gateway's heap for
// the whole hello timeout.
func TestYamuxStreamsBeforeHelloEndTheConnection(t *testing.T) {
	g := startTunnelGateway(t)
	c, err := tls.Dial("tcp", g.TunnelAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{yamuxtunnel.ALPN}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	s, err := yamux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.OpenStream(); err != nil { // the control stream, silent
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for range 8 {
		st, err := s.OpenStream()
		if err != nil {
			break
		}
		go func() {
			st.SetWriteDeadline(time.Now().Add(3 * time.Second))
			st.Write(chunk)
		}()
	}
	select {
	case <-s.CloseChan():
	case <-time.After(3 * time.Second): // well within the 10 s hello timeout
		t.Fatal("the gateway keeps a connection whose client opened extra streams before its hello (and buffers their data)")
	}
}
