package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// startTunnelGateway runs a gateway with no apps on loopback until the test
// ends and returns it.
func startTunnelGateway(t *testing.T) *Gateway {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{
		PublicAddr: "127.0.0.1:0", TunnelAddr: "127.0.0.1:0",
		TunnelTLS: &tls.Config{Certificates: []tls.Certificate{cert}}, AgentMoveWait: -1,
		Log: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return g
}

// TestCertlessGRPCStreamsBounded: a gRPC connection to the tunnel port
// without a client certificate (anyone's) that opens Enroll calls and never
// sends their request gets at most enrollMaxStreams of them; the rest are
// refused. With the sessions' server settings it was allowed 10,016 such
// streams, each holding a handler goroutine (about 10 KiB) for as long as
// the connection lived, and it lived as long as it answered pings.
func TestCertlessGRPCStreamsBounded(t *testing.T) {
	g := startTunnelGateway(t)
	c, err := tls.Dial("tcp", g.TunnelAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // a guard only
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var limit uint32
	for limit == 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the server's settings: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			v, ok := sf.Value(http2.SettingMaxConcurrentStreams)
			if !ok {
				v = 1 << 31 // no limit announced
			}
			limit = v
		}
	}
	if limit > enrollMaxStreams {
		t.Errorf("a connection without a certificate may open %d streams, want at most %d", limit, enrollMaxStreams)
	}
	if err := fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}

	// Open more half-open Enroll calls than the limit: the ones over it
	// are reset at once.
	const open = enrollMaxStreams + 4
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for i := range open {
		hbuf.Reset()
		for _, f := range [][2]string{
			{":method", "POST"}, {":scheme", "https"}, {":authority", "gateway"},
			{":path", "/sallyport.tunnel.v1.EnrollmentService/Enroll"},
			{"content-type", "application/grpc"}, {"te", "trailers"},
		} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	refused := map[uint32]bool{}
	for len(refused) < open-enrollMaxStreams {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%d of the %d streams over the limit refused, then: %v", len(refused), open-enrollMaxStreams, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			refused[f.StreamID] = true
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		}
	}
	for id := range refused {
		if id <= 2*enrollMaxStreams {
			t.Errorf("stream %d refused; want only the ones over the limit: %v", id, refused)
		}
	}
}

// limitedTunnelListener runs an alpnListener on loopback with the given
// per-address limits; yamux connections are kept open until the test ends.
func limitedTunnelListener(t *testing.T, maxPending, maxCertless int) *alpnListener {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpnH2, yamuxtunnel.ALPN},
		ClientAuth: tls.RequestClientCert}
	var mu sync.Mutex
	var yamuxConns []net.Conn
	l := newALPNListenerLimits(ln, cfg, func(c net.Conn) {
		mu.Lock()
		yamuxConns = append(yamuxConns, c)
		mu.Unlock()
	}, zaptest.NewLogger(t), maxPending, maxCertless)
	t.Cleanup(func() {
		l.Close()
		l.wait()
		mu.Lock()
		for _, c := range yamuxConns {
			c.Close()
		}
		mu.Unlock()
	})
	return l
}

// closedAtOnce reads from each connection for up to wait and returns how
// many the server closed meanwhile (the others time out).
func closedAtOnce(conns []net.Conn, wait time.Duration) int {
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(wait))
			var ne net.Error
			if _, err := c.Read(make([]byte, 1)); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(closed.Load())
}

// TestTunnelPerAddressLimits: one address gets at most maxPending TLS
// handshakes under way and maxCertless connections without a client
// certificate at once on the tunnel port; one more is closed at once
// instead of holding a file descriptor and a goroutine for the handshake
// timeout (10 s), the hello timeout (10 s) or an enrollment connection's
// lifetime. Closing one lets the next in.
func TestTunnelPerAddressLimits(t *testing.T) {
	const maxPending, maxCertless = 4, 2
	t.Run("handshakes", func(t *testing.T) {
		addr := limitedTunnelListener(t, maxPending, maxCertless).Addr().String()
		var silent []net.Conn
		for range maxPending + 1 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			silent = append(silent, c)
		}
		if n := closedAtOnce(silent, 3*time.Second); n != 1 {
			t.Fatalf("%d of %d silent connections closed at once; want the one over the limit of %d", n, len(silent), maxPending)
		}
	})

	t.Run("without a certificate", func(t *testing.T) {
		l := limitedTunnelListener(t, maxPending, maxCertless)
		addr := l.Addr().String()
		dial := func(proto string) net.Conn {
			c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		accepted := make(chan net.Conn, maxCertless+2)
		go func() {
			for {
				c, err := l.Certless().Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		conns := []net.Conn{dial(alpnH2), dial(yamuxtunnel.ALPN), dial(alpnH2)}
		if n := closedAtOnce(conns, 3*time.Second); n != 1 {
			t.Fatalf("%d of %d connections without a certificate closed at once; want the one over the limit of %d", n, len(conns), maxCertless)
		}
		// Of the two h2 connections at least one was kept: closing it (as
		// the enrollment server does when it is done) makes room for the
		// next.
		select {
		case kept := <-accepted:
			kept.Close()
		case <-time.After(sendGuardWait):
			t.Fatal("no connection without a certificate reached the enrollment server")
		}
		dial(alpnH2)
		select {
		case c := <-accepted:
			c.Close()
		case <-time.After(sendGuardWait):
			t.Fatal("no room for a connection after one without a certificate closed")
		}
	})
}

// TestCertlessSilentConnectionDropped: a TLS connection without a client
// certificate that sends no HTTP/2 preface is closed after
// enrollPrefaceTimeout (1 s), not the TLS handshake's 10 s: grpc's Stop
// waits for such connections, so twenty of them held up the gateway's
// shutdown for 9.7 s. (The 5 s below is a bound on the wait, twice as far
// from either timeout.)
func TestCertlessSilentConnectionDropped(t *testing.T) {
	g := startTunnelGateway(t)
	c, err := tls.Dial("tcp", g.TunnelAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, c) // the server's settings, then the close
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a certless connection that sent no preface was still open after 5 s")
	}
}
