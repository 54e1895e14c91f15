package grpctunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/shortskip"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// TestKeepaliveEndNamesSilentAgent: an exchange in flight (a long poll
// whose backend holds the request) when the agent's path dies silently:
// the gateway's own gRPC keepalive (5 s here) ends the connection, and the
// exchange's error says so. gRPC reports that end to the control stream as
// the agent's own close (its context canceled), so the exchange said
// "tunnel session ended: closed by the agent" (review13), and before
// 8d12334 only "context canceled".
func TestKeepaliveEndNamesSilentAgent(t *testing.T) {
	shortskip.Long(t, "waits about 10 s for the gateway's gRPC keepalive to give up on a frozen path")
	t.Parallel() // waits on timers with its own server; beside the other keepalive test
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	core, _ := observer.New(zap.DebugLevel)
	sessions := make(chan tunnel.Session, 4)
	srv := &grpctunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{ConnectorID: "c", Group: group}, nil
		},
		OnSession: func(s tunnel.Session) { sessions <- s },
		Log:       zap.New(core),
		NewWatch:  newWatch,
	}
	opts := append(grpctunnel.ServerOptions(0, 5*time.Second),
		grpc.Creds(srv.Credentials(grpctunnel.ServerCredentials(&tls.Config{Certificates: []tls.Certificate{cert}}))))
	gs := grpc.NewServer(opts...)
	srv.Register(gs)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go gs.Serve(ln)
	defer gs.Stop()

	var path *tunneltest.FreezeConn
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{
		Addr: ln.Addr().String(), TLS: &tls.Config{RootCAs: roots, ServerName: "localhost"}, Token: goodToken, MinIdle: 2,
		Keepalive: 60 * time.Second,
		Hello:     &tunnelv1.Hello{Name: "a", Version: "v", AgentId: "agent-ka"},
		DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			path = tunneltest.NewFreezeConn(t, c)
			return path, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 1)
	backend := heldBackend(entered)
	go cs.Serve(ctx, &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return backend, nil }}, nil)
	s := <-sessions
	st, err := s.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://backend:80/head", nil)
		_, err := tunnel.RoundTrip(st, req, nil)
		failed <- err
	}()
	<-entered
	path.Freeze()
	select {
	case err := <-failed:
		const want = "the gateway's keepalive ended the connection"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("exchange error %v; want it to say %q", err, want)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the exchange had not failed 40 s after its agent's path froze (gateway keepalive 5 s)")
	}
	<-s.Done()
}
