package agent

import (
	"fmt"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	msgSpreadKept = "no session on another gateway replica after several tries; keeping this one " +
		"(later moves try once until a session lands on another replica)"
	msgSpreadCovered = "the agent's sessions cover every gateway replica"
	msgSpreadFewer   = "fewer connections than gateway replicas: the replicas without a session of this agent " +
		"answer its group's users 503 unless another agent of the group holds one there; " +
		"set connections to at least the number of replicas"
)

func newObservedSpread() (*spread, *zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return newSpread(), zap.New(core), logs
}

// TestSpreadUnknownReplicas: a gateway that does not say how many replicas
// there are (0, older gateways), or a lone one, changes nothing: every
// session is kept, and nothing is logged.
func TestSpreadUnknownReplicas(t *testing.T) {
	s, log, logs := newObservedSpread()
	for _, c := range []struct {
		replica  string
		replicas uint32
	}{{"", 0}, {"a", 0}, {"a", 1}, {"", 2}} {
		for slot := range 2 {
			if s.place(slot, 2, c.replica, c.replicas, log) {
				t.Fatalf("replica %q of %d: slot %d dials again; want kept", c.replica, c.replicas, slot)
			}
		}
	}
	if logs.Len() != 0 {
		t.Fatalf("logged %v", logs.All())
	}
}

// TestSpreadCovers: with two replicas and two slots, a slot whose session
// shares a replica with the other slot's dials again, at most spreadTries
// times, then keeps it with one line; once a session lands on the other
// replica the agent logs, once, that its sessions cover every replica.
func TestSpreadCovers(t *testing.T) {
	s, log, logs := newObservedSpread()
	if s.place(0, 2, "a", 2, log) {
		t.Fatal("the first session dials again")
	}
	for i := range spreadTries {
		if !s.place(1, 2, "a", 2, log) {
			t.Fatalf("try %d: a second session on replica a is kept while b has none", i+1)
		}
	}
	if s.place(1, 2, "a", 2, log) {
		t.Fatalf("still dialling again after %d tries", spreadTries)
	}
	if n := logs.FilterMessage(msgSpreadKept).Len(); n != 1 {
		t.Fatalf("%q logged %d times, want once", msgSpreadKept, n)
	}
	if n := logs.FilterMessage(msgSpreadCovered).Len(); n != 0 {
		t.Fatal("logged that both replicas are covered while both sessions are on a")
	}

	// The slot loses its session; the next lands on b.
	s.leave(1)
	if s.place(1, 2, "b", 2, log) {
		t.Fatal("a session on the uncovered replica dials again")
	}
	// A move of slot 0 to a again (a drain, a renewal) keeps the coverage.
	if s.place(0, 2, "a", 2, log) {
		t.Fatal("a session on a replica no other slot holds dials again")
	}
	if n := logs.FilterMessage(msgSpreadCovered).Len(); n != 1 {
		t.Fatalf("%q logged %d times, want once", msgSpreadCovered, n)
	}
	// The tries start again for the next placement: bounded per placement.
	if !s.place(0, 2, "b", 2, log) {
		t.Fatal("slot 0 moved onto b, where slot 1 is, while a has none: want a new try")
	}
	if logs.FilterLevelExact(zap.WarnLevel).Len() != 0 {
		t.Fatalf("warnings with enough connections: %v", logs.FilterLevelExact(zap.WarnLevel).All())
	}
}

// TestSpreadStuckTriesOnce: an agent given one replica's own address while
// two are alive keeps a session on it after spreadTries re-dials; its later
// moves (a renewal, a drain) try once each, not spreadTries times, and say
// nothing new, until a session lands on the other replica: then a move
// gets all its tries again.
func TestSpreadStuckTriesOnce(t *testing.T) {
	s, log, logs := newObservedSpread()
	s.place(0, 2, "a", 2, log)
	if n := redials(s, log, 1, "a", 2); n != spreadTries {
		t.Fatalf("first placement: %d re-dials, want %d", n, spreadTries)
	}
	for _, slot := range []int{1, 0, 1} {
		if n := redials(s, log, slot, "a", 2); n != 1 {
			t.Fatalf("slot %d's move while stuck: %d re-dials, want 1", slot, n)
		}
	}
	if n := logs.FilterMessage(msgSpreadKept).Len(); n != 1 {
		t.Fatalf("%q logged %d times, want once", msgSpreadKept, n)
	}
	// Another replica count is another situation: all the tries again.
	s.place(0, 2, "a", 3, log)
	if n := redials(s, log, 1, "a", 3); n != spreadTries {
		t.Fatalf("first placement at 3 replicas: %d re-dials, want %d", n, spreadTries)
	}

	// A session on the other replica shows that spreading works.
	s2, log2, _ := newObservedSpread()
	s2.place(0, 2, "a", 2, log2)
	redials(s2, log2, 1, "a", 2)
	if !s2.place(1, 2, "a", 2, log2) || s2.place(1, 2, "b", 2, log2) {
		t.Fatal("stuck slot 1: want one re-dial, then its session on b kept")
	}
	if n := redials(s2, log2, 0, "b", 2); n != spreadTries {
		t.Fatalf("after a session landed on b: %d re-dials, want %d", n, spreadTries)
	}
}

