package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sallyport/sallyport/tunnel"
)

// Buffer sizes of an h1Conn: net/http's defaults.
const (
	h1ReadBufferSize  = 4 << 10
	h1WriteBufferSize = 4 << 10
)

// errHeadTooLarge is wrapped by the error of a response whose head (1xx
// heads included) exceeds h1MaxResponseHeaderBytes.
var errHeadTooLarge = fmt.Errorf("backend response head exceeds %d bytes", h1MaxResponseHeaderBytes)

// aLongTimeAgo is a deadline in the past: it makes blocked reads and writes
// of a connection return at once.
var aLongTimeAgo = time.Unix(1, 0)

// h1WriterPool holds the write buffers: a connection needs one only while a
// request is being written, not while it waits for the response or idles.
var h1WriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1WriteBufferSize) }}

// h1WriterReturned, if not nil, is called when a write buffer goes back to
// h1WriterPool (tests).
var h1WriterReturned func()

// putH1Writer gives bw back to h1WriterPool.
func putH1Writer(bw *bufio.Writer) {
	bw.Reset(nil)
	h1WriterPool.Put(bw)
	if h1WriterReturned != nil {
		h1WriterReturned()
	}
}

// h1Conn is one backend connection of an h1Sync, used by one request at a
// time: the request that took it owns every field but idleAt until it puts
// it back into the pool (release) or closes it.
type h1Conn struct {
	t         *h1Sync
	key       h1Key
	conn      net.Conn             // TCP, or TLS over it; set before first use
	br        *bufio.Reader        // reads through c.Read
	state     *tls.ConnectionState // nil for plain http; immutable
	limit     int64                // bytes c.Read may still return
	nread     int64                // bytes c.Read returned in all
	full      bool                 // the last c.Read filled its buffer: more may have been there
	reused    bool                 // taken from the idle pool
	watch     h1Watch              // interrupts the exchange when its context is cancelled
	stopWatch func() bool          // watch.stop, made once per connection
	idleAt    time.Time            // when it was put into the pool; guarded by t.mu

	// Flushing inside a wait for the response (flushAndWait), plain TCP
	// connections only.
	raw       syscall.RawConn    // the TCP connection's; nil over TLS; immutable
	tlsRaw    syscall.RawConn    // the TCP connection's under TLS, for idleCheck only; else nil; immutable
	records   *tlsRecordConn     // the connection under TLS; nil for plain http; immutable
	waitFirst bool               // this exchange flushes with flushAndWait
	checkIdle bool               // the first write looks for bytes the backend sent while idle (idleCheck)
	wrote     bool               // part of the request left before flush (see Write)
	flushW    *bufio.Writer      // the request flushAndWait writes
	flushErr  error              // its write error
	waits     int                // calls of flushWait in this flushAndWait
	flushWait func(uintptr) bool // c.flushThenWait, made once per connection
}

// checkable reports whether c can be looked at for bytes that the backend
// sent while it was idle (idleCheck) before a request is written on it:
// only through the TCP socket's RawConn, where rawWaits. Without that
// check, bytes that a backend sends after a response, in a later write
// (the body of a HEAD or 204 answer, more than a Content-Length), would be
// read as the next request's response: another user's. Such a connection
// (any outside Unix, where Backends leaves every request to net/http's
// Transport, whose idle connections each have a goroutine reading them;
// and one from a Dial that returns no TCP connection) is not used again.
// It still goes back to the pool, so that release's decision stays
// observable to the tests that compare it with net/http's.
func (c *h1Conn) checkable() bool { return c.raw != nil || c.tlsRaw != nil }

// tcpConnOf is the TCP connection of nc when it is a plain one (as
// dialled, or in a bodyConn), nil for anything else.
func tcpConnOf(nc net.Conn) *net.TCPConn {
	switch c := nc.(type) {
	case *net.TCPConn:
		return c
	case bodyConn:
		return c.TCPConn
	}
	return nil
}

