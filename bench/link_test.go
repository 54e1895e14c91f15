package bench

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestScheduleDelay: without a rate, every chunk arrives the one-way delay
// after it was handed over.
func TestScheduleDelay(t *testing.T) {
	s := schedule{shape: newLinkShape(20*time.Millisecond, 0)}
	t0 := time.Unix(1000, 0)
	for i, at := range []time.Duration{0, 0, time.Millisecond, 50 * time.Millisecond} {
		if got, want := s.next(t0.Add(at), 1<<14), t0.Add(at+10*time.Millisecond); !got.Equal(want) {
			t.Errorf("chunk %d: arrives %v, want %v", i, got.Sub(t0), want.Sub(t0))
		}
	}
}

// TestScheduleRate checks the token bucket: a full bucket lets linkBurst
// bytes through at once, then the rate paces the rest, and a quiet spell
// refills the bucket up to linkBurst only.
func TestScheduleRate(t *testing.T) {
	const rate = 1000 // bytes per second
	s := schedule{shape: newLinkShape(2*time.Millisecond, rate*8)}
	t0 := time.Unix(1000, 0)
	delay := time.Millisecond
	steps := []struct {
		at   time.Duration // handed over, from t0
		n    int
		want time.Duration // arrival, from t0
	}{
		{0, linkBurst, delay},                                   // the full bucket
		{0, 1000, time.Second + delay},                          // owes 1000 B: one second
		{0, 500, 1500*time.Millisecond + delay},                 // and 500 more
		{time.Second, 500, 2*time.Second + delay},               // still in debt at 1 s
		{100 * time.Second, linkBurst, 100*time.Second + delay}, // refilled, to the burst only
		{100 * time.Second, 2000, 102*time.Second + delay},
	}
	for i, st := range steps {
		if got := s.next(t0.Add(st.at), st.n); !got.Equal(t0.Add(st.want)) {
			t.Errorf("step %d: arrives at %v, want %v", i, got.Sub(t0), st.want)
		}
	}
}

// TestScheduleKeepsOrder: arrivals never go backwards, whatever the sizes.
func TestScheduleKeepsOrder(t *testing.T) {
	s := schedule{shape: newLinkShape(10*time.Millisecond, 100e6)}
	t0 := time.Unix(1000, 0)
	var last time.Time
	var sent int
	for i := range 2000 {
		n := 1 + (i*7919)%linkBurst
		sent += n
		at := s.next(t0.Add(time.Duration(i)*10*time.Microsecond), n)
		if at.Before(last) {
			t.Fatalf("chunk %d arrives at %v, before the one ahead at %v", i, at, last)
		}
		last = at
	}
	// 2000 chunks offered in 20 ms at 12.5 MB/s: the last one arrives when
	// the rate has carried everything but at most the first burst, plus
	// the delay.
	secs := func(b int) time.Duration { return time.Duration(float64(b) / 12.5e6 * float64(time.Second)) }
	lo, hi := t0.Add(secs(sent-linkBurst)+5*time.Millisecond), t0.Add(secs(sent)+5*time.Millisecond)
	if last.Before(lo) || last.After(hi) {
		t.Errorf("last arrival %v after t0, want from %v to %v", last.Sub(t0), lo.Sub(t0), hi.Sub(t0))
	}
}

func TestLinkQueueBytes(t *testing.T) {
	for _, c := range []struct {
		rtt  time.Duration
		bits int64
		want int
	}{
		{20 * time.Millisecond, 0, linkQueueMax},
		{20 * time.Millisecond, 100e6, linkQueueMin}, // 2 × 12.5 MB/s × 10 ms = 250 kB
		{20 * time.Millisecond, 1e9, 2_500_000},      // 2 × 125 MB/s × 10 ms
		{200 * time.Millisecond, 10e9, linkQueueMax}, // 250 MB, capped
	} {
		if got := newLinkShape(c.rtt, c.bits).queueBytes(); got != c.want {
			t.Errorf("rtt %v rate %d: queue %d, want %d", c.rtt, c.bits, got, c.want)
		}
	}
}

// sinkServer accepts one connection, reads it to the end, answers the
// SHA-256 of what it read, and closes.
func sinkServer(t *testing.T) (addr string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			errc <- err
			return
		}
		_, err = c.Write(h.Sum(nil))
		errc <- err
	}()
	return ln.Addr().String(), errc
}

// TestLinkForwards sends 1 MiB through a shaped link: the bytes arrive
// intact and in order, the end of the stream passes as a half-close, the
// answer comes back, and it all takes at least what the rate and the
// delay make it (lower bounds only: a loaded machine can only be slower).
func TestLinkForwards(t *testing.T) {
	addr, served := sinkServer(t)
	const rate = 5e6 // bytes per second
	l, err := startLink(addr, newLinkShape(20*time.Millisecond, rate*8))
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	start := time.Now()
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	if want := sha256.Sum256(payload); !bytes.Equal(got, want[:]) {
		t.Fatalf("the server read something else: hash %x, want %x", got, want)
	}
	minimum := time.Duration(float64(len(payload)-linkBurst)/rate*float64(time.Second)) + 20*time.Millisecond
	if elapsed < minimum {
		t.Errorf("1 MiB at 5 MB/s over a 20 ms round trip took %v, less than the %v the link allows", elapsed, minimum)
	}
}

// TestLinkBackpressure: a receiver that does not read stops the sender
// after a bounded amount, the link's queue plus the sockets' buffers.
func TestLinkBackpressure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c // never read
		}
	}()
	l, err := startLink(ln.Addr().String(), newLinkShape(time.Millisecond, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer func() {
		if s := <-accepted; s != nil {
			s.Close()
		}
	}()
	const bound = 128 << 20
	buf := make([]byte, 64<<10)
	written := 0
	for written < bound {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Write(buf)
		written += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if written >= bound {
		t.Fatalf("wrote %d MiB into a link whose receiver reads nothing: no backpressure", written>>20)
	}
	t.Logf("the sender stopped after %.1f MiB", float64(written)/(1<<20))
}

// TestLinkCloseCutsConnections: closing the link ends the connections
// through it, so nothing outlives the harness's stop.
func TestLinkCloseCutsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	l, err := startLink(ln.Addr().String(), newLinkShape(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	l.close()
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("read after close: %v", err) // a reset is as good as an end
	}
}

// TestSleepUntil checks that sleepUntil never returns before its time,
// sleeping or spinning, also on a thread with the precise timer slack (how
// late it wakes is the machine's business and not asserted).
func TestSleepUntil(t *testing.T) {
	check := func(t *testing.T) {
		for _, spin := range []bool{false, true} {
			for _, d := range []time.Duration{-time.Second, 0, time.Microsecond, 3 * time.Millisecond} {
				at := time.Now().Add(d)
				sleepUntil(at, spin)
				if now := time.Now(); now.Before(at) {
					t.Errorf("sleepUntil(now%+v, spin %v) returned %v early", d, spin, at.Sub(now))
				}
			}
		}
	}
	check(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		preciseThread() // as a deliverer does; its thread ends with it
		check(t)
	}()
	<-done
}
