package testrig

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// udpEcho answers every datagram with the sender's address followed by the
// datagram.
func udpEcho(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDP(append([]byte(from.String()+" "), buf[:n]...), from)
		}
	}()
	return c.LocalAddr().String()
}

// roundTrip sends p through the relay and returns the echo, or nil when
// nothing came back within wait.
func roundTrip(t *testing.T, c *net.UDPConn, p []byte, wait time.Duration) []byte {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestImpairedUDP(t *testing.T) {
	r := StartImpairedUDP(t, udpEcho(t), 7)
	c, err := net.Dial("udp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc := c.(*net.UDPConn)
	first := roundTrip(t, uc, []byte("a"), 5*time.Second)
	if !bytes.HasSuffix(first, []byte(" a")) {
		t.Fatalf("echo through a perfect path: %q", first)
	}
	from := string(bytes.Fields(first)[0])

	r.Set(Impairment{MaxDatagram: 1232})
	if got := roundTrip(t, uc, make([]byte, 1233), 100*time.Millisecond); got != nil {
		t.Fatalf("a 1233-byte datagram crossed a 1232-byte limit")
	}
	if got := roundTrip(t, uc, []byte("b"), 5*time.Second); !bytes.HasSuffix(got, []byte(" b")) {
		t.Fatalf("a small datagram under the limit: %q", got)
	}

	if err := r.Rebind(); err != nil {
		t.Fatal(err)
	}
	got := roundTrip(t, uc, []byte("c"), 5*time.Second)
	if !bytes.HasSuffix(got, []byte(" c")) || string(bytes.Fields(got)[0]) == from {
		t.Fatalf("after Rebind the target saw %q, want a source other than %s", got, from)
	}

	r.Set(Impairment{Blackhole: true})
	if got := roundTrip(t, uc, []byte("d"), 100*time.Millisecond); got != nil {
		t.Fatalf("a datagram crossed a blackhole: %q", got)
	}
	r.Set(Impairment{})
	r.BlackholeCurrent()
	if got := roundTrip(t, uc, []byte("e"), 100*time.Millisecond); got != nil {
		t.Fatalf("a datagram of a blackholed mapping crossed: %q", got)
	}
	st := r.Stats()
	if st.TooBig != 1 || st.Blackholed < 2 {
		t.Fatalf("stats %+v: want 1 too big, 2 blackholed", st)
	}
	// A Rebind after Close starts nothing (goleak checks the package).
	r.Close()
	if err := r.Rebind(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Rebind after Close: %v, want net.ErrClosed", err)
	}
}

// TestImpairedUDPLossIsSeeded: the same seed drops the same datagrams.
func TestImpairedUDPLossIsSeeded(t *testing.T) {
	lost := func() int {
		r := StartImpairedUDP(t, udpEcho(t), 42)
		c, err := net.Dial("udp", r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Sent one at a time: only the client's datagrams draw (the echo
		// of a lost one never comes), in the order sent.
		r.Set(Impairment{Loss: 0.2})
		for range 50 {
			roundTrip(t, c.(*net.UDPConn), []byte("x"), 20*time.Millisecond)
		}
		return r.Stats().Lost
	}
	a, b := lost(), lost()
	if a != b || a == 0 {
		t.Fatalf("lost %d then %d with the same seed; want the same, above 0", a, b)
	}
}

func TestImpairedTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	r := StartImpairedTCP(t, ln.Addr().String())
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	c.Write([]byte("a"))
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'a' {
		t.Fatalf("echo: %q %v", buf, err)
	}
	r.Set(Impairment{Blackhole: true})
	c.Write([]byte("b"))
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(buf); n != 0 || !isTimeout(err) {
		t.Fatalf("through a blackhole: %d bytes, %v; want a timeout, the connection still open", n, err)
	}
	r.Set(Impairment{})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'b' {
		t.Fatalf("once the path is back the held byte should arrive: %q %v", buf, err)
	}
	r.BlackholeCurrent()
	c.Write([]byte("c"))
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(buf); n != 0 || !isTimeout(err) {
		t.Fatalf("through BlackholeCurrent: %d bytes, %v; want a timeout, the connection still open", n, err)
	}
	r.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err == nil || isTimeout(err) {
		t.Fatalf("after Cut: %v, want a reset", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestImpairedTCPBlackholeHidesClose: once BlackholeCurrent killed a
// connection, the target closing its end reaches the client no more than
// its bytes do (a dead path carries no FIN), so a test of keepalive sees
// each side notice by its own pings.
func TestImpairedTCPBlackholeHidesClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	r := StartImpairedTCP(t, ln.Addr().String())
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := <-accepted
	// A byte through the relay: it has registered the connection (the
	// target accepts before the relay does), so BlackholeCurrent finds it.
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(up, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	r.BlackholeCurrent()
	up.Close()
	buf := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(buf); n != 0 || !isTimeout(err) {
		t.Fatalf("the target closed a blackholed connection and the client read %d bytes, %v; want a timeout, the connection still open", n, err)
	}
}

// TestImpairedTCPRate: a rate-limited relay delivers every byte, in order,
// no faster than the rate.
func TestImpairedTCPRate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size, rate = 256 << 10, 1 << 20 // a quarter of a second's worth
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	r := StartImpairedTCP(t, ln.Addr().String())
	r.Set(Impairment{Rate: rate})
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := make([]byte, size)
	for i := range sent {
		sent[i] = byte(i * 7)
	}
	start := time.Now()
	if _, err := c.Write(sent); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b := <-got
	took := time.Since(start)
	if !bytes.Equal(b, sent) {
		t.Fatalf("the relay delivered %d bytes, not the %d sent (or not in order)", len(b), len(sent))
	}
	// The first slice may go at once; the rest waits for the rate.
	if least := time.Duration(size-paceSlice(rate)) * time.Second / rate; took < least {
		t.Fatalf("%d bytes at %d B/s took %v, less than the %v the rate allows", size, rate, took, least)
	}
}