// rawConnOf is the RawConn of a plain TCP connection (tcpConnOf), nil for
// anything else: only there does reading the socket read the connection's
// bytes.
func rawConnOf(nc net.Conn) syscall.RawConn {
	tc := tcpConnOf(nc)
	if !rawWaits || tc == nil {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// flush writes the request in bw to the backend.
//
// Fast path (c.waitFirst): the request is written from inside a wait for
// the connection to become readable, so that the response's first read
// happens once bytes are there. The plain way (write, then read) makes a
// read(2) that almost always finds nothing, since the backend has not
// answered yet, before Go's poller parks the reader: one system call of
// three per small exchange in the agent.
//
// Why the write is inside the wait: RawConn.Read forgets any readiness
// the poller saw before it started (it resets it, then calls flushWait),
// and the poller reports readiness only when new bytes arrive (edge
// triggered). Written after the reset, the request's response cannot
// arrive unnoticed. What arrived before the write would be: bytes or an
// end of stream that the backend sent while the connection was idle. So
// on a reused connection the callback first reads without waiting
// (idleCheck): anything there closes the connection unused. That read
// takes the place of the one the plain way makes after writing. A fresh
// connection's first request (a backend that speaks first) takes the
// plain path.
//
// A wait that fails (the deadline that interrupt sets, a closed
// connection) is left to the read that follows, which fails the same way.
//
// flush gives bw back to h1WriterPool once written, before the wait: an
// exchange whose backend answers late (a long poll) does not hold its 4 KiB.
func (c *h1Conn) flush(bw *bufio.Writer) error {
	if !c.waitFirst || c.wrote {
		// Slow path, also when part of the request left already (a head
		// larger than the buffer): the backend may have answered it,
		// unseen by a wait that begins now.
		err := bw.Flush()
		putH1Writer(bw)
		return err
	}
	c.flushW, c.flushErr, c.waits = bw, nil, 0
	_ = c.raw.Read(c.flushWait)
	err, waited := c.flushErr, c.waits > 0
	c.flushW, c.flushErr = nil, nil
	if !waited { // the wait failed before it started: nothing was written
		err = bw.Flush()
		putH1Writer(bw)
	}
	return err
}

// flushThenWait is the callback of flush's RawConn.Read: its first call
// writes the request and asks to wait (false); the next one, once the
// connection is readable, ends the wait (true). A failed write ends it at
// once.
func (c *h1Conn) flushThenWait(fd uintptr) bool {
	c.waits++
	if c.waits > 1 {
		return true
	}
	if c.checkIdle {
		c.checkIdle = false
		if err := idleCheck(fd); err != nil {
			putH1Writer(c.flushW) // nothing written
			c.flushW, c.flushErr = nil, err
			return true
		}
	}
	err := c.flushW.Flush()
	putH1Writer(c.flushW) // the wait may be long
	c.flushW = nil
	if err != nil {
		c.flushErr = err
		return true
	}
	return false
}

// Write writes the request for bw to the connection and records in wrote
// that some of it left before flush. The first write of a request on a
// reused plain TCP connection looks for bytes the backend sent while the
// connection was idle (idleCheck), unless flushThenWait did.
func (c *h1Conn) Write(p []byte) (int, error) {
	if c.checkIdle {
		c.checkIdle = false
		if err := idleCheckRaw(c.raw); err != nil {
			return 0, err
		}
	}
	c.wrote = true
	return c.conn.Write(p)
}

// idleCheckRaw runs idleCheck on the socket of raw.
func idleCheckRaw(raw syscall.RawConn) error {
	var cerr error
	if err := raw.Read(func(fd uintptr) bool { cerr = idleCheck(fd); return true }); err != nil {
		return err
	}
	return cerr
}

// checkIdleTLS looks for what a TLS backend sent while its connection was
// idle, before a request is written on it, as idleCheck does for plain
// TCP: first a record that the TLS connection read already, with the
// response's last one (a read whose deadline has passed returns it, or
// fails at once without a system call), then the start of a record that
// it read but cannot decrypt until the rest arrives (tlsRecordConn), then
// bytes in the socket (idleCheck, where rawWaits). Bytes are
// errUnsolicited; an end of stream or a close_notify is an error too.
// Either way the connection is not used. Records that only finish the
// handshake (session tickets) are taken by the TLS connection itself and
// are no error.
func (c *h1Conn) checkIdleTLS() error {
	_ = c.conn.SetReadDeadline(aLongTimeAgo)
	_, err := c.br.Peek(1)
	_ = c.conn.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
		return errUnsolicited
	case !errors.Is(err, os.ErrDeadlineExceeded):
		return err
	case c.records != nil && c.records.midRecord():
		return errUnsolicited
	case c.tlsRaw == nil:
		return nil
	}
	return idleCheckRaw(c.tlsRaw)
}

// tlsRecordConn is the connection under an h1Conn's TLS connection: it
// follows the TLS record framing of what the TLS connection reads, so that
// checkIdleTLS sees the start of a record that came with a response's last
// one. The TLS connection reads what the socket holds, beyond the record it
// needs; a record that is only partly there stays in its buffer, out of
// sight of both the read buffer and the socket. A backend's response that
// nobody asked for, in a record of its own that spans TCP segments (say the
// body of a HEAD answer sent as a second write), would otherwise pass the
// check when its rest is still on the way, and answer the next request.
// Used by the goroutine that owns the h1Conn only.
type tlsRecordConn struct {
	net.Conn
	hdr   int  // bytes of the current record's 5-byte header read so far
	lenHi byte // the high byte of its length
	left  int  // bytes of the current record's payload still to come
}

func (c *tlsRecordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.track(p[:n])
	return n, err
}

// track follows the record framing through b, the next bytes read: a
// header of type (1 byte), version (2) and payload length (2), then the
// payload.
func (c *tlsRecordConn) track(b []byte) {
	for len(b) > 0 {
		if c.left > 0 {
			k := min(c.left, len(b))
			c.left -= k
			b = b[k:]
			continue
		}
		switch c.hdr {
		case 3:
			c.lenHi = b[0]
		case 4:
			c.left = int(c.lenHi)<<8 | int(b[0])
		}
		c.hdr = (c.hdr + 1) % 5
		b = b[1:]
	}
}

// midRecord reports that the bytes read so far end inside a record.
func (c *tlsRecordConn) midRecord() bool { return c.hdr != 0 || c.left != 0 }

// errUnsolicited: the backend sent bytes on an idle connection, which no
// request asked for (a body longer than its Content-Length, written late).
// Read as the next request's response they would answer it with what the
// previous one was sent: the connection is closed unused instead, and the
// request goes out on a new one.
var errUnsolicited = errors.New("the backend sent bytes on an idle connection that no request asked for (a response longer than its Content-Length?); the connection was closed")

// Read reads from the connection for br, no more than limit bytes: the
// bound on a response head.
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.conn.Read(p)
	c.limit -= int64(n)
	c.nread += int64(n)
	c.full = n == len(p)
	return n, err
}

