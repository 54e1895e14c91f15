package grpctunnel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// endReasonAgent is a raw agent whose connection and control stream the
// test ends itself (not at the test's cleanup, which runs after the
// server's).
type endReasonAgent struct {
	cc     *grpc.ClientConn
	ctrl   controlStream
	cancel context.CancelFunc
	s      tunnel.Session // the gateway's side
}

func (a *endReasonAgent) close() {
	a.cancel()
	a.cc.Close()
}

func dialEndReasonAgent(t *testing.T, ts *testServer) *endReasonAgent {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(ts.tls)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &endReasonAgent{cc: cc, cancel: cancel}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+goodToken)
	if a.ctrl, err = tunnelv1.NewTunnelServiceClient(cc).Control(ctx); err != nil {
		a.close()
		t.Fatal(err)
	}
	if err := a.ctrl.Send(&tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{ProtocolVersion: 1, Name: "raw"}}); err != nil {
		a.close()
		t.Fatal(err)
	}
	if m, err := a.ctrl.Recv(); err != nil || m.GetWelcome() == nil {
		a.close()
		t.Fatalf("no welcome: %v %v", m, err)
	}
	a.s = ts.session()
	return a
}

// endReason waits for the server's "agent session ended" line and returns
// its reason.
func endReason(t *testing.T, ts *testServer) string {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		if e := ts.logs.FilterMessage("agent session ended").All(); len(e) > 0 {
			if len(e) > 1 {
				t.Errorf("%d session-ended lines, want 1", len(e))
			}
			r, _ := e[0].ContextMap()["reason"].(string)
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session-ended line: %v", ts.logs.All())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSessionEndReason: a gRPC agent session's end is logged with the
// reason the QUIC and yamux sessions give: the agent gone, the agent
// stopping after its drain, the gateway closing it, or the gateway
// stopping. The first, second and last were logged as "Canceled: context
// canceled", which told the operator nothing; a session the gateway closed
// had no line at all.
func TestSessionEndReason(t *testing.T) {
	t.Run("agent gone", func(t *testing.T) {
		ts := startServer(t, nil)
		a := dialEndReasonAgent(t, ts)
		a.close() // the agent's process killed: its connection closes
		if r := endReason(t, ts); r != "closed by the agent" {
			t.Errorf("reason %q, want %q", r, "closed by the agent")
		}
	})
	t.Run("agent drained", func(t *testing.T) {
		ts := startServer(t, nil)
		a := dialEndReasonAgent(t, ts)
		if err := a.ctrl.Send(&tunnelv1.ControlRequest{Drain: &tunnelv1.Drain{Reason: "agent shutting down"}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(hangGuard)
		for len(ts.logs.FilterMessage("agent is draining").All()) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the drain did not arrive")
			}
			time.Sleep(5 * time.Millisecond)
		}
		a.close()
		if r := endReason(t, ts); r != "drained by the agent (it is stopping)" {
			t.Errorf("reason %q, want %q", r, "drained by the agent (it is stopping)")
		}
	})
	t.Run("closed by the gateway", func(t *testing.T) {
		ts := startServer(t, nil)
		a := dialEndReasonAgent(t, ts)
		defer a.close()
		a.s.Close(errors.New("its connector was revoked"))
		if r := endReason(t, ts); r != "closed by the gateway" {
			t.Errorf("reason %q, want %q", r, "closed by the gateway")
		}
	})
	t.Run("gateway stopped", func(t *testing.T) {
		var ts *testServer
		var a *endReasonAgent
		t.Run("serve", func(t *testing.T) {
			ts = startServer(t, nil)
			a = dialEndReasonAgent(t, ts)
			ts.srv.DrainAll("gateway shutting down")
			// The subtest's cleanup stops the gRPC server, as the
			// gateway's shutdown does, with the agent still connected.
		})
		defer a.close()
		if r := endReason(t, ts); r != "gateway stopped" {
			t.Errorf("reason %q, want %q", r, "gateway stopped")
		}
	})
}
