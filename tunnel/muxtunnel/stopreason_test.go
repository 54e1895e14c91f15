package muxtunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/selfsigned"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
)

// TestQUICStopWithoutDrainSaysWhy: a QUIC session that the gateway's stop
// ends without a Drain (CloseAll, or the end of the listener's context)
// ends, on the agent, with the reason "gateway stopped" in the
// connection's close (application error 0, a normal close, with that
// text). Before, the text was empty: the agent's session ended with
// "Application error 0x0 (remote)", no word of why. A session the
// gateway closes with a reason (a revocation here) ends with that reason,
// as it did before.
func TestQUICStopWithoutDrainSaysWhy(t *testing.T) {
	const revoked = "revoked: connector c1 was revoked"
	for _, how := range []string{"CloseAll", "context", "revoked"} {
		t.Run(how, func(t *testing.T) {
			cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(cert.Leaf)
			sessions := make(chan tunnel.Session, 1)
			srv := &muxtunnel.Server{
				Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
					return tunnel.Identity{Group: group}, nil
				},
				OnSession: func(ss tunnel.Session) { sessions <- ss },
				Log:       zap.NewNop(),
			}
			l := &quictunnel.Listener{Server: srv, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- l.Serve(ctx, pc) }()

			dctx, dcancel := context.WithTimeout(context.Background(), hangGuard)
			cs, err := quictunnel.Dial(dctx, quictunnel.DialConfig{Addr: pc.LocalAddr().String(),
				TLS: &tls.Config{RootCAs: roots, ServerName: "localhost"}, Token: goodToken, Log: zap.NewNop()})
			dcancel()
			if err != nil {
				t.Fatal(err)
			}
			backend := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) {
				return nil, errors.New("no backend in this test")
			}}
			ended := make(chan error, 1)
			go func() { ended <- cs.Serve(context.Background(), backend, nil) }()
			ss := <-sessions

			want := "Application error 0x0 (remote): gateway stopped"
			switch how {
			case "CloseAll":
				srv.CloseAll()
			case "context":
				cancel()
			case "revoked":
				ss.Close(errors.New(revoked))
				want = "Application error 0x0 (remote): " + revoked
			}
			err = <-ended
			cancel()
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
			t.Logf("the agent's session ended: %v", err)
			if err == nil || !strings.HasSuffix(err.Error(), want) {
				t.Errorf("the agent's session ended with %v; want the close's reason: %s", err, want)
			}
		})
	}
}