// interrupt makes a blocked read or write return; the connection cannot be
// used afterwards.
func (c *h1Conn) interrupt() { _ = c.conn.SetDeadline(aLongTimeAgo) }

func (c *h1Conn) close() { _ = c.conn.Close() }

// handshake runs the TLS client handshake, bounded by timeout and ctx, and
// makes the TLS connection c's.
func (c *h1Conn) handshake(ctx context.Context, cfg *tls.Config, timeout time.Duration) error {
	tc := tls.Client(c.conn, cfg)
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		var ne net.Error
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("tls handshake with backend %s: %w", c.key.addr, context.Cause(ctx))
		case errors.As(err, &ne) && ne.Timeout():
			return fmt.Errorf("tls handshake with backend %s timed out after %v: %w", c.key.addr, timeout, err)
		}
		return fmt.Errorf("tls handshake with backend %s: %w", c.key.addr, err)
	}
	_ = c.conn.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.state, c.conn = &st, tc
	return nil
}

// roundTrip writes req and reads the response head. 1xx heads but 101 go
// to the gateway when its exchange relays them (tunnel.RelayInformational)
// and are skipped. A response with a body gets an h1Body that releases c at its
// end; one without gives c back at once. On error c is closed, and
// nothingBack reports that no byte of a response had arrived (what a
// connection the backend closed while it was idle looks like).
func (c *h1Conn) roundTrip(ctx context.Context, req *http.Request) (res *http.Response, nothingBack bool, err error) {
	c.watch.start(ctx)
	stop := c.stopWatch
	bw := h1WriterPool.Get().(*bufio.Writer)
	bw.Reset(c)
	c.wrote = false
	if !writeRequest(bw, req) {
		err = req.Write(bw) // slow path: what writeRequest leaves to net/http
	}
	if err == nil {
		err = c.flush(bw) // gives bw back
	} else {
		putH1Writer(bw)
	}
	if err != nil {
		return nil, true, c.fail(ctx, stop, "write backend request", err)
	}

	c.limit = h1MaxResponseHeaderBytes
	start := c.nread
	if res, ok := c.readResponseFast(req); ok {
		c.limit = math.MaxInt64
		keep := !req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")
		if res.Body == http.NoBody {
			c.release(stop, keep)
			return res, false, nil
		}
		b := res.Body.(*h1Body)
		b.stop, b.keep = stop, keep
		return res, false, nil
	}
	for {
		res, err = http.ReadResponse(c.br, req)
		if err != nil {
			if c.limit <= 0 {
				err = errHeadTooLarge
			}
			return nil, c.nread == start, c.fail(ctx, stop, "read backend response", err)
		}
		if res.StatusCode < 100 || res.StatusCode > 199 {
			break
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			return nil, false, c.fail(ctx, stop, "read backend response", errors.New("the backend switched protocols, but the request asked for no upgrade"))
		}
		// An informational head (103 Early Hints, ...): relayed when the
		// gateway asked for it, then skipped; it counts toward the head
		// limit too.
		if err := tunnel.RelayInformational(ctx, res.StatusCode, res.Header); err != nil {
			return nil, false, c.fail(ctx, stop, "relay informational response", err)
		}
	}
	c.limit = math.MaxInt64
	res.TLS = c.state
	// No connection is kept after an HTTP/1.0 response, keep-alive or
	// not: one that names a Transfer-Encoding has faulty framing and its
	// connection must be closed (RFC 9112 §6.1), but ReadResponse drops
	// that field and reads such a response by its Content-Length, leaving
	// the rest of a chunked body to answer the next request. (nginx keeps
	// no HTTP/1.0 backend connection either.)
	keep := !res.Close && res.ProtoAtLeast(1, 1) && !req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")
	if res.Body == http.NoBody {
		c.release(stop, keep)
		return res, false, nil
	}
	b := &h1Body{rc: res.Body, br: c.br, left: res.ContentLength, ctx: ctx, stop: stop, keep: keep}
	b.c.Store(c)
	res.Body = b
	return res, false, nil
}

