package yamuxtunnel

import (
	"net"
	"testing"
)

// TestLifeConnReadsOnly: what is read from the peer is what shows the
// keepalive that the path works; what is written is not (on a dead path
// writes go into the socket's buffer until it is full), so the keepalive's
// own pings cannot keep a dead session alive.
func TestLifeConnReadsOnly(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newLifeConn(a)
	c.last.Store(-1)
	go func() { _, _ = b.Read(make([]byte, 16)) }()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got := c.last.Load(); got != -1 {
		t.Fatalf("a write was taken as a sign of life (at %d ns)", got)
	}
	go func() { _, _ = b.Write([]byte("x")) }()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if got := c.last.Load(); got < 0 {
		t.Fatalf("a read was not noted (last %d)", got)
	}
}
