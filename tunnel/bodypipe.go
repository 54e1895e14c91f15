package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// bodyPipe carries request body bytes from the read loop to the backend
// client, one frame's data at a time. Its small queue plus the transport's
// flow control is the backpressure: when the backend stops reading, the read
// loop stops receiving and the gateway's sends block.
//
// The transport may reuse a frame's memory once the read loop calls Recv
// again (see Stream), so the queue holds the transport's memory itself only
// when the stream hands it over (DataReceiver, DataKeeper: the gRPC
// transport); otherwise a copy in a bufPool buffer, far cheaper than fresh
// memory for every frame.
//
// Every chunk is freed exactly once, by whoever holds it: a chunk in the
// queue by whoever takes it out (the reader, or Close or discard dropping
// it); cur by the reader while it reads, and otherwise under mu by the end
// that comes first while no one reads (the consumer's Close, the read
// loop's discard at the exchange's end) or, when a read is under way then,
// by that read as it returns. The backend's client may read and close the
// body after its RoundTrip returned, and close it while another of its
// goroutines reads (Go's HTTP/2 transport does).
type bodyPipe struct {
	ctx       context.Context
	keep      DataKeeper // the stream, when it hands over received data; nil → copies
	ch        chan chunk // closed by the read loop at the request's end
	trailers  []*tunnelv1.Header
	closed    chan struct{} // closed when the consumer is gone
	closeOnce sync.Once
	ended     bool          // owned by the read loop
	req       *http.Request // backend request whose declared trailers get filled; owned by the reader
	gate      *goAhead      // asked before the first read, then nil; set before the reader starts, then owned by it

	// stall cuts the exchange when the consumer has taken nothing from a
	// full queue for stallAfter (see send); nil → never. Set before the
	// read loop pushes; stallTimer is the read loop's.
	stall      context.CancelCauseFunc
	stallAfter time.Duration
	stallTimer *time.Timer
	// taken counts the bytes the consumer took (Read, WriteBodyTo), so
	// that send sees a backend that reads the chunk it holds slowly as
	// moving, not stopped.
	taken atomic.Int64

	// cur is the chunk being read: owned by the reader while reading is
	// set, guarded by mu otherwise.
	cur     chunk
	mu      sync.Mutex
	reading bool // a Read or WriteBodyTo is under way; guarded by mu
	over    bool // closed by the consumer or discarded by the read loop: cur is freed once no one reads it; guarded by mu
	shut    bool // closed by the consumer: reads fail; guarded by mu
	dropped bool // unread bytes were freed: reads fail; guarded by mu
}

// errReqBodyClosed is the read error of a request body that its consumer
// closed.
var errReqBodyClosed = errors.New("read of a request body after it was closed")

// errBodyDropped is the read error of a request body whose unread bytes
// were given back because its exchange ended: the body is incomplete.
var errBodyDropped = errors.New("the request body is incomplete: its exchange ended before the backend's client read all of it")

func newBodyPipe(ctx context.Context, st Stream, first []byte) *bodyPipe {
	p := &bodyPipe{ctx: ctx, ch: make(chan chunk, 4), closed: make(chan struct{})}
	p.keep, _ = st.(DataKeeper)
	if len(first) > 0 {
		p.cur = p.take(first)
	}
	return p
}

// take returns data, which the frame Recv returned last carries, as a
// chunk the pipe may keep: the frame's memory when the stream hands it
// over, a copy otherwise.
func (p *bodyPipe) take(data []byte) chunk {
	if p.keep != nil {
		if buf, release, ok := p.keep.KeepData(); ok {
			return chunk{data: data, buf: buf, release: release}
		}
	}
	bp := copyData(data)
	return chunk{data: *bp, buf: bp, release: releaseChunk}
}

// copyData copies data into a bufPool buffer, or into fresh memory when it
// is larger than ChunkSize (a peer may send frames up to MaxFrameSize).
func copyData(data []byte) *[]byte {
	if len(data) > ChunkSize {
		b := append([]byte(nil), data...)
		return &b
	}
	bp := bufPool.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	return bp
}

