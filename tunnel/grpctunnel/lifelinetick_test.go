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

// fakeTime is a connection's clock and its lifelines' timer under the
// test's hand: the clock moves only when the test says, the timer fires
// only when the test sends on fire, and each reset (its wait) and each
// stop is reported.
type fakeTime struct {
	mu     sync.Mutex
	now    int64
	fire   chan time.Time
	resets chan time.Duration
	stops  chan struct{}
}

func newFakeTime() *fakeTime {
	return &fakeTime{now: 1, fire: make(chan time.Time), resets: make(chan time.Duration, 8), stops: make(chan struct{}, 8)}
}

func (f *fakeTime) clock() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeTime) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now += int64(d)
}

func (f *fakeTime) timer() lifelineTimer {
	return lifelineTimer{
		c:     f.fire,
		reset: func(d time.Duration) bool { f.resets <- d; return false },
		stop:  func() bool { f.stops <- struct{}{}; return false },
	}
}

// lifelineRig is a connection as newPingConn makes it (without own
// pings), on a fake clock and timer, whose peer the test plays.
type lifelineRig struct {
	t    *testing.T
	c    *feedConn
	p    *pingConn
	f    *fakeTime
	feed *io.PipeWriter
	buf  []byte
}

func newLifelineRig(t *testing.T) *lifelineRig {
	in, feed := io.Pipe()
	c := &feedConn{in: in}
	f := newFakeTime()
	p := &pingConn{Conn: c, kick: make(chan struct{}, 1), done: make(chan struct{}), wake: make(chan struct{}, 1),
		timer: f.timer, clock: f.clock}
	p.wroteAt = p.now()
	p.Write(frame(6)) // SETTINGS
	pingerDone := make(chan struct{})
	go func() { defer close(pingerDone); p.pinger() }()
	t.Cleanup(func() {
		p.Close()
		<-pingerDone
	})
	return &lifelineRig{t: t, c: c, p: p, f: f, feed: feed, buf: make([]byte, 64<<10)}
}

// read has the connection read n bytes from the peer.
func (r *lifelineRig) read(n int) {
	r.t.Helper()
	go func() { _, _ = r.feed.Write(make([]byte, n)) }()
	for got := 0; got < n; {
		m, err := r.p.Read(r.buf)
		if err != nil {
			r.t.Fatal(err)
		}
		got += m
	}
}

// armed waits for the timer's next reset and returns its wait.
func (r *lifelineRig) armed(what string) time.Duration {
	r.t.Helper()
	select {
	case d := <-r.f.resets:
		return d
	case <-r.f.stops:
		r.t.Fatalf("the lifeline timer stopped, want it set (%s)", what)
	case <-time.After(10 * time.Second):
		r.t.Fatalf("the lifeline timer was not set (%s)", what)
	}
	return 0
}

// fire fires the timer.
func (r *lifelineRig) fire(what string) {
	r.t.Helper()
	select {
	case r.f.fire <- time.Time{}:
	case <-time.After(10 * time.Second):
		r.t.Fatalf("the lifeline timer fired but nobody waited for it (%s)", what)
	}
}

// stopped waits for the timer to stop.
func (r *lifelineRig) stopped(what string) {
	r.t.Helper()
	select {
	case <-r.f.stops:
	case d := <-r.f.resets:
		r.t.Fatalf("the lifeline timer was set again (in %v), want it stopped (%s)", d, what)
	case <-time.After(10 * time.Second):
		r.t.Fatalf("the lifeline timer did not stop (%s)", what)
	}
}

// notArmed checks that the last read did not start the timer: a Read
// that starts it marks it running (ticking) before it wakes the pinger.
func (r *lifelineRig) notArmed(what string) {
	r.t.Helper()
	if r.p.ticking.Load() {
		r.t.Fatalf("the lifeline timer was started %s", what)
	}
}

func (r *lifelineRig) lifelines() int { return bytes.Count(r.c.written(), lifelineFrame[:]) }

