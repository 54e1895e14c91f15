package bench

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// forwardDialTimeout bounds a forwarder's dial of its target.
const forwardDialTimeout = 5 * time.Second

// forwarder accepts on a loopback port and passes every connection on to
// target over a connection of its own, running copy once per direction.
// The link emulation is one (each direction shaped); the tcp-forward
// reference path chains two that copy plainly, and the tls-forward path two
// with TLS between them (wrapIn on B, wrapOut on A).
type forwarder struct {
	ln     net.Listener
	target string
	// copy moves one direction, src to dst, until src ends, and passes the
	// end on as a half-close of dst; after a failure it closes both.
	copy func(dst, src net.Conn) error
	// wrapIn and wrapOut, when set, wrap the accepted and the dialled
	// connection (TLS server and client).
	wrapIn, wrapOut func(net.Conn) net.Conn

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections, both sides; guarded by mu; nil once closed
}

// startForwarder starts a forwarder to target on 127.0.0.1.
func startForwarder(target string, copy func(dst, src net.Conn) error) (*forwarder, error) {
	return (&forwarder{target: target, copy: copy}).start()
}

// start listens on 127.0.0.1 and serves until close.
func (f *forwarder) start() (*forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.ln, f.conns = ln, make(map[net.Conn]struct{})
	f.wg.Go(f.serve)
	return f, nil
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) serve() {
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		f.wg.Go(func() { f.handle(in) })
	}
}

// track remembers c for close; false when the forwarder is closing.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
}

// handle relays one connection until both directions end.
func (f *forwarder) handle(in net.Conn) {
	defer in.Close()
	if !f.track(in) {
		return
	}
	defer f.untrack(in)
	ctx, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	out, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.target)
	cancel()
	if err != nil {
		return // the client sees its connection close (the agent dials again)
	}
	defer out.Close()
	if !f.track(out) {
		return
	}
	defer f.untrack(out)
	if f.wrapIn != nil {
		in = f.wrapIn(in)
	}
	if f.wrapOut != nil {
		out = f.wrapOut(out)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = f.copy(out, in) })
	wg.Go(func() { _ = f.copy(in, out) })
	wg.Wait()
}

// close stops accepting, cuts every connection and waits for the copies.
func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
}

// plainCopy copies src to dst as it comes (io.Copy: splice between TCP
// connections on Linux) and passes the end of src on as a half-close of
// dst. A failed read or write closes both, which ends the other direction.
func plainCopy(dst, src net.Conn) error {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return err
	}
	return closeWrite(dst)
}

// closeWrite half-closes c where it can, and closes it where it cannot. A
// TLS connection (tlsbatch's wraps one) sends close_notify and can still
// read.
func closeWrite(c net.Conn) error {
	if t, ok := c.(interface{ TLS() *tls.Conn }); ok && t.TLS() != nil {
		return t.TLS().CloseWrite()
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
