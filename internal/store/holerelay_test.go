package store

import (
	"net"
	"sync"
	"testing"
)

// holeRelay is a TCP relay between the store and the PostgreSQL test
// server that can turn into a black hole: from hole on, it swallows every
// byte both ways and closes nothing (a firewall that drops packets, a
// server host that vanished), and it refuses nothing either: new
// connections are accepted and then get no answer.
type holeRelay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	holed bool       // guarded by mu
	conns []net.Conn // every accepted and dialled connection; guarded by mu
}

func startHoleRelay(t *testing.T, target string) *holeRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &holeRelay{ln: ln, target: target}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return r
}

func (r *holeRelay) addr() string { return r.ln.Addr().String() }

// hole starts swallowing everything.
func (r *holeRelay) hole() {
	r.mu.Lock()
	r.holed = true
	r.mu.Unlock()
}

func (r *holeRelay) isHoled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holed
}

func (r *holeRelay) track(c net.Conn) {
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.mu.Unlock()
}

func (r *holeRelay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.track(c)
		if r.isHoled() {
			// Accepted, never answered: the dial of a connection
			// through a black hole does not fail either (SYNs dropped
			// make a client wait for its own timeout).
			r.wg.Add(1)
			go r.sink(c)
			continue
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.track(up)
		r.wg.Add(2)
		go r.pipe(up, c)
		go r.pipe(c, up)
	}
}

// sink reads c and drops what it reads.
func (r *holeRelay) sink(c net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// pipe copies src to dst until the relay holes, then swallows src.
func (r *holeRelay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !r.isHoled() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !r.isHoled() {
				dst.Close()
			}
			return
		}
	}
}

func (r *holeRelay) close() {
	r.ln.Close()
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	r.wg.Wait()
}