// TestLifelineTimerOnlyWhileReading: a connection's lifeline timer runs
// only while a lifeline is possible: it is not set on an idle connection,
// nor for reads below lifelineMinRead, but on the read that brings that
// much since the last write; it fires when the lifeline is due, once, and
// once more when the next one could be; when nothing came since, or gRPC
// wrote, it stops until the next such read.
func TestLifelineTimerOnlyWhileReading(t *testing.T) {
	r := newLifelineRig(t)
	r.read(lifelineMinRead / 2) // not enough for a lifeline: still idle
	r.notArmed("after a read below lifelineMinRead")
	r.read(lifelineMinRead / 2)
	if d := r.armed("after a read made a lifeline possible"); d != lifelineEvery {
		t.Fatalf("the first look at the lifeline is in %v, want %v (the last write was just now)", d, lifelineEvery)
	}
	r.f.advance(lifelineEvery)
	r.fire("the lifeline is due")
	if d := r.armed("after the lifeline went out"); d != lifelineEvery {
		t.Fatalf("after a lifeline the next look is in %v, want %v", d, lifelineEvery)
	}
	if n := r.lifelines(); n != 1 {
		t.Fatalf("%d lifelines went out, want 1", n)
	}
	r.f.advance(lifelineEvery)
	r.fire("nothing came since the lifeline")
	r.stopped("nothing came since the lifeline")
	if n := r.lifelines(); n != 1 {
		t.Fatalf("%d lifelines went out with nothing read since the last, want 1", n)
	}

	r.f.advance(10 * time.Second)
	r.read(lifelineMinRead) // data again, long after the last write
	if d := r.armed("after more data came"); d != lifelineEvery/2 {
		t.Fatalf("the first look at a lifeline long overdue is in %v, want %v (gRPC may answer first)", d, lifelineEvery/2)
	}
	r.f.advance(lifelineEvery / 4)
	r.p.Write(frame(0)) // gRPC answers: no lifeline needed
	r.f.advance(lifelineEvery / 4)
	r.fire("after gRPC wrote")
	r.stopped("after gRPC wrote")
	if n := r.lifelines(); n != 1 {
		t.Fatalf("%d lifelines went out, want 1 (gRPC wrote)", n)
	}
}

// TestLifelineWakeupsWhileReceiving counts, on a fake clock, the lifeline
// timer's wakeups over 10 s of a connection that only receives: one per
// lifeline, a lifeline every 0.5 s after the last (within 0.5 to 0.75 s);
// one a connection that reads and writes (a read of 2 KiB every 100 ms,
// answered) sends none, and its timer wakes at most once per
// lifelineEvery. With the ticker of 0.25 s before, a connection that only
// received woke 5.6 times a second (28 wakeups in 5 s for 9 lifelines).
func TestLifelineWakeupsWhileReceiving(t *testing.T) {
	const period = 10 * time.Second
	t.Run("only receives", func(t *testing.T) {
		r := newLifelineRig(t)
		start := r.f.clock()
		r.read(lifelineMinRead) // data comes
		wakeups, lastLifeline, lastWrite := 1, 0, start
		for {
			d := r.armed("while data comes") // set after the lifeline went out, if one did
			if n := r.lifelines(); n != lastLifeline {
				gap := time.Duration(r.f.clock() - lastWrite)
				if n != lastLifeline+1 || gap < lifelineEvery || gap > lifelineEvery*3/2 {
					t.Fatalf("%d lifelines %v after the last write, want 1 after 0.5 to 0.75 s", n-lastLifeline, gap)
				}
				lastLifeline, lastWrite = n, r.f.clock()
			}
			if time.Duration(r.f.clock()+int64(d)-start) > period {
				break
			}
			r.f.advance(d)
			r.read(lifelineMinRead) // data keeps coming, read just before the timer fires
			r.fire("while data comes")
			wakeups++
		}
		t.Logf("%v receiving: %d lifelines, %d wakeups (%.1f a second)", period, lastLifeline, wakeups, float64(wakeups)/period.Seconds())
		if want := int(period / lifelineEvery); lastLifeline < want-1 {
			t.Fatalf("%d lifelines in %v, want %d", lastLifeline, period, want)
		}
		if wakeups > lastLifeline+1 {
			t.Fatalf("%d wakeups for %d lifelines, want one per lifeline (and the first read's)", wakeups, lastLifeline)
		}
	})
	t.Run("reads and writes", func(t *testing.T) {
		r := newLifelineRig(t)
		start := r.f.clock()
		wakeups, deadline := 0, int64(-1) // when the timer fires; -1: not set
		const step = 10 * time.Millisecond
		for i := 0; time.Duration(r.f.clock()-start) < period; i++ {
			switch i % 10 {
			case 0: // 2 KiB read every 100 ms
				idle := !r.p.ticking.Load()
				r.read(2 * lifelineMinRead)
				if idle {
					deadline = r.f.clock() + int64(r.armed("a read made a lifeline possible"))
					wakeups++
				}
			case 5: // and gRPC writes 50 ms after each
				r.p.Write(frame(4))
			}
			if deadline >= 0 && r.f.clock() >= deadline {
				r.fire("the lifeline could be due")
				wakeups++
				select {
				case d := <-r.f.resets:
					deadline = r.f.clock() + int64(d)
				case <-r.f.stops:
					deadline = -1
				case <-time.After(10 * time.Second):
					t.Fatal("the lifeline timer was neither set again nor stopped")
				}
			}
			r.f.advance(step)
		}
		t.Logf("%v reading and writing: %d lifelines, %d wakeups (%.1f a second)", period, r.lifelines(), wakeups, float64(wakeups)/period.Seconds())
		if n := r.lifelines(); n != 0 {
			t.Fatalf("%d lifelines went out while gRPC wrote every 100 ms, want none", n)
		}
		if max := int(period/lifelineEvery) + 2; wakeups > max {
			t.Fatalf("%d wakeups in %v, want at most %d (one per %v)", wakeups, period, max, lifelineEvery)
		}
	})
}

