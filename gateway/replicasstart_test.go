package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/store"
)

// removeCountStore is a store that counts the calls of
// RemoveReplicasExcept, failing those while fail is set.
type removeCountStore struct {
	*store.DB
	removes int
	fail    bool
}

func (s *removeCountStore) RemoveReplicasExcept(ctx context.Context, keep []string) error {
	s.removes++
	if s.fail {
		return errors.New("database is locked")
	}
	return s.DB.RemoveReplicasExcept(ctx, keep)
}

// TestRemoveEarlierReplicasAtStartOnly: on SQLite the rows of replicas of
// earlier runs (a kill -9, a restored backup) are removed at the first
// heartbeat, again at the next while that fails, and not at every later
// heartbeat or the count at shutdown; the gateway counts itself alone
// throughout. Before, every heartbeat deleted them again (4 deletes for 4
// counts).
func TestRemoveEarlierReplicasAtStartOnly(t *testing.T) {
	ctx := context.Background()
	mem, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	now := time.Now()
	for _, id := range []string{"killed-1", "killed-2"} {
		if err := mem.Heartbeat(ctx, id, now.Add(-time.Second), now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	rs := &removeCountStore{DB: mem, fail: true}
	g := &Gateway{cfg: Config{StoreSweep: time.Minute}, log: zap.NewNop(), store: rs, replica: newReplicaID()}
	defer g.removeReplica()
	if err := g.heartbeat(); err == nil {
		t.Fatal("the first heartbeat did not fail with the delete")
	}
	rs.fail = false
	for i := range 3 {
		if err := g.heartbeat(); err != nil || g.Replicas() != 1 {
			t.Fatalf("heartbeat %d: %d replicas (%v), want 1", i, g.Replicas(), err)
		}
	}
	if g.othersAlive() {
		t.Fatal("another replica alive on SQLite")
	}
	if rs.removes != 2 {
		t.Errorf("replicas of earlier runs deleted %d times in 5 counts, want 2 (the first failed)", rs.removes)
	}
	if n, err := mem.Replicas(ctx, now.Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("%d rows left in the replicas table (%v), want this gateway's alone", n, err)
	}
}
