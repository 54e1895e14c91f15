package testrig

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Impairment describes a bad network path. The zero value is a perfect
// path. Loss, reordering and the size limit apply to UDP only, the rate
// limit to TCP only; the delay and the blackhole switch to both.
type Impairment struct {
	// Loss is the share of datagrams dropped in each direction, 0-1.
	Loss float64
	// Reorder is the share of datagrams held back by ReorderBy, so that the
	// ones sent after them overtake them, 0-1.
	Reorder float64
	// ReorderBy is how long a reordered datagram is held (0 → 5 ms).
	ReorderBy time.Duration
	// Delay is added to every datagram or TCP chunk, each direction.
	Delay time.Duration
	// MaxDatagram drops UDP datagrams whose payload is longer (0 → no
	// limit). A path MTU of 1280 leaves 1252 bytes of UDP payload over
	// IPv4 and 1232 over IPv6.
	MaxDatagram int
	// Blackhole drops everything silently: no FIN, no RST, no ICMP.
	Blackhole bool
	// Rate limits each direction of each TCP connection to this many
	// bytes per second (0 → no limit), as a slow link does: the bytes
	// beyond it queue in the relay and in the sockets' buffers before it,
	// so a small message sent after a large one waits for it.
	Rate int
}

func (im Impairment) reorderBy() time.Duration {
	if im.ReorderBy <= 0 {
		return 5 * time.Millisecond
	}
	return im.ReorderBy
}

// ImpairedUDP forwards UDP datagrams between clients and a target on
// 127.0.0.1 through an Impairment. Each client address gets its own
// upstream socket (a NAT mapping); Rebind replaces them with new ones, as a
// NAT does after an idle timeout. Random decisions come from a seeded
// source, so a test's sequence of drops is the same every run.
type ImpairedUDP struct {
	ln *net.UDPConn
	wg sync.WaitGroup

	mu     sync.Mutex
	target *net.UDPAddr // guarded by mu
	// pick, when set, chooses the target of each new client address
	// instead (a load balancer's policy); guarded by mu.
	pick     func() string
	im       Impairment             // guarded by mu
	rnd      *rand.Rand             // guarded by mu
	mappings map[string]*udpMapping // by client address; guarded by mu
	closed   bool                   // guarded by mu
	stats    ImpairStats            // guarded by mu
}

// ImpairStats counts what an impaired path did.
type ImpairStats struct {
	Forwarded, Lost, TooBig, Blackholed, Reordered int
	// Largest is the payload of the largest datagram forwarded.
	Largest int
}

type udpMapping struct {
	from *net.UDPAddr
	to   *net.UDPAddr // the target when the mapping started
	up   *net.UDPConn // guarded by ImpairedUDP.mu: Rebind replaces it
	dead bool         // blackholed by BlackholeCurrent; guarded by ImpairedUDP.mu
}

// BlackholeCurrent drops every datagram of the mappings that exist now, in
// both directions, for ever (a stateful firewall or NAT that lost them);
// clients that start later (a redial opens a new socket) pass.
func (r *ImpairedUDP) BlackholeCurrent() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.mappings {
		m.dead = true
	}
}

// Retarget sends the clients that start from now on (a new socket: a
// redial) to target (host:port), as a load balancer that took a replica out
// would; the mappings that exist go on to the old one.
func (r *ImpairedUDP) Retarget(target string) error {
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = taddr
	return nil
}

// SetPick makes pick choose the target (host:port) of each client that
// starts from now on; datagrams of a client whose pick does not resolve
// are dropped.
func (r *ImpairedUDP) SetPick(pick func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pick = pick
}

// StartImpairedUDP starts a relay to target (host:port) on 127.0.0.1,
// closed by t's cleanup.
func StartImpairedUDP(t testing.TB, target string, seed uint64) *ImpairedUDP {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return startImpairedUDP(t, ln, target, seed)
}

// StartImpairedPath starts a UDP and a TCP relay to target on the same
// port number, as the agent's transport "auto" and enrollment need.
func StartImpairedPath(t testing.TB, target string, seed uint64) (*ImpairedUDP, *ImpairedTCP) {
	t.Helper()
	for range 20 {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := tcp.Addr().(*net.TCPAddr).Port
		ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			tcp.Close()
			continue
		}
		return startImpairedUDP(t, ln, target, seed), startImpairedTCP(t, tcp, target)
	}
	t.Fatal("no port number free for both UDP and TCP")
	return nil, nil
}