// readResponseFast reads the response head when peekHead takes it (a
// GET's final response with a Content-Length, the head wholly received);
// false leaves the connection's bytes untouched for http.ReadResponse. The
// body, if any, is an h1Body whose stop and keep the caller sets.
func (c *h1Conn) readResponseFast(req *http.Request) (*http.Response, bool) {
	if req.Method == http.MethodHead {
		return nil, false
	}
	if _, err := c.br.Peek(1); err != nil {
		return nil, false // ReadResponse reports it
	}
	h, ok := peekHead(c.br)
	if !ok {
		return nil, false
	}
	_, _ = c.br.Discard(h.size) // buffered: cannot fail
	// The response and its body in one allocation.
	rb := new(h1Response)
	res := &rb.res
	*res = http.Response{
		Status: h.status, StatusCode: h.code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h.header, ContentLength: h.length, Body: http.NoBody,
		Request: req, TLS: c.state,
	}
	if h.length > 0 {
		b := &rb.body
		b.ctx = req.Context()
		b.br, b.left = c.br, h.length
		b.lb = lengthBody{br: c.br, left: h.length}
		b.rc = &b.lb
		b.c.Store(c)
		res.Body = b
	}
	return res, true
}

// h1Response is a response that readResponseFast read, with its body.
type h1Response struct {
	res  http.Response
	body h1Body
}

