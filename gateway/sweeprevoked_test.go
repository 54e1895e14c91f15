package gateway

import (
	"context"
	"testing"
	"time"
)

// TestSweepRevokedSessionsCountAsRevoked: a connector revoked through
// another replica (or in the store directly) whose session this replica
// holds is closed at the next store sweep, and that session ends with the
// reason "revoked" in sallyport_gateway_sessions_closed_total, as it does
// where the revoke ran. Before, only the replica that revoked marked the
// connector, so here the session counted as "lost", the reason of an agent
// that crashed.
func TestSweepRevokedSessionsCountAsRevoked(t *testing.T) {
	db := storeWithConnector(t, "c1")
	g, _, _ := newObservedAdmin(t, db)
	s := newFakeSession("s1", "g")
	s.info.ConnectorID = "c1"
	if _, ok := g.registry.Add(s); !ok {
		t.Fatal("not registered")
	}
	if _, err := db.RevokeConnector(context.Background(), "c1", time.Now()); err != nil { // another replica's revoke
		t.Fatal(err)
	}
	g.sweep()
	if !isClosed(s.Done()) {
		t.Fatal("the sweep left the session of a revoked connector open")
	}
	if got := g.closeReason(s, s.Info()); got != closeRevoked {
		t.Errorf("the session closed by the sweep ends as %q, want %q", got, closeRevoked)
	}
}
