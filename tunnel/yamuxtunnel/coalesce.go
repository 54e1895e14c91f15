package yamuxtunnel

import (
	"net"
	"sync"
	"time"
)

// coalescingConn is the connection yamux runs on: it gathers yamux's writes
// and hands them to the TLS connection in as few writes as it can.
//
// Why: yamux's one sending goroutine writes each frame's 12-byte header and
// its body as two separate writes, and waits for each frame to be written
// before it takes the next. On TLS every write is at least one record and
// one system call, so one small exchange cost about four system calls per
// side (open, data header, data body, close). Here Write only copies into a
// bounded buffer and returns; one flusher goroutine writes whatever has
// gathered in one Write to the TLS connection, so everything yamux queued
// while the previous write was in the kernel goes out together.
//
// Bounds and errors: Write waits while maxPending bytes are pending (the
// peer's TCP window is full, so back-pressure reaches yamux as before).
// A larger buffer did not pay: at 256 KiB, two alternated
// `bench --transport yamux --scenarios download,upload` rounds gave
// download 21.6/21.8% of direct against 24.5/23.2% and upload 18.1/17.6%
// against 19.0/18.7%. A larger buffer is also a longer queue in front of
// the socket for whatever yamux writes next (a window update, a new
// stream, another exchange's frames): gRPC's write buffer went back from
// 256 KiB to 32 KiB for that (grpctunnel's writeBuffer). The
// first error of the underlying Write is kept and returned by every later
// Write. Close flushes what is pending for at most closeFlushTimeout, stops
// the flusher and closes the underlying connection; Writes after Close (or
// waiting for room when it is called) return net.ErrClosed.
type coalescingConn struct {
	net.Conn // the TLS connection: Read, addresses and deadlines pass through

	writeMu sync.Mutex // serialises Write calls, so that one Write's bytes stay together

	mu      sync.Mutex
	more    sync.Cond // signalled when bytes were added or the conn closed
	room    sync.Cond // broadcast when pending shrank, on an error and on close
	pending *[]byte   // bytes not yet handed to the flusher (nil: none, and no buffer held); guarded by mu
	err     error     // the first write error, or net.ErrClosed after Close; guarded by mu
	closing bool      // Close was called; guarded by mu

	flushed    chan struct{} // closed when the flusher has returned
	closeFlush time.Duration // how long Close waits for pending bytes (0 → closeFlushTimeout); set before use
}

const (
	// maxPending bounds the bytes that Write accepts before they are written.
	maxPending = 64 << 10
	// closeFlushTimeout bounds how long Close waits for pending bytes to
	// be written; a healthy peer takes them in microseconds.
	closeFlushTimeout = time.Second
)

// pendingPool holds the buffers of all connections: an idle connection
// holds none, a busy one at most two (one filling, one being written).
var pendingPool = sync.Pool{New: func() any { b := make([]byte, 0, maxPending); return &b }}

func (w *coalescingConn) pendingLen() int {
	if w.pending == nil {
		return 0
	}
	return len(*w.pending)
}

// newCoalescingConn wraps c and starts the flusher; Close stops it.
func newCoalescingConn(c net.Conn) *coalescingConn {
	w := &coalescingConn{Conn: c, flushed: make(chan struct{})}
	w.more.L = &w.mu
	w.room.L = &w.mu
	go w.flush()
	return w
}

// Write copies p into the pending buffer, waiting for room when it is full;
// a p larger than the buffer goes in pieces. It returns before the bytes
// are written.
func (w *coalescingConn) Write(p []byte) (int, error) {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for len(p) > 0 {
		for w.err == nil && !w.closing && w.pendingLen() >= maxPending {
			w.room.Wait()
		}
		switch {
		case w.err != nil:
			return n, w.err
		case w.closing:
			return n, net.ErrClosed
		}
		if w.pending == nil {
			w.pending = pendingPool.Get().(*[]byte)
			w.more.Signal()
		}
		k := min(len(p), maxPending-len(*w.pending))
		*w.pending = append(*w.pending, p[:k]...)
		p = p[k:]
		n += k
	}
	return n, nil
}

// flush writes what is pending, in one underlying Write each time, until
// the conn is closed and drained or a write fails.
func (w *coalescingConn) flush() {
	defer close(w.flushed)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for w.pending == nil && !w.closing {
			w.more.Wait()
		}
		if w.pending == nil || w.err != nil {
			return // closed and drained, or Close gave up on the rest
		}
		// Take the buffer: writers start another one meanwhile.
		buf := w.pending
		w.pending = nil
		w.room.Broadcast()
		w.mu.Unlock()
		_, err := w.Conn.Write(*buf)
		*buf = (*buf)[:0]
		pendingPool.Put(buf)
		w.mu.Lock()
		if err != nil {
			if w.err == nil {
				w.err = err
			}
			w.room.Broadcast()
			return
		}
	}
}

// Close writes what is pending (for at most closeFlushTimeout), then closes
// the underlying connection. Writes waiting for room fail at once.
func (w *coalescingConn) Close() error {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return net.ErrClosed
	}
	w.closing = true
	w.more.Signal()
	w.room.Broadcast()
	w.mu.Unlock()

	wait := w.closeFlush
	if wait <= 0 {
		wait = closeFlushTimeout
	}
	timer := time.NewTimer(wait)
	select {
	case <-w.flushed:
	case <-timer.C:
	}
	timer.Stop()
	w.mu.Lock()
	if w.err == nil {
		w.err = net.ErrClosed // the flusher takes no further batch
	}
	w.mu.Unlock()
	// A flusher still writing is stuck on a peer that reads nothing. A TLS
	// connection closed while a Write is in flight closes its socket at
	// once (without close_notify, which could block as well), and that
	// ends the Write.
	err := w.Conn.Close()
	<-w.flushed
	return err
}
