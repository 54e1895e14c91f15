package bench

// Link emulation (--link-rtt, --link-rate). The agent dials a forwarder in
// the harness instead of the gateway (so do the reference paths' forwarder
// A instead of B and stdlib proxy instead of the backend); the forwarder
// dials the gateway and copies each direction through a shaped one-way
// link:
//
//	src ──read──▶ schedule: when does this chunk reach the far end? ──queue──▶ deliver: wait, write ──▶ dst
//
// A chunk leaves when the token bucket (LinkRate, burst linkBurst) allows
// it and never before the chunk ahead of it, and arrives LinkRTT/2 later.
// The queue is bounded, so a full one stops the reads and TCP's own flow
// control pushes back on the sender: memory stays bounded, order is kept,
// and a slow receiver slows the sender as a real link would. When src ends,
// dst's write side is closed once everything before the end was delivered.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

const (
	// linkBurst is the token bucket's size: the bytes that may leave at
	// once after a quiet spell. Chunks are never larger.
	linkBurst = 16 << 10
	// linkQueueMax bounds the bytes queued in one direction of one
	// connection. An unlimited rate over a long delay is capped at
	// linkQueueMax per one-way delay (8 MiB per 10 ms: 800 MiB/s).
	linkQueueMax = 8 << 20
	// linkQueueMin is the queue of a slow, short link.
	linkQueueMin = 256 << 10
)

// linkShape is one direction of an emulated link.
type linkShape struct {
	delay time.Duration // one way
	rate  float64       // bytes per second; 0 → not limited
}

func newLinkShape(rtt time.Duration, bitsPerSecond int64) linkShape {
	return linkShape{delay: rtt / 2, rate: float64(bitsPerSecond) / 8}
}

// queueBytes is the queue bound of one direction: twice what the link
// holds in flight (rate × delay), within [linkQueueMin, linkQueueMax].
func (s linkShape) queueBytes() int {
	if s.rate == 0 {
		return linkQueueMax
	}
	inFlight := 2 * s.rate * s.delay.Seconds()
	return int(min(max(inFlight, linkQueueMin), linkQueueMax))
}

// schedule says when each chunk sent into one direction of a link reaches
// the far end. It is pure arithmetic on the times given, so tests check it
// without a clock. Owned by the reading goroutine.
type schedule struct {
	shape   linkShape
	tokens  float64   // bytes the bucket holds at last; negative: owed
	last    time.Time // when tokens was right
	lastOut time.Time // when the previous chunk left
	started bool
}

// next returns when a chunk of n bytes handed to the link at t arrives.
// Times given must not go backwards.
func (s *schedule) next(t time.Time, n int) time.Time {
	leave := t
	if s.shape.rate > 0 {
		if !s.started {
			s.tokens, s.last, s.started = linkBurst, t, true
		}
		if t.After(s.last) {
			s.tokens = min(linkBurst, s.tokens+s.shape.rate*t.Sub(s.last).Seconds())
			s.last = t
		}
		s.tokens -= float64(n)
		if s.tokens < 0 {
			// The bucket is in debt: the chunk leaves once the rate has
			// paid for it.
			leave = s.last.Add(time.Duration(-s.tokens / s.shape.rate * float64(time.Second)))
		}
	}
	if leave.Before(s.lastOut) {
		leave = s.lastOut
	}
	s.lastOut = leave
	return leave.Add(s.shape.delay)
}

// chunk is bytes in flight on a link.
type chunk struct {
	buf *[]byte
	n   int
	at  time.Time // when it reaches the far end
}

var chunkBufs = sync.Pool{New: func() any { b := make([]byte, linkBurst); return &b }}

// startLink starts a forwarder on 127.0.0.1 that relays every connection
// to target through shaped links, one per direction.
func startLink(target string, shape linkShape) (*forwarder, error) {
	f, err := startForwarder(target, func(dst, src net.Conn) error { return shapedCopy(dst, src, shape) })
	if err != nil {
		return nil, fmt.Errorf("bench: link: %w", err)
	}
	return f, nil
}

// shapedCopy copies src to dst through one shaped direction and passes on
// the end of src as a half-close of dst. A failed write closes both, which
// ends the reads. It returns the first error, nil for a clean end.
func shapedCopy(dst, src net.Conn, shape linkShape) error {
	q := make(chan chunk, max(shape.queueBytes()/linkBurst, 1))
	delivered := make(chan error, 1)
	go func() {
		preciseThread() // the thread ends with this goroutine
		delivered <- deliver(dst, q, func() {
			dst.Close()
			src.Close()
		})
	}()
	sched := schedule{shape: shape}
	var rerr error
	for {
		bp := chunkBufs.Get().(*[]byte)
		n, err := src.Read(*bp)
		if n > 0 {
			q <- chunk{buf: bp, n: n, at: sched.next(time.Now(), n)}
		} else {
			chunkBufs.Put(bp)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				rerr = err
			}
			break
		}
	}
	close(q)
	werr := <-delivered
	if rerr != nil {
		// The read side broke: the far end must not take it for a clean end.
		dst.Close()
		return rerr
	}
	return werr
}

// deliver writes each chunk to dst when it is due, then closes dst's write
// side. After a failed write it calls fail once and drops the rest. A chunk
// with none queued behind it is waited for precisely (see sleepUntil).
func deliver(dst net.Conn, q <-chan chunk, fail func()) error {
	var err error
	for c := range q {
		if err == nil {
			sleepUntil(c.at, len(q) == 0)
			if _, err = dst.Write((*c.buf)[:c.n]); err != nil {
				fail()
			}
		}
		chunkBufs.Put(c.buf)
	}
	if err != nil {
		return err
	}
	return closeWrite(dst)
}

// calibrationPings is how many round trips measureLink times.
const calibrationPings = 15

// measureLink times small round trips through a link of the given shape to
// an echo server, and returns the median: the round trip the emulation
// really gives on this machine now (its sleeps wake a little late), which
// the report shows beside the one asked for.
func measureLink(shape linkShape) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	l, err := startLink(ln.Addr().String(), shape)
	if err != nil {
		return 0, err
	}
	defer l.close()
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		return 0, err
	}
	defer func() {
		c.Close()
		<-echoed
	}()
	_ = c.SetDeadline(time.Now().Add(calibrationPings*(2*shape.delay+time.Second) + time.Second))
	rtts := make([]time.Duration, 0, calibrationPings)
	ping := make([]byte, 64)
	for range calibrationPings {
		t0 := time.Now()
		if _, err := c.Write(ping); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, ping); err != nil {
			return 0, err
		}
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], nil
}
