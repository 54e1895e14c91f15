package gateway

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
)

// hangingReplicaStore is a replica store whose database does not answer:
// RemoveReplica says how long it was given and fails as if it had waited.
type hangingReplicaStore struct {
	replicaStore
	given chan time.Duration
}

func (s *hangingReplicaStore) RemoveReplica(ctx context.Context, _ string) error {
	d, _ := ctx.Deadline()
	s.given <- time.Until(d)
	return context.DeadlineExceeded
}

// TestRemoveReplicaBoundedAtStop: a replica that stops while its database
// does not answer gives up taking itself out of the count within
// shutdownCountTimeout, as the count at shutdown does. Before, it gave the
// store trustTimeout: a gateway behind a blackholed PostgreSQL took 16.4 s
// to exit after SIGTERM with a 5 s shutdown_grace, 10 s of them after
// "gateway stopped".
func TestRemoveReplicaBoundedAtStop(t *testing.T) {
	rs := &hangingReplicaStore{given: make(chan time.Duration, 1)}
	g := &Gateway{cfg: Config{StoreSweep: time.Second}, log: zap.NewNop(), store: rs, replica: newReplicaID()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.removeReplica()
	}()
	if d := <-rs.given; d > shutdownCountTimeout {
		t.Errorf("removeReplica gives a store that does not answer %v; want at most shutdownCountTimeout (%v)", d.Round(time.Second), shutdownCountTimeout)
	}
	<-done
}
