package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// TestEnrollUnreachableMessages: a gateway address where something answers
// without TLS (the gateway's public or admin port), or where nothing ever
// answers (a firewall dropping the packets), fails with ErrGatewayUnreachable
// and says which of the two it was. They used to end in gRPC's text alone
// ("DeadlineExceeded: context deadline exceeded …" after the timeout).
func TestEnrollUnreachableMessages(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		held []net.Conn
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})

	for _, tc := range []struct {
		addr string
		want string
	}{
		{strings.TrimPrefix(plain.URL, "http://"), "but not with TLS, so it is not the gateway's tunnel listener (tunnel.addr)"},
		{silent.Addr().String(), "no answer in time"},
	} {
		_, err := Enroll(context.Background(), EnrollConfig{Gateway: tc.addr, Token: "spt_x", Timeout: 300 * time.Millisecond})
		if !errors.Is(err, ErrGatewayUnreachable) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("enroll at %s: %v\nwant ErrGatewayUnreachable and %q", tc.addr, err, tc.want)
		}
	}
}

// TestEnrollClosedAfterHandshake: a gateway that closes the connection
// right after the TLS handshake (its limit of enrolling connections from
// one address reached, or it is stopping) is said to be that, with "try
// again in a moment", not "cannot reach the gateway … check that it runs".
func TestEnrollClosedAfterHandshake(t *testing.T) {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, err = Enroll(context.Background(), EnrollConfig{Gateway: ln.Addr().String(), Token: "spt_x", Timeout: 5 * time.Second,
		TLS: &tls.Config{InsecureSkipVerify: true}}) //nolint:gosec // a test server
	if want := "closed the connection right after the TLS handshake"; !errors.Is(err, ErrGatewayUnreachable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("enroll at a gateway that closes after the handshake: %v\nwant ErrGatewayUnreachable and %q", err, want)
	}
}
