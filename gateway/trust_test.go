package gateway

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/store"
)

// TestRevokeBeforeSessionRegistered: a session authenticated before its
// connector was revoked, and registered by the transport only after the
// revocation (the transport waits for the agent's hello in between), is
// closed as it is registered; it must not serve the group afterwards.
func TestRevokeBeforeSessionRegistered(t *testing.T) {
	g, err := New(Config{TunnelTLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	ctx := context.Background()
	for _, id := range []string{"c1", "c2"} {
		if err := g.store.AddConnector(ctx, store.Connector{ID: id, Name: id, Group: "g", Enrolled: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	// c1 passed authenticateSession, then an administrator revoked it.
	if _, _, err := g.Revoke(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	revoked := newFakeSession("s1", "g")
	revoked.info.ConnectorID = "c1"
	g.addSession(revoked)
	select {
	case <-revoked.Done():
	default:
		t.Fatal("the revoked connector's session stayed open")
	}
	if p, err := g.registry.Pick("g", nil); err == nil {
		t.Fatalf("picked %v of a revoked connector", p.Session)
	}

	ok := newFakeSession("s2", "g")
	ok.info.ConnectorID = "c2"
	g.addSession(ok)
	p, err := g.registry.Pick("g", nil)
	if err != nil || p.Session != ok {
		t.Fatalf("the unrevoked connector's session: %v, %v", p, err)
	}
	p.Done()
}
