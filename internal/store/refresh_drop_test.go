package store

import (
	"context"
	"testing"
	"time"
)

// TestSessionRefreshDrop: DropRefresh deletes a renewal's result and
// returns it, once; a renewal still leased, or none, gives "".
func TestSessionRefreshDrop(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		s := d.open(t)
		now := time.Unix(1700000000, 0).UTC()
		if _, _, ok, err := s.ClaimRefresh(ctx, "r1", "A", now.Add(time.Minute), now); !ok || err != nil {
			t.Fatalf("claim: %v, %v", ok, err)
		}
		if res, err := s.DropRefresh(ctx, "r1"); res != "" || err != nil {
			t.Fatalf("DropRefresh of a leased renewal = %q, %v; want nothing", res, err)
		}
		if err := s.FinishRefresh(ctx, "r1", "A", "sealed-1", now.Add(time.Hour), now); err != nil {
			t.Fatal(err)
		}
		if res, err := s.DropRefresh(ctx, "r1"); res != "sealed-1" || err != nil {
			t.Fatalf("DropRefresh = %q, %v; want sealed-1", res, err)
		}
		if res, err := s.DropRefresh(ctx, "r1"); res != "" || err != nil {
			t.Fatalf("DropRefresh again = %q, %v; want nothing", res, err)
		}
		if res, _, _, err := s.ClaimRefresh(ctx, "r1", "B", now.Add(time.Minute), now); res != "" || err != nil {
			t.Fatalf("claim after the drop returned the result %q, %v", res, err)
		}
	})
}