func startImpairedUDP(t testing.TB, ln *net.UDPConn, target string, seed uint64) *ImpairedUDP {
	t.Helper()
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	r := &ImpairedUDP{
		ln:       ln,
		target:   taddr,
		rnd:      rand.New(rand.NewPCG(seed, seed^0x5a11)),
		mappings: make(map[string]*udpMapping),
	}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.Close)
	return r
}

// Addr is the address clients send to.
func (r *ImpairedUDP) Addr() string { return r.ln.LocalAddr().String() }

// Set replaces the impairment from the next datagram on.
func (r *ImpairedUDP) Set(im Impairment) {
	r.mu.Lock()
	r.im = im
	r.mu.Unlock()
}

// Stats returns the counters so far.
func (r *ImpairedUDP) Stats() ImpairStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Rebind gives every mapping a new source port toward the target; the
// target's answers to the old ports are dropped, as a NAT that forgot the
// mapping would.
func (r *ImpairedUDP) Rebind() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return net.ErrClosed // Close waits for the goroutines: start none
	}
	for _, m := range r.mappings {
		up, err := net.DialUDP("udp", nil, m.to)
		if err != nil {
			return err
		}
		old := m.up
		m.up = up
		old.Close() // its reader goroutine ends
		r.wg.Add(1)
		go r.back(m, up)
	}
	return nil
}

// Close stops the relay and waits for its goroutines.
func (r *ImpairedUDP) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.ln.Close()
	for _, m := range r.mappings {
		m.up.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *ImpairedUDP) serve() {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m := r.mapping(from)
		if m == nil {
			continue
		}
		r.mu.Lock()
		up := m.up
		r.mu.Unlock()
		r.forward(m, buf[:n], func(p []byte) { _, _ = up.Write(p) })
	}
}

// mapping returns the mapping of client from, creating it on first use.
func (r *ImpairedUDP) mapping(from *net.UDPAddr) *udpMapping {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.mappings[from.String()]; m != nil {
		return m
	}
	if r.closed {
		return nil
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
	m := &udpMapping{from: from, to: target, up: up}
	r.mappings[from.String()] = m
	r.wg.Add(1)
	go r.back(m, up)
	return m
}

// back relays the target's datagrams on up to the mapping's client until
// up is closed.
func (r *ImpairedUDP) back(m *udpMapping, up *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		r.forward(m, buf[:n], func(p []byte) { _, _ = r.ln.WriteToUDP(p, m.from) })
	}
}

// forward passes one datagram through the impairment to send, now or
// later (send gets a copy it may keep).
func (r *ImpairedUDP) forward(m *udpMapping, p []byte, send func([]byte)) {
	r.mu.Lock()
	im := r.im
	var hold time.Duration
	switch {
	case im.Blackhole || m.dead:
		r.stats.Blackholed++
	case im.MaxDatagram > 0 && len(p) > im.MaxDatagram:
		r.stats.TooBig++
	case im.Loss > 0 && r.rnd.Float64() < im.Loss:
		r.stats.Lost++
	default:
		r.stats.Forwarded++
		r.stats.Largest = max(r.stats.Largest, len(p))
		hold = im.Delay
		if im.Reorder > 0 && r.rnd.Float64() < im.Reorder {
			r.stats.Reordered++
			hold += im.reorderBy()
		}
		r.mu.Unlock()
		if hold == 0 {
			send(p)
			return
		}
		c := append([]byte(nil), p...)
		time.AfterFunc(hold, func() { send(c) }) // a write to a closed socket fails quietly
		return
	}
	r.mu.Unlock()
}

// ImpairedTCP forwards TCP connections to a target on 127.0.0.1 with a
// delay, a rate limit, a blackhole switch, BlackholeCurrent and a cut that
// resets every connection. The switch (Impairment.Blackhole) holds the
// bytes until it is turned off, as TCP's retransmissions would deliver
// them once the path is back; BlackholeCurrent swallows them for good.
// Neither closes anything.
type ImpairedTCP struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	target string // guarded by mu
	// pick, when set, chooses the target of each new connection instead
	// (a load balancer's policy); guarded by mu.
	pick   func() string
	im     Impairment            // guarded by mu
	clear  chan struct{}         // closed while im.Blackhole is off or the relay closed; guarded by mu
	conns  []*net.TCPConn        // both ends of every relayed connection; guarded by mu
	closed bool                  // guarded by mu
	dead   map[*net.TCPConn]bool // sources blackholed by BlackholeCurrent; guarded by mu
}