// push hands data to the consumer; it drops it when the consumer is gone.
func (p *bodyPipe) push(data []byte) {
	if p.ended {
		return
	}
	p.send(p.take(data))
}

// send queues c for the consumer, or frees it when the consumer is gone.
func (p *bodyPipe) send(c chunk) {
	if p.ended {
		c.free()
		return
	}
	select {
	case p.ch <- c:
		return
	default:
	}
	// The queue is full: the backend is slower than the tunnel, or stopped
	// reading. The read loop waits here and cannot see the gateway give up
	// on the exchange meanwhile (its reset is behind this wait), so a
	// backend that takes nothing for stallAfter does not hold the exchange,
	// its connection and the queued chunks for as long as it likes.
	var stalled <-chan time.Time
	var seen int64
	if p.stall != nil {
		if p.stallTimer == nil {
			p.stallTimer = time.NewTimer(p.stallAfter)
		} else {
			p.stallTimer.Reset(p.stallAfter)
		}
		defer p.stallTimer.Stop()
		stalled = p.stallTimer.C
		seen = p.taken.Load()
	}
	for {
		select {
		case p.ch <- c:
		case <-p.closed:
			p.drop(c)
		case <-p.ctx.Done():
			p.drop(c)
		case <-stalled:
			select {
			case <-p.closed:
				// The consumer closed the body as the limit came (a
				// backend that answered early): not a stall.
				p.drop(c)
				return
			default:
			}
			if n := p.taken.Load(); n != seen {
				// It took part of the chunk it holds: slow, not stopped.
				seen = n
				p.stallTimer.Reset(p.stallAfter)
				continue
			}
			p.drop(c)
			p.stall(&BodyStallError{After: p.stallAfter})
		}
		return
	}
}

// BodyStallError is the cause of an exchange that the agent cut because the
// backend took none of the request body (or upgraded bytes) queued for it
// for After (Server.BodyStallTimeout).
type BodyStallError struct{ After time.Duration }

func (e *BodyStallError) Error() string {
	return fmt.Sprintf("the backend read none of the request body for %s", e.After)
}

// drop frees c, which the consumer will never get: its reads fail from
// then on (errBodyDropped), rather than end a body cut short (the end
// frame may still come and close the queue).
func (p *bodyPipe) drop(c chunk) {
	p.mu.Lock()
	if !c.empty() {
		p.dropped = true
	}
	p.mu.Unlock()
	c.free()
}

// end marks the end of the body; trailers are applied by the consumer.
func (p *bodyPipe) end(trailers []*tunnelv1.Header) {
	if p.ended {
		return
	}
	p.ended = true
	p.trailers = trailers
	close(p.ch)
}

// next makes p.cur a chunk with unread bytes, freeing the one read to its
// end; at the body's end it applies the trailers and returns io.EOF.
func (p *bodyPipe) next() error {
	if p.gate != nil {
		// Slow path: the first read of a body that the gateway holds back.
		if err := p.gate.ask(); err != nil {
			return err
		}
		p.gate = nil
	}
	for p.cur.empty() {
		p.cur.free()
		select {
		case c, ok := <-p.ch:
			if !ok {
				if p.isDropped() {
					// Close or discard took the last chunks while this
					// read waited.
					return errBodyDropped
				}
				p.applyTrailers()
				return io.EOF
			}
			p.cur = c
		case <-p.ctx.Done():
			return context.Cause(p.ctx)
		case <-p.closed:
			// Closed by another goroutine of the consumer while this one
			// waited.
			return errReqBodyClosed
		}
	}
	return nil
}

func (p *bodyPipe) Read(b []byte) (int, error) {
	if err := p.startRead(); err != nil {
		return 0, err
	}
	defer p.endRead()
	if err := p.next(); err != nil {
		return 0, err
	}
	n := p.cur.read(b)
	p.taken.Add(int64(n))
	return n, nil
}

// startRead makes the caller the owner of cur until endRead, unless reads
// fail now.
func (p *bodyPipe) startRead() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.shut:
		return errReqBodyClosed
	case p.dropped:
		return errBodyDropped
	}
	p.reading = true
	return nil
}