// TestLifelineKeepsTicking: a look at the lifeline keeps the timer going
// while a lifeline is possible but not due (gRPC wrote lately, or stands
// inside a frame, or is writing) or went out (until the next could be
// due), and stops it once none is possible without another read.
func TestLifelineKeepsTicking(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc}
	p.Write(frame(6))
	if _, more := p.lifeline(); more {
		t.Fatal("nothing read: the timer was kept going")
	}
	p.got.Add(lifelineMinRead)
	if d, more := p.lifeline(); !more || d <= 0 || d > lifelineEvery {
		t.Fatalf("data read, gRPC wrote just now: next look in %v (more %v), want when the lifeline is due", d, more)
	}
	p.mu.Lock()
	if _, more := p.lifeline(); !more {
		t.Fatal("data read, gRPC is writing: the timer stopped")
	}
	p.mu.Unlock()
	p.wroteAt = p.now() - int64(lifelineEvery)
	if d, more := p.lifeline(); !more || d != lifelineEvery {
		t.Fatalf("the lifeline went out: next look in %v (more %v), want in %v", d, more, lifelineEvery)
	}
	if n := rc.out.Len() - 9 - 6; n != len(lifelineFrame) {
		t.Fatalf("wrote %d bytes after SETTINGS, want one lifeline", n)
	}
	if _, more := p.lifeline(); more {
		t.Fatal("nothing read since the lifeline: the timer was kept going")
	}
}

// TestLifelineTimerStopsOnSmallChat: once gRPC answered, reads that bring
// less than lifelineMinRead between the timer's looks cannot make a
// lifeline possible before the next look: the timer stops.
func TestLifelineTimerStopsOnSmallChat(t *testing.T) {
	r := newLifelineRig(t)
	r.read(lifelineMinRead) // a large request: the timer starts
	r.armed("after a read made a lifeline possible")
	r.f.advance(lifelineEvery / 8)
	r.p.Write(frame(4)) // gRPC answers
	for i := range 3 {
		r.f.advance(lifelineEvery / 8)
		r.read(100)         // a small request
		r.p.Write(frame(4)) // answered
		r.f.advance(lifelineEvery / 8)
		r.fire("small chat")
		select {
		case d := <-r.f.resets:
			t.Fatalf("look %d: the timer was set again (in %v) though %d bytes came since the last, want it stopped", i, d, 100)
		case <-r.f.stops:
			return
		case <-time.After(10 * time.Second):
			t.Fatal("the lifeline timer was neither set again nor stopped")
		}
	}
}
