package e2e

import (
	"net"
	"sync"
	"testing"

	"github.com/sallyport/sallyport/internal/testrig"
)

// udpRelay forwards UDP datagrams (QUIC) from each client address to
// target and back, until cut drops every datagram of the mappings that
// exist then, as a dead network path would. Clients that start later (a
// reconnect opens a new socket) are forwarded normally.
type udpRelay struct {
	ln *net.UDPConn
	wg sync.WaitGroup
	// tcp forwards TCP on the same port number to the gateway, for what
	// the agent does over TCP (enrollment); cut does not touch it.
	tcp *tcpRelay

	mu     sync.Mutex
	target *net.UDPAddr // guarded by mu
	// pick, when set, chooses the target of each new client socket
	// instead (a load balancer's policy); guarded by mu.
	pick  func() string
	peers map[string]*udpPeer // by client address; guarded by mu
}

// retarget forwards the clients that start from now on (a new session
// opens a new socket) to target, UDP and TCP, as a load balancer that took
// a replica out would.
func (r *udpRelay) retarget(target string) {
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		panic(err) // the tests pass 127.0.0.1:port
	}
	r.mu.Lock()
	r.target = taddr
	r.mu.Unlock()
	r.tcp.retarget(target)
}

// setPick makes pick choose the target of each client socket that starts
// from now on (TCP stays with the target: enrollment).
func (r *udpRelay) setPick(pick func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pick = pick
}

type udpPeer struct {
	up  *net.UDPConn
	cut chan struct{} // closed when the path is cut
}

func startUDPRelay(t testing.TB, target string) *udpRelay {
	t.Helper()
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	var ln *net.UDPConn
	var tcp net.Listener
	for range 20 {
		if tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		port := tcp.Addr().(*net.TCPAddr).Port
		if ln, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err == nil {
			break
		}
		tcp.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{ln: ln, target: taddr, peers: make(map[string]*udpPeer)}
	r.tcp = &tcpRelay{ln: tcp, target: target}
	r.tcp.wg.Add(1)
	go r.tcp.serve()
	t.Cleanup(r.tcp.Kill)
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return r
}

func (r *udpRelay) Addr() string { return r.ln.LocalAddr().String() }

func (r *udpRelay) serve() {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p := r.peer(from)
		if p == nil {
			continue
		}
		select {
		case <-p.cut:
		default:
			_, _ = p.up.Write(buf[:n])
		}
	}
}

// peer returns the mapping of client from, creating it on first use.
func (r *udpRelay) peer(from *net.UDPAddr) *udpPeer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.peers[from.String()]; p != nil {
		return p
	}
	target := r.target
	if r.pick != nil {
		var err error
		if target, err = net.ResolveUDPAddr("udp", r.pick()); err != nil {
			return nil
		}
	}
	up, err := net.DialUDP("udp", nil, target)
	if err != nil {
		return nil
	}
	p := &udpPeer{up: up, cut: make(chan struct{})}
	r.peers[from.String()] = p
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			select {
			case <-p.cut:
			default:
				_, _ = r.ln.WriteToUDP(buf[:n], from)
			}
		}
	}()
	return p
}

// cut drops every datagram of the existing mappings from now on.
func (r *udpRelay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.peers {
		select {
		case <-p.cut:
		default:
			close(p.cut)
		}
	}
}

func (r *udpRelay) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, p := range r.peers {
		p.up.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// pathCutter is a relay between an agent and the gateway whose path a test
// can cut: TCP for gRPC and yamux, UDP for QUIC.
type pathCutter interface {
	Addr() string
	cut()
}

// startPathRelay starts the relay that fits the rig's transport.
func startPathRelay(t testing.TB, rig *testrig.Rig, kill bool) pathCutter {
	if rig.Transport == "quic" {
		return startUDPRelay(t, rig.Tunnel)
	}
	if kill {
		return tcpKiller{startTCPRelay(t, rig.Tunnel)}
	}
	return tcpFreezer{newFreezer(t.(*testing.T), rig.Tunnel)}
}

type tcpKiller struct{ *tcpRelay }

func (k tcpKiller) cut() { k.Kill() }

type tcpFreezer struct{ *freezer }

func (f tcpFreezer) Addr() string { return f.ln.Addr().String() }
func (f tcpFreezer) cut()         { f.freeze() }
