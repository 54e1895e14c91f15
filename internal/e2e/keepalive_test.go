package e2e

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// freezer forwards TCP connections to target until freeze is called: from
// then on the connections open at that moment stay open but carry nothing,
// like a gateway host that died without closing anything. Connections
// accepted later are forwarded normally.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []chan struct{}
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		stop := make(chan struct{})
		f.mu.Lock()
		f.frozen = append(f.frozen, stop)
		f.conns = append(f.conns, c, up)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(up, c, stop)
		go f.pipe(c, up, stop)
	}
}

// pipe copies src to dst until src fails or stop is closed; after stop the
// bytes read are dropped.
func (f *freezer) pipe(dst, src net.Conn, stop chan struct{}) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		select {
		case <-stop:
			continue // frozen: swallow
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.frozen {
		close(s)
	}
	f.frozen = nil
}

func (f *freezer) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TestDeadPeerNoticed: when the network path dies silently (no FIN, no
// RST), keepalive makes both sides notice within about 25 s; the agent
// reconnects and the app works again. On every transport at once: the
// three waits overlap, and `make test` runs it only in its first pass,
// which covers all three (the passes over QUIC and yamux skip it).
func TestDeadPeerNoticed(t *testing.T) {
	testrig.SkipShort(t, "waits for keepalive (about 25 s)")
	t.Parallel()
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			deadPeerNoticed(t, transport)
		})
	}
}

// deadPeerNoticed is TestDeadPeerNoticed over one transport.
func deadPeerNoticed(t *testing.T, transport string) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "alive")
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes: []gateway.Route{
			{App: "ka", Hosts: []string{"ka.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
		// QUIC notices a dead path by its idle timeout (30 s, pings every
		// 15 s); 10 s (pings every 5 s) keeps this test as short as gRPC's.
		Gateway: func(c *gateway.Config) { c.QUICIdleTimeout = 10 * time.Second },
	})
	fz := startPathRelay(t, rig, false)
	a := rig.StartAgent(func(c *agent.Config) { c.Gateway = fz.Addr() })
	// The gateway registers a session before the agent has read its
	// welcome: wait for the agent's side too.
	var before []string
	waitFor(t, "the agent's session", func() bool { before = a.A.Sessions(); return len(before) == 1 })
	fz.cut()
	start := time.Now()
	// Bounded wait for a new session (the agent noticed and reconnected)
	// and for the gateway to drop the dead one.
	deadline := start.Add(60 * time.Second)
	for {
		now := a.A.Sessions()
		ids := rig.G.Registry().Sessions()
		if len(now) == 1 && now[0] != before[0] && len(ids) == 1 && ids[0].ID == now[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s the dead session was not replaced: agent %v, gateway %v", now, ids)
		}
		time.Sleep(50 * time.Millisecond) // polling; keepalive has no event to wait on
	}
	t.Logf("dead path noticed and replaced after %v", time.Since(start).Round(time.Second))
	code, body, err := get(t, rig.Client(), rig.URL, "ka.test", "/")
	if err != nil || code != 200 || body != "alive" {
		t.Fatalf("after reconnect: %d %q %v", code, body, err)
	}
}
