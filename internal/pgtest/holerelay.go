package pgtest

import (
	"net"
	"sync"
	"testing"
)

// HoleRelay is a TCP relay between a test's client and the PostgreSQL
// test server that can turn into a black hole: from Hole on, it swallows
// every byte both ways and closes nothing (a firewall that drops packets,
// a server host that vanished), and it refuses nothing either: new
// connections are accepted and then get no answer. Use it with Via.
type HoleRelay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	holed bool       // guarded by mu
	conns []net.Conn // every accepted and dialled connection; guarded by mu
}

// StartHoleRelay starts a relay to target (host:port, the server Via
// returns) on 127.0.0.1, closed when t ends.
func StartHoleRelay(t testing.TB, target string) *HoleRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &HoleRelay{ln: ln, target: target}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.Close)
	return r
}

// Addr is the relay's address, for Via.
func (r *HoleRelay) Addr() string { return r.ln.Addr().String() }

// Hole starts swallowing everything.
func (r *HoleRelay) Hole() {
	r.mu.Lock()
	r.holed = true
	r.mu.Unlock()
}

// Mend ends the black hole as a network coming back would find it: the
// connections made before are gone (closed), new ones reach the server.
func (r *HoleRelay) Mend() {
	r.mu.Lock()
	r.holed = false
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (r *HoleRelay) isHoled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holed
}

func (r *HoleRelay) track(c net.Conn) {
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.mu.Unlock()
}

func (r *HoleRelay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.track(c)
		if r.isHoled() {
			// Accepted, never answered: the dial of a connection
			// through a black hole does not fail either.
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
func (r *HoleRelay) sink(c net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// pipe copies src to dst until the relay holes, then swallows src.
func (r *HoleRelay) pipe(dst, src net.Conn) {
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

// Close stops the relay: its listener and every connection close, as when
// the server is gone (new connections are refused).
func (r *HoleRelay) Close() {
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
