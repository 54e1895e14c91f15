package quictunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// TestSessionCloseAfterOwnEndIsEOF: the agent closes its side of an
// exchange stream right after its `end`, then waits for the gateway's
// close. A gateway that ends the drained session at once (its last
// exchange is over) sends CONNECTION_CLOSE, which may arrive before that
// stream's FIN: the agent's read must end as cleanly as with the FIN.
// Without the fix it failed with "Application error 0x0 (remote): agent
// drained", and the agent logged "exchange stream failed" for an exchange
// that had succeeded, a few times at every renewal (the agent moves its
// sessions then). A session closed before the agent's end still fails the
// read: the exchange did not finish.
func TestSessionCloseAfterOwnEndIsEOF(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ownClose bool // the agent closed its side (its end is written)
		wantEOF  bool
	}{
		{"after the agent's end", true, true},
		{"before the agent's end", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, agent := connPair(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			// The gateway opens the exchange stream and sends its request.
			gs, err := gw.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := gs.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			as, err := agent.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(as, make([]byte, len("request"))); err != nil {
				t.Fatalf("agent reads the request: %v", err)
			}
			if _, err := as.Write([]byte("response")); err != nil {
				t.Fatal(err)
			}
			if tc.ownClose {
				if err := as.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(gs)
				if err != nil || string(got) != "response" {
					t.Fatalf("gateway reads %q, %v; want the response and its FIN", got, err)
				}
			} else if _, err := io.ReadFull(gs, make([]byte, len("response"))); err != nil {
				t.Fatal(err)
			}
			// The gateway ends the session without closing the stream: the
			// CONNECTION_CLOSE is all the agent gets.
			gw.Close("agent drained")

			n, err := as.Read(make([]byte, 16))
			switch {
			case tc.wantEOF && (n != 0 || err != io.EOF):
				t.Fatalf("agent's read after its end = %d, %v; want 0, io.EOF (the gateway closed the session normally)", n, err)
			case !tc.wantEOF && (err == nil || errors.Is(err, io.EOF)):
				t.Fatalf("agent's read before its end = %d, %v; want the session's close as an error", n, err)
			}
		})
	}
}

// connPair connects a gateway-side and an agent-side conn over QUIC on
// loopback, with the package's config; both are closed when the test ends.
func connPair(t *testing.T) (gw, agent *conn) {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	ln, err := quic.ListenAddr("127.0.0.1:0",
		&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}}, baseConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := baseConfig(0)
	cfg.MaxIncomingStreams = 10
	ac, err := quic.DialAddr(ctx, ln.Addr().String(),
		&tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{ALPN}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	gc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gw, agent = &conn{c: gc}, &conn{c: ac, agent: true}
	t.Cleanup(func() {
		gw.Close("")
		agent.Close("")
	})
	return gw, agent
}

// TestGatewaySideKeepsSessionCloseCause: the EOF mapping of a peer's
// normal session close is the agent's alone; on the gateway's side (which
// ends its request first) an agent that closes its session in the middle of
// a response (its drain deadline passed) stays an error naming why (a
// reviewer's probe: it read as a clean io.EOF).
func TestGatewaySideKeepsSessionCloseCause(t *testing.T) {
	gw, agent := connPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := gw.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gs.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := gs.CloseWrite(); err != nil { // the request is whole
		t.Fatal(err)
	}
	as, err := agent.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(as); err != nil {
		t.Fatal(err)
	}
	if _, err := as.Write([]byte("half a resp")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(gs, make([]byte, len("half a resp"))); err != nil {
		t.Fatal(err)
	}
	agent.Close("agent drained") // mid-response
	_, err = gs.Read(make([]byte, 16))
	if err == io.EOF {
		t.Fatalf("gateway's read of a response cut by the agent's session close = io.EOF; want an error naming the close")
	}
}