// BlackholeCurrent swallows, from now on, every byte of the connections
// open now, both ways, without closing them (a dead path or a firewall
// that lost their state); connections accepted later pass.
func (r *ImpairedTCP) BlackholeCurrent() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead == nil {
		r.dead = make(map[*net.TCPConn]bool)
	}
	for _, c := range r.conns {
		r.dead[c] = true
	}
}

// Retarget forwards the connections accepted from now on to target
// (host:port), as a load balancer that took a replica out would; the open
// ones stay.
func (r *ImpairedTCP) Retarget(target string) error {
	if _, err := net.ResolveTCPAddr("tcp", target); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = target
	return nil
}

// SetPick makes pick choose the target (host:port) of each connection
// accepted from now on.
func (r *ImpairedTCP) SetPick(pick func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pick = pick
}

// StartImpairedTCP starts a relay to target on 127.0.0.1, closed by t's
// cleanup.
func StartImpairedTCP(t testing.TB, target string) *ImpairedTCP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startImpairedTCP(t, ln, target)
}

func startImpairedTCP(t testing.TB, ln net.Listener, target string) *ImpairedTCP {
	r := &ImpairedTCP{ln: ln, target: target, clear: make(chan struct{})}
	close(r.clear)
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.Close)
	return r
}

// Addr is the address clients dial.
func (r *ImpairedTCP) Addr() string { return r.ln.Addr().String() }

// Set replaces the impairment (Delay, Rate and Blackhole; the rest is
// UDP's).
func (r *ImpairedTCP) Set(im Impairment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case im.Blackhole && !r.im.Blackhole:
		r.clear = make(chan struct{})
	case !im.Blackhole && r.im.Blackhole && !r.closed:
		close(r.clear)
	}
	r.im = im
}

// Cut resets every relayed connection (RST both ways) and keeps accepting.
func (r *ImpairedTCP) Cut() {
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, c := range conns {
		_ = c.SetLinger(0)
		c.Close()
	}
}

// Close stops accepting, resets what is open and waits for the goroutines.
func (r *ImpairedTCP) Close() {
	r.mu.Lock()
	if !r.closed && r.im.Blackhole {
		close(r.clear) // held bytes go to connections Cut closes
	}
	r.closed = true
	r.mu.Unlock()
	r.ln.Close()
	r.Cut()
	r.wg.Wait()
}

func (r *ImpairedTCP) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		target := r.target
		if r.pick != nil {
			target = r.pick()
		}
		r.mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		r.conns = append(r.conns, c.(*net.TCPConn), up.(*net.TCPConn))
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pipe(up.(*net.TCPConn), c.(*net.TCPConn))
		go r.pipe(c.(*net.TCPConn), up.(*net.TCPConn))
	}
}

// pipe copies src to dst through the impairment; src's end passes on as a
// half-close, an error closes both, unless src was blackholed by
// BlackholeCurrent: a dead path carries no FIN or RST either, so dst stays
// open until Cut or Close.
func (r *ImpairedTCP) pipe(dst, src *net.TCPConn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	var pace pacer
	for {
		n, err := src.Read(buf)
		r.mu.Lock()
		im, clear := r.im, r.clear
		dead := r.dead[src]
		r.mu.Unlock()
		if dead {
			if err != nil {
				return
			}
			continue // swallowed: the sender sees its bytes leave, nothing arrives
		}
		if n > 0 {
			<-clear // held while the path is down
			if im.Delay > 0 {
				time.Sleep(im.Delay) // a copy loop of its own per direction: order kept
			}
			if werr := pace.write(dst, buf[:n], im.Rate); werr != nil {
				src.Close()
				return
			}
		}
		if err == io.EOF {
			_ = dst.CloseWrite()
			return
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// pacer spaces one direction's writes to a rate, as a slow link does.
type pacer struct {
	next time.Time // when the link is free for the next byte
}

// paceSlice is the most a rate-limited write sends at once: about 1/50 s
// of the rate, at least one typical TCP segment.
func paceSlice(rate int) int { return max(rate/50, 1460) }

// write writes p to dst at rate bytes per second (0: at once).
func (pc *pacer) write(dst net.Conn, p []byte, rate int) error {
	if rate <= 0 {
		_, err := dst.Write(p)
		return err
	}
	for len(p) > 0 {
		n := min(len(p), paceSlice(rate))
		now := time.Now()
		if pc.next.Before(now) {
			pc.next = now // an idle link has no credit saved up
		}
		pc.next = pc.next.Add(time.Duration(n) * time.Second / time.Duration(rate))
		if _, err := dst.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		time.Sleep(time.Until(pc.next))
	}
	return nil
}