// endRead gives cur back, and frees it when the pipe is over: neither
// Close nor discard could while the read was under way.
func (p *bodyPipe) endRead() {
	p.mu.Lock()
	p.reading = false
	if p.over {
		p.dropCur()
	}
	p.mu.Unlock()
}

// dropCur frees cur; with mu held, while no one reads.
func (p *bodyPipe) dropCur() {
	if !p.cur.empty() {
		p.dropped = true
	}
	p.cur.free()
}

// dropQueued frees the queued chunks, without waiting for more; with mu
// held.
func (p *bodyPipe) dropQueued() {
	for {
		select {
		case c, ok := <-p.ch:
			if !ok {
				return
			}
			if !c.empty() {
				p.dropped = true
			}
			c.free()
		default:
			return
		}
	}
}

// isDropped reports whether unread bytes were freed.
func (p *bodyPipe) isDropped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// WriteBodyTo writes the next bytes of the body, at most max of them, to
// w straight from the memory they arrived in, without copying them into a
// reader's buffer first: the chunks that are ready go to w in one
// net.Buffers write (one writev(2) on a TCP connection), and it waits for
// more until max bytes are written or the body ends. It returns the bytes
// written; the body's end is not an error. The agent's backend
// connections call it for a request body of known length, which net/http
// copies 32 KiB at a time otherwise.
func (p *bodyPipe) WriteBodyTo(w io.Writer, max int64) (int64, error) {
	if err := p.startRead(); err != nil {
		return 0, err
	}
	defer p.endRead()
	var written int64
	var iov net.Buffers // reused for every write
	var used []chunk    // chunks whose bytes are all in iov; freed once written
	for written < max {
		if err := p.next(); err != nil {
			if err == io.EOF {
				return written, nil
			}
			return written, err
		}
		iov, used = iov[:0], used[:0]
		n := p.cur.take(max-written, &iov)
		for p.cur.empty() && written+n < max {
			// The current chunk is all in iov: add the chunks that are
			// ready, without waiting for more.
			used = append(used, p.cur)
			p.cur = chunk{}
			c, ok := p.ready()
			if !ok {
				break
			}
			p.cur = c
			n += p.cur.take(max-written-n, &iov)
		}
		bufs := iov // WriteTo consumes its slice
		m, err := bufs.WriteTo(w)
		written += m
		p.taken.Add(m)
		for i := range used {
			used[i].free()
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// discard gives back the chunks queued and the one being read, at the
// exchange's end, from the read loop (see awaitDone), which sends no more.
// When that drops bytes the backend's client did not read, its reads fail
// from then on (errBodyDropped), rather than end a body cut short. The
// chunk being read, if a read is under way, goes back when that read
// returns.
func (p *bodyPipe) discard() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.over = true
	if !p.reading {
		p.dropCur()
	}
	p.dropQueued()
}

// ready returns the next queued chunk when one is there already.
func (p *bodyPipe) ready() (chunk, bool) {
	select {
	case c, ok := <-p.ch:
		return c, ok
	default:
		return chunk{}, false
	}
}

// applyTrailers fills the trailers the request declared, in the consumer's
// goroutine, which is the one that sends them after the body (the read loop
// wrote p.trailers before it closed p.ch).
func (p *bodyPipe) applyTrailers() {
	if p.req == nil || len(p.trailers) == 0 || len(p.req.Trailer) == 0 {
		return
	}
	t, err := headersFromWire(p.trailers, "request trailers")
	if err != nil {
		return
	}
	for k, vv := range t {
		if _, declared := p.req.Trailer[k]; declared {
			p.req.Trailer[k] = vv
		}
	}
	p.trailers = nil
}

// Close tells the read loop that the consumer is gone, and gives back the
// chunks received so far (the one being read when a read is under way in
// another goroutine once that read returns); the read loop frees what
// arrives later (send), and what it queued meanwhile at the exchange's end
// (discard).
func (p *bodyPipe) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	p.mu.Lock()
	defer p.mu.Unlock()
	p.over, p.shut = true, true
	if !p.reading {
		p.dropCur()
	}
	p.dropQueued()
	return nil
}
