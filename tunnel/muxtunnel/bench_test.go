package muxtunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/selfsigned"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// loopbackSession starts a gateway and an agent of transport ("yamux" or
// "quic") on 127.0.0.1, in this process and with real TLS, whose agent
// answers with backend; it returns the gateway's session, ready for
// exchanges. Everything stops when tb ends.
func loopbackSession(tb testing.TB, transport string, backend http.RoundTripper) tunnel.Session {
	tb.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(tb.TempDir(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	sessions := make(chan tunnel.Session, 1)
	srv := &muxtunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{Group: group}, nil
		},
		OnSession: func(s tunnel.Session) { sessions <- s },
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	var cs *muxtunnel.ClientSession
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	switch transport {
	case muxtunnel.TransportYamux:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		go func() {
			defer close(served)
			c, err := ln.Accept()
			ln.Close()
			if err != nil {
				return
			}
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{yamuxtunnel.ALPN}})
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return
			}
			_ = yamuxtunnel.ServeConn(ctx, tc, srv, nil, 0)
		}()
		cs, err = yamuxtunnel.Dial(ctx, yamuxtunnel.DialConfig{Addr: ln.Addr().String(), TLS: clientTLS})
	case muxtunnel.TransportQUIC:
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		l := &quictunnel.Listener{Server: srv, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}
		go func() {
			defer close(served)
			defer pc.Close()
			_ = l.Serve(ctx, pc)
		}()
		cs, err = quictunnel.Dial(ctx, quictunnel.DialConfig{Addr: pc.LocalAddr().String(), TLS: clientTLS})
	default:
		tb.Fatalf("unknown transport %q", transport)
	}
	if err != nil {
		cancel()
		<-served
		tb.Fatalf("dial: %v", err)
	}
	agent := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return backend, nil }}
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		_ = cs.Serve(ctx, agent, nil)
	}()
	tb.Cleanup(func() {
		cancel()
		cs.Close()
		<-agentDone
		<-served
	})
	select {
	case s := <-sessions:
		return s
	case <-time.After(hangGuard):
		tb.Fatal("no session")
		return nil
	}
}

// BenchmarkExchange relays GETs over real yamux (TLS on TCP) and QUIC
// sessions on loopback, gateway and agent in this process, with a backend
// that costs next to nothing: what remains is the relay's own work. The
// cases are tunneltest.Cases, the same as grpctunnel's BenchmarkExchange.
func BenchmarkExchange(b *testing.B) {
	for _, transport := range []string{muxtunnel.TransportYamux, muxtunnel.TransportQUIC} {
		for _, c := range tunneltest.Cases {
			b.Run(transport+"/"+c.Name, func(b *testing.B) {
				tunneltest.BenchmarkExchange(b, loopbackSession(b, transport, c.Backend()), c)
			})
		}
	}
}
