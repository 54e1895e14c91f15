package gateway

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// limitListener accepts at most cap(sem) connections at once: the public
// listener's, so that clients cannot take every file descriptor of the
// process. At the open-file limit every listener fails to accept (the
// tunnel's agents and the admin API's health checks too) and net/http
// retries in a loop; with the limit, clients beyond it wait in the kernel's
// backlog until a connection closes, and the rest of the gateway goes on.
type limitListener struct {
	net.Listener
	sem    chan struct{}
	done   chan struct{} // closed by Close: Accept stops waiting
	once   sync.Once
	log    *zap.Logger
	warned atomic.Int64 // UnixNano of the last "full" line
}

// limitFullLogEvery spaces the lines that say the limit was reached.
const limitFullLogEvery = time.Minute

func newLimitListener(l net.Listener, n int, log *zap.Logger) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{}), log: log}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	default:
		l.full()
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	lc := &limitConn{Conn: c}
	lc.release = func() { <-l.sem }
	return lc, nil
}

// full logs, at most once per limitFullLogEvery, that new clients wait.
func (l *limitListener) full() {
	now := time.Now().UnixNano()
	last := l.warned.Load()
	if now-last < int64(limitFullLogEvery) || !l.warned.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("public listener: public.max_connections connections are open; new clients wait until one closes. "+
		"Raise public.max_connections (and the open-file limit, LimitNOFILE or ulimit -n) if this is normal load",
		zap.Int("max_connections", cap(l.sem)))
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back when it is closed (once).
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite passes on to the connection: net/http half-closes a
// connection it ends after a response whose request body it did not read,
// so that the client gets the response rather than a reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
