package gateway

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestLimitListener: at most n connections at once; the next Accept waits
// (and says so in the log, once) until one of them closes, then goes on;
// Close ends a waiting Accept; a connection's CloseWrite reaches the TCP
// connection (net/http half-closes to deliver a response before it closes).
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	l := newLimitListener(ln, 2, zap.New(core))
	defer l.Close()
	accepted := make(chan net.Conn, 3)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	first := <-accepted
	<-accepted
	deadline := time.Now().Add(5 * time.Second) // a guard only
	for logs.FilterMessageSnippet("public.max_connections connections are open").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the third connection was not held back, or not said")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case c := <-accepted:
		t.Fatalf("a third connection was accepted while two were open: %v", c.RemoteAddr())
	default:
	}
	// Half-close the first from the server's side: the client reads EOF.
	if err := first.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	clients[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := clients[0].Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read after the server's CloseWrite: %d, %v; want EOF", n, err)
	}
	first.Close()
	first.Close() // a second Close gives back nothing more
	third := <-accepted
	third.Close()
	if n := logs.Len(); n != 1 {
		t.Errorf("%d log lines; want the one", n)
	}
	l.Close()
	if err := <-acceptErr; err == nil {
		t.Fatal("Accept after Close succeeded")
	}
}

func TestMaxConnectionsDefault(t *testing.T) {
	lim := openFileLimit()
	if lim <= 0 {
		t.Fatalf("open-file limit %d: unknown on a Unix test machine", lim)
	}
	for _, tc := range []struct{ set, want int }{{0, lim * 3 / 4}, {-1, 0}, {7, 7}} {
		if got := (&Config{MaxConnections: tc.set}).maxConnections(); got != tc.want {
			t.Errorf("MaxConnections %d: limit %d, want %d", tc.set, got, tc.want)
		}
	}
}