// fail closes c after a failed write or read and returns the error to
// report: the context's cause when the exchange was cancelled (the failure
// then is the deadline interrupt set), else err.
func (c *h1Conn) fail(ctx context.Context, stop func() bool, op string, err error) error {
	stop()
	c.close()
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// release ends c's exchange: back into the pool when keep says the
// connection may carry another request, the cancellation did not fire and
// the backend sent nothing more, else closed.
//
// Nothing more in br is not enough when the response ended exactly where
// a read that filled its buffer did: the rest of that write may be waiting
// in the socket or, over TLS, in the connection's record. Plain TCP and
// TLS connections are checked for it before their next request (idleCheck,
// checkIdleTLS); any other one (without a RawConn) is closed here then.
// Kept, such a connection is closed as it leaves the pool (checkable).
func (c *h1Conn) release(stop func() bool, keep bool) {
	if !stop() || !keep || c.br.Buffered() != 0 || c.full && c.raw == nil && c.state == nil {
		c.close()
		return
	}
	c.t.putIdle(c)
}

// h1Body is a response body of an h1Sync connection. Read to EOF, it gives
// the connection back to the pool; closed before, it closes it (the rest of
// the body is not read). Close may be called while a Read is blocked.
type h1Body struct {
	rc     io.ReadCloser // the body http.ReadResponse made, or &lb; never closed (its Close drains)
	lb     lengthBody    // the body of a head that readResponseFast read
	br     *bufio.Reader // the connection's reader, under rc
	left   int64         // bytes of the body still to come; -1 when not declared
	ctx    context.Context
	stop   func() bool // stops the exchange's cancellation
	keep   bool        // the connection may carry another request
	c      atomic.Pointer[h1Conn]
	closed atomic.Bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.left >= 0 {
		p = endThroughBuffer(b.br, p, b.left)
	}
	n, err := b.rc.Read(p)
	if b.left >= 0 {
		b.left -= int64(n)
	}
	switch {
	case err == nil:
	case err == io.EOF:
		if c := b.c.Swap(nil); c != nil {
			c.release(b.stop, b.keep)
		}
	default:
		if c := b.c.Swap(nil); c != nil {
			b.stop()
			c.close()
		}
		if b.ctx.Err() != nil {
			err = fmt.Errorf("read backend response body: %w", context.Cause(b.ctx))
		}
	}
	return n, err
}

// endThroughBuffer shortens p, a read of a body with left bytes to come,
// so that the read that ends the body fills br's buffer rather than reading
// the connection into p directly (bufio does that for a p as large as its
// buffer when the buffer is empty). A fill reads what the backend sent
// beyond the body too, and release sees it in br and closes the
// connection. Read directly, that surplus would stay in the socket and
// answer the next request on the pooled connection: a backend that sends
// more than its Content-Length would let one user's response body become
// another user's response. The cost is at most one more read per body
// larger than the buffer. Bytes that the backend sends in a later write
// still reach the next request, as they do with net/http once a request is
// in flight.
func endThroughBuffer(br *bufio.Reader, p []byte, left int64) []byte {
	size := int64(br.Size())
	if br.Buffered() == 0 && left >= size && int64(len(p)) >= left {
		return p[:left-size+1]
	}
	return p
}

func (b *h1Body) Close() error {
	b.closed.Store(true)
	if c := b.c.Swap(nil); c != nil {
		b.stop()
		c.close()
	}
	return nil
}