// redials places slot's sessions (one of 2 slots) on replica of replicas
// until one is kept, and returns how many were let go (at most
// spreadTries+1).
func redials(s *spread, log *zap.Logger, slot int, replica string, replicas uint32) (n int) {
	for s.place(slot, 2, replica, replicas, log) {
		if n++; n > spreadTries {
			break
		}
	}
	return n
}

// TestSpreadFewerSlotsThanReplicas: with three replicas and two slots, the
// agent warns once, naming both numbers, spreads its two sessions over two
// replicas, and never claims to cover every replica.
func TestSpreadFewerSlotsThanReplicas(t *testing.T) {
	s, log, logs := newObservedSpread()
	s.place(0, 2, "a", 3, log)
	if !s.place(1, 2, "a", 3, log) {
		t.Fatal("a second session on a is kept while two other replicas have none")
	}
	if s.place(1, 2, "b", 3, log) {
		t.Fatal("a session on b dials again")
	}
	s.place(0, 2, "a", 3, log)
	warns := logs.FilterMessage(msgSpreadFewer)
	if warns.Len() != 1 {
		t.Fatalf("%q logged %d times, want once", msgSpreadFewer, warns.Len())
	}
	if f := warns.All()[0].ContextMap(); fmt.Sprint(f["replicas"], f["connections"]) != "3 2" {
		t.Fatalf("warning fields %v, want replicas 3 and connections 2", f)
	}
	if logs.FilterMessage(msgSpreadCovered).Len() != 0 {
		t.Fatal("claims to cover every replica with two sessions for three replicas")
	}
}

// TestSpreadHugeReplicaCount: a replica count of 2^31 or more (nonsense
// from a gateway, but a uint32 on the wire) still means fewer connections
// than replicas: on 32 bits an int conversion made it negative, and the
// agent claimed to cover every replica. It fails only where an int is 32
// bits (make test32).
func TestSpreadHugeReplicaCount(t *testing.T) {
	s, log, logs := newObservedSpread()
	s.place(0, 2, "a", 1<<31, log)
	s.place(1, 2, "b", 1<<31, log)
	if logs.FilterMessage(msgSpreadFewer).Len() != 1 {
		t.Errorf("%q logged %d times for 2^31 replicas and 2 connections, want once", msgSpreadFewer, logs.FilterMessage(msgSpreadFewer).Len())
	}
	if logs.FilterMessage(msgSpreadCovered).Len() != 0 {
		t.Error("claims to cover every one of 2^31 replicas with two sessions")
	}
}

// TestSpreadMoreSlotsThanReplicas: with more slots than replicas, a slot
// that lands on a replica another slot holds keeps its session once every
// replica is covered.
func TestSpreadMoreSlotsThanReplicas(t *testing.T) {
	s, log, logs := newObservedSpread()
	s.place(0, 3, "a", 2, log)
	s.place(1, 3, "b", 2, log)
	if s.place(2, 3, "a", 2, log) {
		t.Fatal("a third session dials again although both replicas are covered")
	}
	if n := logs.FilterMessage(msgSpreadCovered).Len(); n != 1 {
		t.Fatalf("%q logged %d times, want once", msgSpreadCovered, n)
	}
	if logs.FilterLevelExact(zap.WarnLevel).Len() != 0 {
		t.Fatal("warned with more connections than replicas")
	}
}

// TestSpreadReplacementOfDrainedSession: a gateway rebalancing its
// sessions drains one of the two an agent holds there. The slot's own
// drained session, still serving while its replacement comes up, does not
// count as covering its replica: a replacement that lands back there is
// let go only because the other slot holds that replica too, and one that
// lands on the replica that has none is kept.
func TestSpreadReplacementOfDrainedSession(t *testing.T) {
	s, log, _ := newObservedSpread()
	// Both on A while A was alone.
	for slot := range 2 {
		if s.place(slot, 2, "a", 1, log) {
			t.Fatalf("slot %d dials again with one replica", slot)
		}
	}
	// B joined; A drains slot 0's session.
	if !s.place(0, 2, "a", 2, log) {
		t.Fatal("slot 0's replacement on A, which slot 1 holds, is kept; want another dial")
	}
	if s.place(0, 2, "b", 2, log) {
		t.Fatal("slot 0's replacement on B, which no session holds, is let go")
	}
	// Spread already (slot 0 on A, slot 1 on B): a replacement of slot 0
	// on A is covered only by slot 0's own drained session, and is kept.
	s2, log2, _ := newObservedSpread()
	s2.place(0, 2, "a", 2, log2)
	s2.place(1, 2, "b", 2, log2)
	if s2.place(0, 2, "a", 2, log2) {
		t.Fatal("slot 0's replacement on A, covered only by its own drained session, is let go")
	}
}
