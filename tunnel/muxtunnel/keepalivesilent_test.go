package muxtunnel_test

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// keepaliveConn is a gateway connection whose transport says its own
// keepalive ended it (yamux's unanswered ping, QUIC's idle timeout) once
// the test sets ended.
type keepaliveConn struct {
	muxtunnel.Conn
	ended atomic.Bool
}

func (c *keepaliveConn) KeepaliveEnded() (time.Duration, bool) {
	if c.ended.Load() {
		return 25 * time.Second, true
	}
	return 0, false
}

// TestKeepaliveEndedSessionIsSilent: a session that the gateway's keepalive
// ended (nothing came from the agent: its host or its path died while the
// session was idle) logs that, not "closed by the agent", and reads Silent,
// so that sessions_closed_total counts it as "silent" as the README says,
// not "lost". Before, an idle yamux agent stopped with SIGSTOP was logged
// "closed by the agent" right after the gateway's own "keepalive: nothing
// from the peer after a ping; closing the session", and counted lost; over
// QUIC "timeout: no recent network activity", also lost.
func TestKeepaliveEndedSessionIsSilent(t *testing.T) {
	for _, dead := range []bool{true, false} {
		sc, cc := yamuxPipe(t)
		kc := &keepaliveConn{Conn: sc}
		core, logs := observer.New(zapcore.InfoLevel)
		// The close must come after the gateway has sent the welcome:
		// an agent that closes as it reads it may fail the gateway's
		// write of it, a session that never started.
		started := make(chan struct{})
		var once sync.Once
		hooked := zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
			if e.Message == "agent session started" {
				once.Do(func() { close(started) })
			}
			return nil
		})
		sessions := make(chan tunnel.Session, 1)
		srv := &muxtunnel.Server{
			Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
				return tunnel.Identity{Group: group, ConnectorID: "c1"}, nil
			},
			OnSession:    func(s tunnel.Session) { sessions <- s },
			HelloTimeout: 2 * time.Second,
			Log:          zap.New(hooked),
		}
		served := make(chan error, 1)
		go func() { served <- srv.ServeConn(context.Background(), kc, "yamux") }()
		p := &pair{srv: srv, client: cc, sessions: sessions, served: served}
		rawHello(t, p)
		s := session(t, p)
		select {
		case <-started:
		case <-time.After(hangGuard):
			t.Fatal("the gateway never logged the session's start")
		}
		kc.ended.Store(dead)
		cc.Close("") // the connection ends; the keepalive says whether it ended it
		select {
		case <-served:
		case <-time.After(hangGuard):
			t.Fatal("ServeConn did not return")
		}
		<-s.Done()
		silent := s.(interface{ Silent() bool }).Silent()
		var reason string
		for _, e := range logs.FilterMessage("agent session ended").All() {
			reason = e.ContextMap()["reason"].(string)
		}
		// Without the keepalive: "closed by the agent" or "connection
		// closed", whichever of the session's readers saw the end first.
		saysKeepalive := strings.Contains(reason, "the gateway's keepalive ended the connection")
		if silent != dead || saysKeepalive != dead {
			t.Errorf("keepalive ended it: %v; the session reads silent %v, ended %q", dead, silent, reason)
		}
	}
}

// TestKeepaliveEndedAgentSaysSo: on the agent, a session that its own
// keepalive ended ends with that reason, not "the gateway closed the
// session" (an idle yamux agent whose gateway was stopped with SIGSTOP
// logged its keepalive's close, then "lost the gateway session … the
// gateway closed the session").
func TestKeepaliveEndedAgentSaysSo(t *testing.T) {
	sc, cc := yamuxPipe(t)
	kc := &keepaliveConn{Conn: cc}
	srv := &muxtunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{Group: group, ConnectorID: "c1"}, nil
		},
		HelloTimeout: 2 * time.Second,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(ctx, sc, "yamux") }()
	cs, err := muxtunnel.Handshake(ctx, kc, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cs.Serve(ctx, &tunnel.Server{}, nil) }()
	kc.ended.Store(true)
	sc.Close("") // the connection ends under the agent, which reads its keepalive's word
	select {
	case err = <-ended:
	case <-time.After(hangGuard):
		t.Fatal("Serve did not return")
	}
	if err == nil || !strings.Contains(err.Error(), "the agent's keepalive ended the connection") {
		t.Errorf("the session ended with %v, want the agent's keepalive as the reason", err)
	}
	<-served
}
