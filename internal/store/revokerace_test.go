package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestRevokeConnectorFirstOnce: of revokes of one connector at the same
// instant, on two handles (two replicas), exactly one says it revoked it;
// the others find it revoked, at the winner's time.
func TestRevokeConnectorFirstOnce(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		a, b := d.open(t), d.open(t)
		if err := a.AddConnector(ctx, Connector{ID: "c1", Name: "edge", Group: "g", Enrolled: time.Now()}); err != nil {
			t.Fatal(err)
		}
		const n = 16
		base := time.Now()
		var firsts atomic.Int32
		times := make([]time.Time, n)
		alternate(n, a, b, func(i int, s *DB) {
			c, first, err := s.RevokeConnectorFirst(ctx, "c1", base.Add(time.Duration(i+1)*time.Second))
			if err != nil {
				t.Errorf("revoke %d: %v", i, err)
				return
			}
			if first {
				firsts.Add(1)
			}
			times[i] = c.Revoked
		})
		if got := firsts.Load(); got != 1 {
			t.Fatalf("%d of %d revokes say they revoked the connector, want exactly 1", got, n)
		}
		for i, at := range times {
			if !at.Equal(times[0]) {
				t.Errorf("revoke %d sees revoked at %v, revoke 0 at %v: one revocation time", i, at, times[0])
			}
		}
		if _, first, err := a.RevokeConnectorFirst(ctx, "c1", time.Now()); err != nil || first {
			t.Errorf("revoke again: first %v, %v; want false, nil", first, err)
		}
		if _, first, err := a.RevokeConnectorFirst(ctx, "nope", time.Now()); !errors.Is(err, ErrNotFound) || first {
			t.Errorf("revoke unknown: first %v, %v; want false, ErrNotFound", first, err)
		}
	})
}
