package grpctunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/shortskip"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// TestIdleKeepaliveEndReadsSilent: an idle session (no exchange, so the
// liveness watch says nothing) whose agent's path dies silently is ended by
// the gateway's gRPC keepalive (5 s here), logged as such, and reads Silent
// once it ended, through the real control stream: the gateway's metrics
// count it "silent" from Silent, read when Done is closed.
// TestKeepaliveEndCountsAsSilent calls sessionEndReason and sets deadPath
// itself, so it passes without Control's wiring.
func TestIdleKeepaliveEndReadsSilent(t *testing.T) {
	shortskip.Long(t, "waits about 10 s for the gateway's gRPC keepalive to give up on a frozen path")
	t.Parallel() // waits on timers with its own server; beside the other keepalive test
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	core, logs := observer.New(zap.InfoLevel)
	logged := make(chan struct{}, 1) // the session's end is logged (after Done)
	hook := zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "agent session ended" {
			select {
			case logged <- struct{}{}:
			default:
			}
		}
		return nil
	})
	sessions := make(chan tunnel.Session, 4)
	srv := &grpctunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{ConnectorID: "c", Group: group}, nil
		},
		OnSession: func(s tunnel.Session) { sessions <- s },
		Log:       zap.New(core, hook),
		NewWatch:  newWatch,
	}
	opts := append(grpctunnel.ServerOptions(0, 5*time.Second),
		grpc.Creds(srv.Credentials(grpctunnel.ServerCredentials(&tls.Config{Certificates: []tls.Certificate{cert}}))))
	gs := grpc.NewServer(opts...)
	srv.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()

	var path *tunneltest.FreezeConn
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{
		Addr: ln.Addr().String(), TLS: &tls.Config{RootCAs: roots, ServerName: "localhost"}, Token: goodToken, MinIdle: 2,
		Keepalive: 60 * time.Second, // the agent's keepalive does not end it first
		Hello:     &tunnelv1.Hello{Name: "a", Version: "v", AgentId: "agent-idle"},
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
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = cs.Serve(ctx, &tunnel.Server{}, nil)
	}()
	s := <-sessions
	path.Freeze()
	select {
	case <-s.Done():
	case <-time.After(40 * time.Second):
		t.Fatal("the session had not ended 40 s after its agent's path froze (gateway keepalive 5 s)")
	}
	silent := s.(interface{ Silent() bool }).Silent() // as the gateway's metrics read it, at Done
	<-logged
	var reason string
	for _, e := range logs.FilterMessage("agent session ended").All() {
		reason, _ = e.ContextMap()["reason"].(string)
	}
	if !strings.Contains(reason, "the gateway's keepalive ended the connection") {
		t.Errorf("the session ended with %q; want the gateway's keepalive as the reason", reason)
	}
	if !silent {
		t.Errorf("a session the gateway's keepalive ended (%q) does not read Silent: counted lost, not silent", reason)
	}
	cancel()
	<-served
}
