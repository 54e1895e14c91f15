package agent

import (
	"context"
	"io"
	"net"
	"net/http"
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
