// Package tlsbatch makes a TLS connection write each Write's records to the
// socket in one system call instead of one per record.
//
// Why: crypto/tls cuts a Write into records of at most 16 KiB and writes
// every record to the connection below it on its own, so a 64 KiB write of
// the tunnel (gRPC's write buffer, yamux's batches) cost four system calls,
// and on loopback each one also runs the receiver's TCP stack. A bulk
// transfer spent about a third of each relay process's CPU in write(2).
//
// How: the connection under the TLS connection (Raw) buffers what TLS
// writes to it while a Write of the connection above (Conn) is in progress,
// and Conn writes the buffer to the socket once TLS returns. Writes that TLS
// makes on its own (the handshake, alerts, a key update answered by the
// reader, close_notify) go straight through when no Write is in progress,
// and join the batch when one is; either way they keep TLS's order, because
// TLS serialises its records and Raw serialises the socket writes.
//
// Memory: the batch buffer comes from a pool when a Write starts and goes
// back when it is written, so an idle connection holds none.
package tlsbatch

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
)

// maxPooled is the largest batch buffer kept in the pool; a larger one (a
// Write of more than about maxPooled bytes) is left to the collector.
const maxPooled = 512 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Raw is the connection under a TLS connection. Read and everything but
// Write pass through to the wrapped connection.
type Raw struct {
	net.Conn

	// held counts the Conn.Writes in progress, including the socket write
	// of their batch; while it is above 0, Write appends to batch. Changed
	// under mu, read without it by Conn.Close.
	held atomic.Int32

	mu    sync.Mutex // serialises writes to the socket and guards the fields below
	batch *[]byte    // records waiting for the socket; nil when none (no buffer held)
	err   error      // the first write error, returned by every later write
}

// NewRaw wraps c, the connection a TLS connection is to be made on.
func NewRaw(c net.Conn) *Raw { return &Raw{Conn: c} }

// Write writes p to the socket, or appends it to the batch while a
// Conn.Write is in progress. After a failed write every Write fails with
// the same error: the TLS stream is broken once a record is lost.
func (r *Raw) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	if r.held.Load() > 0 {
		if r.batch == nil {
			r.batch = batchPool.Get().(*[]byte)
		}
		*r.batch = append(*r.batch, p...)
		return len(p), nil
	}
	n, err := r.Conn.Write(p)
	if err != nil {
		r.err = err
	}
	return n, err
}

func (r *Raw) hold() {
	r.mu.Lock()
	r.held.Add(1)
	r.mu.Unlock()
}

// release ends one Conn.Write and, when it was the last in progress,
// writes the batch to the socket.
func (r *Raw) release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.held.Add(-1) // after the socket write: Close must see it in flight
	if r.held.Load() > 1 || r.batch == nil {
		return r.err
	}
	b := r.batch
	r.batch = nil
	if r.err == nil {
		if _, err := r.Conn.Write(*b); err != nil {
			r.err = err
		}
	}
	if cap(*b) <= maxPooled {
		*b = (*b)[:0]
		batchPool.Put(b)
	}
	return r.err
}

// Conn is a connection made on a Raw (a *tls.Conn, or what gRPC's TLS
// credentials return) whose Write reaches the socket in one system call.
type Conn struct {
	net.Conn
	raw *Raw
	tc  *tls.Conn // Conn as a *tls.Conn; nil when it is another kind
}

// Wrap returns c, which must be a connection on r, with batched writes.
func Wrap(c net.Conn, r *Raw) *Conn {
	tc, _ := c.(*tls.Conn)
	return &Conn{Conn: c, raw: r, tc: tc}
}

// Client is tls.Client on a Raw, wrapped.
func Client(c net.Conn, cfg *tls.Config) *Conn {
	r := NewRaw(c)
	return Wrap(tls.Client(r, cfg), r)
}

// Server is tls.Server on a Raw, wrapped.
func Server(c net.Conn, cfg *tls.Config) *Conn {
	r := NewRaw(c)
	return Wrap(tls.Server(r, cfg), r)
}

// Write writes p through the TLS connection; its records reach the socket
// together, in one write, before Write returns.
//
// A Write before the handshake finishes it first, outside the batch: TLS
// would otherwise run it inside the Write, its first flight would wait in
// the batch for the Write to end, and the Write would wait for the peer's
// answer to it for ever.
func (c *Conn) Write(p []byte) (int, error) {
	if c.tc != nil {
		if err := c.tc.Handshake(); err != nil { // an atomic load once done
			return 0, err
		}
	}
	c.raw.hold()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.release(); ferr != nil && err == nil {
		// TLS counted the bytes as written, but they never left.
		return 0, ferr
	}
	return n, err
}

// Close closes the TLS connection, sending close_notify, as tls.Conn.Close
// does. While a Write is in progress it closes the socket at once instead,
// as tls.Conn.Close does during its own Write: such a Close is meant to
// break the Write (a peer that reads nothing), and close_notify would wait
// behind it. (A Write that starts just after this check delays Close by at
// most the 5 s write deadline that tls sets for close_notify.)
func (c *Conn) Close() error {
	if c.raw.held.Load() > 0 {
		err := c.raw.Conn.Close()
		c.Conn.Close() // releases the TLS connection; its socket is closed already
		return err
	}
	return c.Conn.Close()
}

// Abort closes the socket at once, without close_notify: for a connection
// found dead (a keepalive unanswered), where Close would wait up to the 5 s
// write deadline tls sets for close_notify behind a full send buffer,
// delaying the end of the session by as much.
func (c *Conn) Abort() error {
	err := c.raw.Conn.Close()
	c.Conn.Close() // releases the TLS connection; its socket is closed already
	return err
}

// TLS returns the TLS connection, or nil when the wrapped one is not a
// *tls.Conn.
func (c *Conn) TLS() *tls.Conn { return c.tc }

// ConnectionState is the TLS connection's (the zero value when the wrapped
// connection is not a *tls.Conn).
func (c *Conn) ConnectionState() tls.ConnectionState {
	if tc := c.TLS(); tc != nil {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}
