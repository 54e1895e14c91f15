package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/selfsigned"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
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
	tcp, tc, _ := loopbackTLS(t)
	ln := tls.NewListener(tcp, tc)
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
	// BusyRetries -1: the message of one attempt (the retries have a
	// test of their own).
	_, err := Enroll(context.Background(), EnrollConfig{Gateway: ln.Addr().String(), Token: "spt_x", Timeout: 5 * time.Second,
		TLS: &tls.Config{InsecureSkipVerify: true}, BusyRetries: -1}) //nolint:gosec // a test server
	if want := "closed the connection right after the TLS handshake"; !errors.Is(err, ErrGatewayUnreachable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("enroll at a gateway that closes after the handshake: %v\nwant ErrGatewayUnreachable and %q", err, want)
	}
}

// busyGateway is a gateway's tunnel port on loopback whose listener closes
// the first busy connections right after the TLS handshake, as the gateway
// does over its limit of connections without a certificate from one
// address; later ones reach an enrollment service that refuses every
// token. It returns the address and the number of TLS connections so far.
func busyGateway(t *testing.T, busy int) (addr string, conns func() int) {
	t.Helper()
	ln, tc, _ := loopbackTLS(t)
	bl := &busyListener{Listener: ln, tls: tc, busy: busy}
	srv := grpc.NewServer()
	tunnelv1.RegisterEnrollmentServiceServer(srv, refusingEnroll{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(bl) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String(), func() int { return int(bl.n.Load()) }
}

// loopbackTLS is a TCP listener on 127.0.0.1, closed at t's cleanup, and
// a server TLS configuration for it that offers h2 (as gRPC wants) with a
// new self-signed certificate, which it also returns.
func loopbackTLS(t *testing.T) (net.Listener, *tls.Config, tls.Certificate) {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}, cert
}

type busyListener struct {
	net.Listener
	tls  *tls.Config
	busy int
	n    atomic.Int64 // connections accepted
}

func (l *busyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := tls.Server(c, l.tls)
		if l.n.Add(1) > int64(l.busy) {
			return tc, nil
		}
		_ = tc.Handshake()
		tc.Close()
	}
}

type refusingEnroll struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
}

func (refusingEnroll) Enroll(context.Context, *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	return nil, status.Error(codes.Unauthenticated, "unknown enrollment token")
}

// TestEnrollRetriesWhenGatewayBusy: an enrollment whose connection the
// gateway closes right after the TLS handshake (its limit of enrolling
// connections from one address, as for agents behind one NAT enrolling
// together) is tried again, a few times, after jittered waits; a refused
// token is never sent twice. `agent enroll` used to give up at the first
// closed connection ("try again in a moment"), so a fleet's rollout from
// one address needed hands.
func TestEnrollRetriesWhenGatewayBusy(t *testing.T) {
	insecure := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a test server

	// Two closed connections, then the token is refused: three
	// connections, and the refusal is the answer.
	addr, conns := busyGateway(t, 2)
	_, err := Enroll(context.Background(), EnrollConfig{Gateway: addr, Token: "spt_x", TLS: insecure})
	if !errors.Is(err, ErrTokenRefused) || conns() != 3 {
		t.Fatalf("enroll at a gateway that closed 2 connections, then refused the token: %v after %d connections; "+
			"want ErrTokenRefused after 3", err, conns())
	}

	// Closed every time: BusyRetries+1 connections, each retry reported,
	// then ErrGatewayBusy.
	addr, conns = busyGateway(t, 100)
	var retries []int
	_, err = Enroll(context.Background(), EnrollConfig{Gateway: addr, Token: "spt_x", TLS: insecure,
		BusyRetries: 3, BusyBackoff: Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond},
		OnBusyRetry: func(err error, retry int, wait time.Duration) {
			if !errors.Is(err, ErrGatewayBusy) || wait <= 0 || wait > 4*time.Millisecond {
				t.Errorf("retry %d reported with %v, wait %v", retry, err, wait)
			}
			retries = append(retries, retry)
		}})
	if !errors.Is(err, ErrGatewayBusy) || !errors.Is(err, ErrGatewayUnreachable) || conns() != 4 || !slices.Equal(retries, []int{1, 2, 3}) {
		t.Fatalf("enroll at a gateway that closes every connection: %v after %d connections, retries reported %v; "+
			"want ErrGatewayBusy after 4, retries [1 2 3]", err, conns(), retries)
	}

	// A refused token at once: one connection.
	addr, conns = busyGateway(t, 0)
	_, err = Enroll(context.Background(), EnrollConfig{Gateway: addr, Token: "spt_x", TLS: insecure})
	if !errors.Is(err, ErrTokenRefused) || conns() != 1 {
		t.Fatalf("enroll with a refused token: %v after %d connections, want ErrTokenRefused after 1", err, conns())
	}
}
