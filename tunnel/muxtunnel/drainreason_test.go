package muxtunnel_test

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// TestAgentDrainReason: a session that ends because the agent drained it
// (it is stopping) and its last exchange is over is logged as drained by
// the agent. It was logged as "closed by the gateway", which read as if
// the gateway had ended it.
func TestAgentDrainReason(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	p := newPair(t, func(s *muxtunnel.Server) { s.Log = zap.New(core) })
	ctrl := rawHello(t, p)
	session(t, p)
	writeRaw(t, ctrl, &tunnelv1.ControlRequest{Drain: &tunnelv1.Drain{Reason: "agent shutting down"}})
	if err := p.served1(t); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	e := logs.FilterMessage("agent session ended").All()
	if len(e) != 1 {
		t.Fatalf("%d session-ended lines, want 1: %v", len(e), logs.All())
	}
	if r := e[0].ContextMap()["reason"]; r != "drained by the agent (it is stopping)" {
		t.Errorf("session ended with reason %q, want drained by the agent", r)
	}
}
