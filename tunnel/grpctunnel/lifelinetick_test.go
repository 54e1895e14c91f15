package grpctunnel

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// feedConn is a connection whose reads come from a pipe the test writes,
// and whose writes are kept.
type feedConn struct {
	net.Conn
	in  *io.PipeReader
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *feedConn) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *feedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *feedConn) Close() error { return c.in.Close() }

// written returns what was written to c.
func (c *feedConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

// fakeTicks is the lifelines' ticker under the test's hand: each arm is
// reported with what the connection had read then beyond its last write,
// and ticks only when the test sends them.
type fakeTicks struct {
	p       *pingConn
	arms    chan int64 // got - gotThen at each arm
	stopped chan struct{}
	tick    chan time.Time
}

func (f *fakeTicks) newTicker(time.Duration) (<-chan time.Time, func()) {
	f.arms <- f.p.got.Load() - f.p.gotThen.Load()
	return f.tick, func() { f.stopped <- struct{}{} }
}

// TestLifelineTickerOnlyWhileReading: a connection's lifeline ticker runs
// only while a lifeline is possible: it is not armed on an idle
// connection, nor for reads below lifelineMinRead, but on the read that
// brings that much since the last write; once the lifeline went out (or
// gRPC wrote) it stops until the next such read. Before, every connection
// on both ends ticked every 1.25 s for its whole life, idle or not (0.8
// wakeups a second each): the ticker was armed as the connection was made,
// with nothing read.
func TestLifelineTickerOnlyWhileReading(t *testing.T) {
	in, feed := io.Pipe()
	c := &feedConn{in: in}
	p := &pingConn{Conn: c, kick: make(chan struct{}, 1), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	f := &fakeTicks{p: p, arms: make(chan int64, 8), stopped: make(chan struct{}, 8), tick: make(chan time.Time)}
	p.ticker = f.newTicker
	p.wroteAt = p.now()
	settings := frame(6)
	p.Write(settings)
	lifelinesDone := make(chan struct{})
	go func() { defer close(lifelinesDone); p.lifelines() }()
	defer func() {
		p.Close()
		<-lifelinesDone
	}()
	buf := make([]byte, 64<<10)
	read := func(n int) {
		t.Helper()
		go func() { _, _ = feed.Write(make([]byte, n)) }()
		for got := 0; got < n; {
			m, err := p.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got += m
		}
	}
	armed := func(what string) {
		t.Helper()
		select {
		case d := <-f.arms:
			if d < lifelineMinRead {
				t.Fatalf("the lifeline ticker was armed with %d bytes read since the last write, below the %d a lifeline needs (%s)",
					d, lifelineMinRead, what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the lifeline ticker was not armed %s", what)
		}
	}
	tick := func(what string) {
		t.Helper()
		select {
		case f.tick <- time.Time{}:
		case <-time.After(10 * time.Second):
			t.Fatalf("the lifeline ticker stopped early: no tick taken (%s)", what)
		}
	}
	stopped := func(what string) {
		t.Helper()
		select {
		case <-f.stopped:
		case <-time.After(10 * time.Second):
			t.Fatalf("the lifeline ticker did not stop %s", what)
		}
	}

	read(lifelineMinRead / 2) // not enough for a lifeline: still idle
	read(lifelineMinRead / 2)
	armed("after a read made a lifeline possible")
	setWrote := func(at int64) {
		p.mu.Lock()
		p.wroteAt = at
		p.mu.Unlock()
	}
	setWrote(p.now() - int64(lifelineEvery)) // nothing written for lifelineEvery
	tick("the lifeline goes out; nothing more to do")
	stopped("after the lifeline went out")
	if got, want := c.written(), append(bytes.Clone(settings), lifelineFrame[:]...); !bytes.Equal(got, want) {
		t.Fatalf("wrote %q, want SETTINGS and one lifeline", got)
	}

	read(lifelineMinRead) // data again: armed again
	armed("after more data came")
	p.Write(frame(0)) // gRPC answers: no lifeline needed
	tick("after gRPC wrote")
	stopped("after gRPC wrote")
	select {
	case d := <-f.arms:
		t.Fatalf("the lifeline ticker was armed again with nothing read (%d bytes since the last write)", d)
	default:
	}
}

// TestLifelineKeepsTicking: a tick keeps the lifeline ticker going while a
// lifeline is possible but not due (gRPC wrote lately, or stands inside a
// frame, or is writing), and stops it once none is possible without
// another read.
func TestLifelineKeepsTicking(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc}
	p.Write(frame(6))
	if p.lifeline() {
		t.Fatal("nothing read: a tick kept the ticker going")
	}
	p.got.Add(lifelineMinRead)
	if !p.lifeline() {
		t.Fatal("data read, gRPC wrote just now: the ticker stopped before the lifeline was due")
	}
	p.mu.Lock()
	if !p.lifeline() {
		t.Fatal("data read, gRPC is writing: the ticker stopped")
	}
	p.mu.Unlock()
	p.wroteAt = p.now() - int64(lifelineEvery)
	if p.lifeline() {
		t.Fatal("the lifeline went out: the ticker went on")
	}
	if n := rc.out.Len() - 9 - 6; n != len(lifelineFrame) {
		t.Fatalf("wrote %d bytes after SETTINGS, want one lifeline", n)
	}
}
