package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestSessionRefreshLease: the first claim of a renewal takes its lease;
// while it runs, other owners see it held and the holder sees it its own;
// its result is then returned to every claim, kept until it is due, and
// KeepRefresh only shortens that. A failed renewal frees the lease at
// once; a lease whose owner vanished is taken over once it ends, and the
// late owner's result does not overwrite the new owner's. Ended renewals
// are deleted on the way.
func TestSessionRefreshLease(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		a, b := d.open(t), d.open(t)
		now := time.Unix(1700000000, 0).UTC()
		lease := now.Add(20 * time.Second)
		claim := func(s *DB, id, owner string, now time.Time) (string, time.Time, bool) {
			t.Helper()
			res, kept, claimed, err := s.ClaimRefresh(ctx, id, owner, now.Add(20*time.Second), now)
			if err != nil {
				t.Fatalf("ClaimRefresh(%s, %s): %v", id, owner, err)
			}
			return res, kept, claimed
		}
		if res, _, ok := claim(a, "r1", "A", now); !ok || res != "" {
			t.Fatalf("first claim: claimed %v, result %q; want the lease", ok, res)
		}
		if res, _, ok := claim(b, "r1", "B", now.Add(time.Second)); ok || res != "" {
			t.Fatalf("claim while A holds the lease: claimed %v, result %q; want neither", ok, res)
		}
		if _, _, ok := claim(a, "r1", "A", now.Add(time.Second)); !ok {
			t.Fatal("A's claim of its own lease: not claimed")
		}
		keep := now.Add(time.Hour)
		if err := a.FinishRefresh(ctx, "r1", "A", "sealed-1", keep, now.Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		if res, kept, ok := claim(b, "r1", "B", now.Add(3*time.Second)); ok || res != "sealed-1" || !kept.Equal(keep) {
			t.Fatalf("claim after the renewal: claimed %v, result %q kept until %v; want sealed-1 until %v", ok, res, kept, keep)
		}
		short := now.Add(time.Minute)
		if err := b.KeepRefresh(ctx, "r1", short); err != nil {
			t.Fatal(err)
		}
		if err := b.KeepRefresh(ctx, "r1", keep); err != nil { // never lengthens
			t.Fatal(err)
		}
		if _, kept, _ := claim(a, "r1", "A", now.Add(4*time.Second)); !kept.Equal(short) {
			t.Fatalf("kept until %v after KeepRefresh, want %v", kept, short)
		}
		// Once it is due, the renewal can be made again (the provider
		// decides: the old refresh token is used up).
		if res, _, ok := claim(b, "r1", "B", short); !ok || res != "" {
			t.Fatalf("claim once the result is due: claimed %v, result %q; want the lease", ok, res)
		}

		// A failed renewal frees the lease for the next claim.
		claim(a, "r2", "A", now)
		if err := a.FinishRefresh(ctx, "r2", "A", "", time.Time{}, now); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := claim(b, "r2", "B", now); !ok {
			t.Fatal("claim after a failed renewal: not claimed")
		}

		// An owner that vanished: its lease is taken over when it ends.
		claim(a, "r3", "A", now)
		if _, _, ok := claim(b, "r3", "B", lease); !ok {
			t.Fatal("claim at the end of A's lease: not claimed")
		}
		if err := a.FinishRefresh(ctx, "r3", "A", "late", lease.Add(time.Hour), lease); err != nil {
			t.Fatal(err)
		}
		if err := b.FinishRefresh(ctx, "r3", "B", "sealed-3", lease.Add(time.Hour), lease); err != nil {
			t.Fatal(err)
		}
		if res, _, _ := claim(a, "r3", "A", lease); res != "sealed-3" {
			t.Fatalf("result after a lease taken over: %q, want the new owner's", res)
		}

		// Ended renewals go at the next finish.
		end := lease.Add(2 * time.Hour)
		claim(a, "r4", "A", end)
		if err := a.FinishRefresh(ctx, "r4", "A", "sealed-4", end.Add(time.Minute), end); err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := a.db.QueryRowContext(ctx, `SELECT count(*) FROM session_refreshes`).Scan(&rows); err != nil || rows != 1 {
			t.Fatalf("%d rows after a finish past the others' end (want r4 alone), %v", rows, err)
		}
	})
}

// TestSessionRefreshClaimRace: of gateways claiming one renewal at the
// same moment, exactly one gets the lease.
func TestSessionRefreshClaimRace(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		a, b := d.open(t), d.open(t)
		now := time.Unix(1700000000, 0).UTC()
		for round := range 5 {
			id := fmt.Sprint("race", round)
			const n = 8
			got := make([]bool, n)
			alternate(n, a, b, func(i int, s *DB) {
				_, _, claimed, err := s.ClaimRefresh(ctx, id, fmt.Sprint("owner", i), now.Add(time.Minute), now)
				if err != nil {
					t.Errorf("ClaimRefresh %d: %v", i, err)
				}
				got[i] = claimed
			})
			won := 0
			for _, c := range got {
				if c {
					won++
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d of %d simultaneous claims got the lease, want 1", round, won, n)
			}
		}
	})
}

// TestMigrateSchema7: a database of schema version 7 gains the renewals
// table, empty, with its state intact.
func TestMigrateSchema7(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		oldSchema(t, d, 7, `INSERT INTO signed_out (id, expires) VALUES ('s1', 9000000000000000000)`)
		s := d.open(t)
		if got, err := s.SignOuts(ctx, time.Unix(1700000000, 0)); err != nil || len(got) != 1 {
			t.Fatalf("SignOuts after the migration = %v, %v", got, err)
		}
		now := time.Unix(1700000000, 0)
		if _, _, ok, err := s.ClaimRefresh(ctx, "r", "A", now.Add(time.Minute), now); !ok || err != nil {
			t.Fatalf("ClaimRefresh after the migration: claimed %v, %v", ok, err)
		}
	})
}
