package quictunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"

	"github.com/sallyport/sallyport/internal/selfsigned"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	goodToken = "good-Secret-7f3a9c51"
	hangGuard = 10 * time.Second
)

type server struct {
	l        *quictunnel.Listener
	addr     string
	tls      *tls.Config // for clients
	sessions chan tunnel.Session
	logs     *observer.ObservedLogs
}

func startServer(t *testing.T, edit func(*quictunnel.Listener)) *server {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	core, logs := observer.New(zapcore.DebugLevel)
	s := &server{tls: &tls.Config{RootCAs: roots, ServerName: "localhost"}, sessions: make(chan tunnel.Session, 8), logs: logs}
	s.l = &quictunnel.Listener{
		Server: &muxtunnel.Server{
			Authenticate: func(_ *tls.ConnectionState, tok string) (tunnel.Identity, error) {
				if tok != goodToken {
					return tunnel.Identity{}, errors.New("unknown agent")
				}
				return tunnel.Identity{Group: "default"}, nil
			},
			OnSession: func(ss tunnel.Session) { s.sessions <- ss },
		},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}},
		Log: zap.New(core),
	}
	if edit != nil {
		edit(s.l)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.l.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		pc.Close()
	})
	return s
}

// deafConn is a UDP socket that sends but never receives: a peer whose
// network drops every answer, so its handshake never completes.
type deafConn struct {
	c      *net.UDPConn
	closed chan struct{}
	once   sync.Once
}

func newDeafConn(t *testing.T) *deafConn {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return &deafConn{c: c, closed: make(chan struct{})}
}

func (d *deafConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-d.closed
	return 0, nil, net.ErrClosed
}
func (d *deafConn) WriteTo(p []byte, a net.Addr) (int, error) { return d.c.WriteTo(p, a) }
func (d *deafConn) Close() error {
	d.once.Do(func() { close(d.closed); d.c.Close() })
	return nil
}
func (d *deafConn) LocalAddr() net.Addr                { return d.c.LocalAddr() }
func (d *deafConn) SetDeadline(t time.Time) error      { return nil }
func (d *deafConn) SetReadDeadline(t time.Time) error  { return nil }
func (d *deafConn) SetWriteDeadline(t time.Time) error { return nil }
func (d *deafConn) SetReadBuffer(int) error            { return nil }
func (d *deafConn) SetWriteBuffer(int) error           { return nil }

// waitFor polls cond (the listener has no event for its counters).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHandshakeNeverCompletes: peers that start a handshake and never
// finish it hold at most MaxHandshakes slots, are refused beyond that with
// a log line, and are dropped after the handshake timeout; then a real
// agent connects.
func TestHandshakeNeverCompletes(t *testing.T) {
	s := startServer(t, func(l *quictunnel.Listener) {
		l.HandshakeTimeout = 300 * time.Millisecond
		l.MaxHandshakes = 2
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	raddr, _ := net.ResolveUDPAddr("udp", s.addr)
	for range 4 {
		dc := newDeafConn(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &quic.Transport{Conn: dc}
			defer func() {
				dc.Close() // ends the transport's read loop first
				tr.Close()
			}()
			tc := s.tls.Clone()
			tc.NextProtos = []string{quictunnel.ALPN}
			_, err := tr.Dial(ctx, raddr, tc, &quic.Config{HandshakeIdleTimeout: hangGuard})
			if err == nil {
				t.Error("a deaf peer completed a handshake")
			}
		}()
	}
	waitFor(t, "two handshakes in progress and refusals", func() bool {
		return s.l.Handshaking() == 2 && s.l.Refused() > 0
	})
	if n := s.l.Handshaking(); n > 2 {
		t.Errorf("%d handshakes in progress; MaxHandshakes is 2", n)
	}
	if s.logs.FilterMessageSnippet("too many QUIC handshakes").Len() == 0 {
		t.Error("no log line about refused handshakes")
	}
	cancel() // the deaf peers stop sending
	wg.Wait()
	waitFor(t, "the stalled handshakes to time out", func() bool { return s.l.Handshaking() == 0 })

	sess, err := quictunnel.Dial(context.Background(), quictunnel.DialConfig{Addr: s.addr, TLS: s.tls, Token: goodToken})
	if err != nil {
		t.Fatalf("a real agent after the stalled handshakes: %v", err)
	}
	closeSession(t, sess)
}

func closeSession(t *testing.T, sess *muxtunnel.ClientSession) {
	t.Helper()
	sess.Close()
}

// TestNotQUICOrWrongALPN: datagrams that are not QUIC are ignored, and a
// QUIC client asking for another protocol fails its handshake with a clear
// error; the listener keeps serving.
func TestNotQUICOrWrongALPN(t *testing.T) {
	s := startServer(t, nil)
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	}
	c.Close()
	tc := s.tls.Clone()
	tc.NextProtos = []string{"h3"}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	_, err = quic.DialAddr(ctx, s.addr, tc, nil)
	if err == nil || !strings.Contains(err.Error(), "no_application_protocol") && !strings.Contains(err.Error(), "application protocol") {
		t.Fatalf("wrong ALPN: %v", err)
	}
	sess, err := quictunnel.Dial(ctx, quictunnel.DialConfig{Addr: s.addr, TLS: s.tls, Token: goodToken})
	if err != nil {
		t.Fatal(err)
	}
	closeSession(t, sess)
	// A wrong token is refused with the gateway's explanation.
	_, err = quictunnel.Dial(ctx, quictunnel.DialConfig{Addr: s.addr, TLS: s.tls, Token: "wrong"})
	if !errors.Is(err, muxtunnel.ErrUnauthenticated) {
		t.Fatalf("wrong token: %v", err)
	}
}

// TestAgentStreamLimit: QUIC itself stops an agent from opening more than
// its control stream.
func TestAgentStreamLimit(t *testing.T) {
	s := startServer(t, nil)
	tc := s.tls.Clone()
	tc.NextProtos = []string{quictunnel.ALPN}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	c, err := quic.DialAddr(ctx, s.addr, tc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	ctrl, err := c.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{Token: goodToken}})
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	ctrl.Write(append(msg, b...))
	var hdr [4]byte
	if _, err := io.ReadFull(ctrl, hdr[:]); err != nil {
		t.Fatal(err)
	}
	<-s.sessions
	_, err = c.OpenStream()
	if err == nil || !strings.Contains(err.Error(), "too many open streams") {
		t.Fatalf("second agent stream: %v; want the stream limit", err)
	}
}
