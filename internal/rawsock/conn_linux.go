//go:build linux

package rawsock

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// maxRW is the most one read or write asks of the kernel, as in package
// internal/poll (some systems refuse larger counts).
const maxRW = 1 << 30

// Conn is a TCP connection whose Read and Write use ReadFD and WriteFD on
// its socket. Everything else, the deadlines, Close and CloseWrite,
// SyscallConn, ReadFrom and WriteTo (splice, sendfile), is the
// *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The current Read's buffer and result, under rmu (Reads may be
	// called at once, as on any net.Conn; they take turns).
	rmu  sync.Mutex
	rp   []byte
	rn   int
	rerr error
	read func(fd uintptr) bool // c.readFD, made once

	// The same for Write.
	wmu   sync.Mutex
	wp    []byte
	wn    int
	werr  error
	write func(fd uintptr) bool // c.writeFD, made once
}

// Wrap returns c as a Conn when it is a *net.TCPConn, else c itself (and
// always c while the raw calls are off, see Set).
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok || off.Load() {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{TCPConn: tc, rc: rc}
	w.read, w.write = w.readFD, w.writeFD
	return w
}

// Read reads as net.TCPConn's Read does: the same results and errors
// (*net.OpError "read" around an *os.SyscallError, the deadline's
// os.ErrDeadlineExceeded, net.ErrClosed; io.EOF at the end of the stream).
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.read)
	n, rerr := c.rn, c.rerr
	c.rp, c.rerr = nil, nil
	c.rmu.Unlock()
	if err == nil {
		err = rerr
	}
	if err != nil {
		return n, c.opError("read", err)
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// readFD is Read's callback: false asks the poller to wait for data. An
// empty buffer reads nothing (and fails only on a closed connection, in
// RawConn), as package net's Read.
func (c *Conn) readFD(fd uintptr) bool {
	if len(c.rp) == 0 {
		return true
	}
	for {
		n, err := ReadFD(fd, c.rp)
		switch err {
		case nil:
			c.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = os.NewSyscallError("read", err)
			return true
		}
	}
}

// Write writes all of p as net.TCPConn's Write does, waiting in the poller
// while the socket's buffer is full; errors as for Read.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.write)
	n, werr := c.wn, c.werr
	c.wp, c.werr = nil, nil
	c.wmu.Unlock()
	if err == nil {
		err = werr
	}
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// writeFD is Write's callback: false asks the poller to wait for room.
func (c *Conn) writeFD(fd uintptr) bool {
	for c.wn < len(c.wp) {
		q := c.wp[c.wn:]
		if len(q) > maxRW {
			q = q[:maxRW]
		}
		n, err := WriteFD(fd, q)
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			c.werr = os.NewSyscallError("write", err)
			return true
		case n == 0:
			c.werr = io.ErrUnexpectedEOF
			return true
		default:
			c.wn += n
		}
	}
	return true
}

// opError is err as package net reports it for op: RawConn's own errors
// (a deadline, a closed connection) come as a *net.OpError of "raw-read"
// or "raw-write", renamed here.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
