package testrig

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// ConnectProxy is an in-process HTTP CONNECT proxy on 127.0.0.1 with Basic
// authentication. It remembers the target of every tunnel it carried and
// the local address of each upstream connection, so that a test can check
// that a connection came through it.
type ConnectProxy struct {
	ln  net.Listener
	opt ProxyOptions
	wg  sync.WaitGroup

	mu      sync.Mutex
	closed  bool            // guarded by mu
	targets []string        // the CONNECTs carried; guarded by mu
	up      map[string]bool // local addresses of upstream connections; guarded by mu
	conns   []net.Conn      // closed at the end; guarded by mu
}

// ProxyOptions configure a ConnectProxy.
type ProxyOptions struct {
	User, Pass string // the Basic credentials it requires
	// Refuse, when not 0, answers every authenticated CONNECT with this
	// status.
	Refuse int
	// Upstream, when set, is where every tunnel goes, whatever host the
	// CONNECT names: a name only the proxy "resolves" reaches the test's
	// server (HTTPS_PROXY does not apply to loopback addresses).
	Upstream string
}

// StartConnectProxy starts a proxy that stops when the test ends.
func StartConnectProxy(t testing.TB, opt ProxyOptions) *ConnectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ConnectProxy{ln: ln, opt: opt, up: make(map[string]bool)}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		p.closed = true
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// URL is the proxy's URL with these credentials.
func (p *ConnectProxy) URL(user, pass string) string {
	return fmt.Sprintf("http://%s:%s@%s", user, pass, p.ln.Addr())
}

// Addr is the proxy's host:port.
func (p *ConnectProxy) Addr() string { return p.ln.Addr().String() }

// Carried returns the targets of the CONNECTs the proxy carried, in order.
func (p *ConnectProxy) Carried() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// CarriedFrom reports whether the proxy opened an upstream connection
// from local, which its peer sees as the remote address.
func (p *ConnectProxy) CarriedFrom(local string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up[local]
}

// track keeps c to close at the end; false once the proxy stopped.
func (p *ConnectProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *ConnectProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *ConnectProxy) handle(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	answer := func(code int, extra string) {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\n\r\n", code, http.StatusText(code), extra)
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.opt.User+":"+p.opt.Pass))
	switch {
	case req.Method != http.MethodConnect:
		answer(http.StatusMethodNotAllowed, "")
		return
	case req.Header.Get("Proxy-Authorization") != want:
		answer(http.StatusProxyAuthRequired, "Proxy-Authenticate: Basic\r\n")
		return
	case p.opt.Refuse != 0:
		answer(p.opt.Refuse, "")
		return
	}
	target := req.Host
	if p.opt.Upstream != "" {
		target = p.opt.Upstream
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		answer(http.StatusBadGateway, "")
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.up[up.LocalAddr().String()] = true
	p.mu.Unlock()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(up, br)
		up.Close()
	}()
	io.Copy(c, up)
	<-done
}
