package tlsbatch_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/tunnel/tlsbatch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// countingConn counts the writes that reach it and can be made to fail them.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	fail   error         // returned by every Write when set
	enter  chan struct{} // when set, closed (and cleared) as the next Write begins
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	err := c.fail
	if c.enter != nil {
		close(c.enter)
		c.enter = nil
	}
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// unshaken returns a client (batched, on a countingConn) and server (plain
// tls) over net.Pipe that have not shaken hands yet.
func unshaken(t *testing.T) (*tlsbatch.Conn, *countingConn, *tls.Conn) {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	a, b := net.Pipe()
	cc := &countingConn{Conn: a}
	client := tlsbatch.Client(cc, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13})
	server := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	// Close the pipe first: close_notify on an unread net.Pipe would wait.
	t.Cleanup(func() { a.Close(); b.Close(); client.Close(); server.Close() })
	return client, cc, server
}

// pair returns a handshaken client (batched, on a countingConn) and server
// (plain tls) over net.Pipe.
func pair(t *testing.T) (*tlsbatch.Conn, *countingConn, *tls.Conn) {
	t.Helper()
	client, cc, server := unshaken(t)
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(context.Background()) }()
	if err := client.TLS().HandshakeContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := client.ConnectionState().Version; got != tls.VersionTLS13 {
		t.Fatalf("ConnectionState().Version = %x", got)
	}
	return client, cc, server
}

// TestWriteIsOneSocketWrite: a Write of many records reaches the socket in
// one write, and the peer reads exactly what was written.
func TestWriteIsOneSocketWrite(t *testing.T) {
	client, cc, server := pair(t)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // 160 KiB: 10+ records
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(server, int64(len(msg))))
		got <- b
	}()
	before := cc.count()
	if n, err := client.Write(msg); n != len(msg) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w := cc.count() - before; w != 1 {
		t.Errorf("%d socket writes for one Write of %d bytes; want 1", w, len(msg))
	}
	if b := <-got; !bytes.Equal(b, msg) {
		t.Errorf("peer read %d bytes, not what was written", len(b))
	}
}

// TestWriteErrorSticks: a failed socket write fails that Write, though TLS
// counted its bytes, and every later one.
func TestWriteErrorSticks(t *testing.T) {
	client, cc, _ := pair(t)
	boom := errors.New("boom")
	cc.mu.Lock()
	cc.fail = boom
	cc.mu.Unlock()
	for i := range 2 {
		if n, err := client.Write([]byte("hello")); n != 0 || !errors.Is(err, boom) {
			t.Fatalf("Write %d = %d, %v; want 0, %v", i, n, err, boom)
		}
	}
}

// TestCloseBreaksBlockedWrite: Close during a Write whose batch the peer
// does not read closes the socket at once (no close_notify queued behind
// it), and the Write fails.
func TestCloseBreaksBlockedWrite(t *testing.T) {
	client, cc, _ := pair(t)
	entered := make(chan struct{})
	cc.mu.Lock()
	cc.enter = entered
	cc.mu.Unlock()
	errc := make(chan error, 1)
	go func() {
		_, err := client.Write(make([]byte, 64<<10)) // net.Pipe: blocks until read
		errc <- err
	}()
	<-entered // the batch is on its way to the socket
	if err := client.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := <-errc; err == nil {
		t.Error("Write after Close succeeded")
	}
}

// TestWriteBeforeHandshake: a Write on a connection that has not shaken
// hands yet does the handshake and arrives. Before the fix its first flight
// waited in the batch for the Write that waited for the peer's answer: the
// Write hung (here: failed at the pipe's deadline).
func TestWriteBeforeHandshake(t *testing.T) {
	client, cc, server := unshaken(t)
	deadline := time.Now().Add(10 * time.Second)
	cc.SetDeadline(deadline)
	server.SetDeadline(deadline)
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 5)
		n, _ := io.ReadFull(server, buf)
		got <- string(buf[:n])
	}()
	if n, err := client.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write before the handshake = %d, %v", n, err)
	}
	if s := <-got; s != "hello" {
		t.Errorf("peer read %q, want hello", s)
	}
}

// TestAbortSkipsCloseNotify: Abort closes a connection whose peer reads
// nothing at once; Close would write close_notify first and wait up to the
// 5 s write deadline tls gives it (a keepalive that found the path dead
// ended the session that much later, a reviewer's note).
func TestAbortSkipsCloseNotify(t *testing.T) {
	client, _, _ := pair(t) // over net.Pipe: a write waits for the peer to read
	done := make(chan error, 1)
	go func() { done <- client.Abort() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Abort waited for the peer to read: it wrote close_notify, as Close does")
	}
	if _, err := client.Write([]byte("x")); err == nil {
		t.Error("Write after Abort succeeded")
	}
}
