package agent

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/sallyport/sallyport/internal/rawsock"
)

// TestConnsRaw: on Linux the agent's own backend connections (plain, as
// dialled or in a bodyConn, and under TLS) and a tunnel's direct TCP
// connection are rawsock's, whose reads and writes skip the scheduler's
// system-call state; the backend exchanges on them still work (and reuse
// the connection, which idleCheck reads through rawsock.ReadFD).
func TestConnsRaw(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var d net.Dialer
	for _, tc := range []struct {
		name string
		tls  bool
		dial backendDialFunc
	}{
		{"tcp", false, nil},
		{"bodyConn", false, withBodyConns(func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		})},
		{"tls", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startCountedBackend(t, ok, tc.tls)
			s := newTestH1Sync(t)
			s.Dial = tc.dial
			if tc.tls {
				s.TLS = b.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
			}
			for i := range 3 {
				if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil || body != "ok" {
					t.Fatalf("request %d: %q, %v", i, body, err)
				}
			}
			if n := b.accepted.Load(); n != 1 {
				t.Errorf("%d connections for 3 requests, want 1", n)
			}
			c := idleConn(t, s, b.URL, tc.tls)
			var inner net.Conn = c.conn
			if tc.tls {
				inner = c.records.Conn
			}
			if _, ok := inner.(*rawsock.Conn); !ok {
				t.Errorf("the backend connection reads and writes through a %T, want a *rawsock.Conn", inner)
			}
		})
	}

	// A tunnel through a plain HTTP proxy: after CONNECT the proxy's TCP
	// connection is wrapped too, unless the proxy sent tunnel bytes right
	// after its answer (a bufferedConn, which keeps them and is left as
	// it is: the bytes must still arrive).
	for _, tc := range []struct {
		name  string
		extra string
		raw   bool
	}{{"tunnel through a proxy", "", true}, {"tunnel through a proxy that sent bytes early", "early", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			served := make(chan struct{})
			go func() {
				defer close(served)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"+tc.extra)
				}
				io.Copy(io.Discard, c) // until the agent closes
			}()
			a := &Agent{proxy: newProxyDialer(&url.URL{Scheme: "http", Host: ln.Addr().String()})}
			c, err := a.dialTCP(context.Background(), "tcp", "gateway.test:8443")
			if err != nil {
				t.Fatal(err)
			}
			if _, isRaw := c.(*rawsock.Conn); isRaw != tc.raw {
				t.Errorf("the tunnel's connection through the proxy is a %T, want rawsock's: %v", c, tc.raw)
			}
			if tc.extra != "" {
				b := make([]byte, len(tc.extra))
				if _, err := io.ReadFull(c, b); err != nil || string(b) != tc.extra {
					t.Errorf("read %q, %v; want the proxy's early %q", b, err, tc.extra)
				}
			}
			c.Close()
			<-served
		})
	}

	t.Run("tunnel", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := (&Agent{}).dialTCP(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, ok := c.(*rawsock.Conn); !ok {
			t.Errorf("a tunnel's TCP connection is a %T, want a *rawsock.Conn", c)
		}
	})
}
