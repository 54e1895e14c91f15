package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Behind a load balancer, an agent's sessions land on gateway replicas at
// random, and a replica that holds no session of a connector group answers
// that group's users 503 no-connector. So each gateway says in its Welcome
// which replica it is and how many are alive (0: it cannot say, an older
// gateway). When a slot's new session lands on a replica that another slot
// already holds while fewer than min(replicas, connections) replicas are
// covered, the slot lets the session go (it is new and carries nothing
// yet) and dials again after a short jittered pause, at most spreadTries
// times before it keeps what it got. The same holds for the sessions a
// slot moves to (renewal, QUIC, a gateway's drain): the move ends in a new
// session, which is placed like any other. Once a slot has kept a session
// after spreadTries (an agent given one replica's own address, or a load
// balancer that pins it), later placements at the same replica count try
// once, not spreadTries times, until a session lands on a replica no other
// slot holds: each move would otherwise cost spreadTries dials and about
// a second.

// spreadTries bounds the re-dials of one slot looking for an uncovered
// replica, each time its session comes up on a covered one.
const spreadTries = 8

// errRespread ends serve when the slot's new session shares a replica with
// another slot's: the slot dials again (after spreadPause).
var errRespread = errors.New("the session landed on a gateway replica that another session of this agent holds")

// spreadPause is the pause before a slot dials again for another replica:
// 50–250 ms, so that the slots of an agent, and the agents of a fleet, do
// not dial the load balancer in step.
func spreadPause() time.Duration {
	return 50*time.Millisecond + time.Duration(rand.Int64N(int64(200*time.Millisecond)))
}

// spread is where the slots' sessions are. Its one instance is shared by
// every slot.
type spread struct {
	mu sync.Mutex
	at map[int]string // slot → replica of the session it serves on; guarded by mu
	// tries counts each slot's re-dials since it last kept a session;
	// guarded by mu.
	tries map[int]int
	// warned is the replica count of the last "fewer connections than
	// replicas" warning (0: none); guarded by mu.
	warned uint32
	// covered: "cover all replicas" was logged and coverage has not fallen
	// since; guarded by mu.
	covered bool
	// stuck is the replica count at which a slot last kept a session after
	// spreadTries re-dials (0: none since a session last landed on a replica
	// no other slot held); guarded by mu.
	stuck uint32
}

func newSpread() *spread { return &spread{at: map[int]string{}, tries: map[int]int{}} }

// place decides for slot, one of slots, whose new session came up on
// replica while replicas are alive (both from the session's Welcome). It
// reports true when the slot should let the session go and dial again; on
// false the slot keeps it, and it counts as covering replica.
// Counts are compared as int64: on 32 bits int(replicas) of 2^31 or more
// is negative.
func (s *spread) place(slot, slots int, replica string, replicas uint32, log *zap.Logger) (redial bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if replicas <= 1 || replica == "" {
		// A lone gateway, or one that cannot say: nothing to spread over.
		s.keep(slot, replica)
		return false
	}
	if int64(slots) < int64(replicas) && s.warned != replicas {
		s.warned = replicas
		log.Warn("fewer connections than gateway replicas: the replicas without a session of this agent "+
			"answer its group's users 503 unless another agent of the group holds one there; "+
			"set connections to at least the number of replicas",
			zap.Uint32("replicas", replicas), zap.Int("connections", slots))
	}
	others := map[string]bool{}
	for sl, r := range s.at {
		if sl != slot && r != "" {
			others[r] = true
		}
	}
	if others[replica] && int64(len(others)) < min(int64(replicas), int64(slots)) {
		tries := spreadTries
		if s.stuck == replicas {
			tries = 1
		}
		if s.tries[slot] < tries {
			s.tries[slot]++
			log.Debug("this session shares a gateway replica with another of this agent; dialling again for another",
				zap.String("replica", replica), zap.Uint32("replicas", replicas), zap.Int("try", s.tries[slot]))
			return true
		}
		if s.stuck != replicas {
			s.stuck = replicas
			log.Info("no session on another gateway replica after several tries; keeping this one "+
				"(later moves try once until a session lands on another replica)",
				zap.String("replica", replica), zap.Uint32("replicas", replicas), zap.Int("tries", spreadTries),
				zap.Int("replicas_covered", len(others)))
		}
	} else if len(others) > 0 && !others[replica] {
		// Spreading works: a session landed where no other slot is.
		s.stuck = 0
	}
	s.keep(slot, replica)
	covered := map[string]bool{}
	for _, r := range s.at {
		if r != "" {
			covered[r] = true
		}
	}
	if int64(len(covered)) < int64(replicas) {
		s.covered = false
	} else if !s.covered {
		s.covered = true
		log.Info("the agent's sessions cover every gateway replica", zap.Uint32("replicas", replicas),
			zap.Int("connections", slots))
	}
	return false
}

// keep records that slot serves on replica. Guarded by s.mu.
func (s *spread) keep(slot int, replica string) {
	s.at[slot] = replica
	delete(s.tries, slot)
}

// leave records that slot has no session.
func (s *spread) leave(slot int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.at, slot)
}

// placedSession is a session that says which gateway replica holds it.
type placedSession interface {
	Replica() string
	Replicas() uint32
}

// placeSession decides for slot's new session sess: true when the slot lets
// it go (see spread.place) and dials again.
func (a *Agent) placeSession(ctx context.Context, slot int, sess clientSession, log *zap.Logger) bool {
	ps, ok := sess.(placedSession)
	if !ok {
		return false
	}
	if !a.spread.place(slot, a.connections(), ps.Replica(), ps.Replicas(), log) {
		return false
	}
	a.letGo(ctx, sess)
	return true
}

// letGo drains sess, which the agent does not use: the gateway sends it
// nothing new and closes it, and Serve returns.
func (a *Agent) letGo(ctx context.Context, sess clientSession) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.drainNow(ctx, sess, drainSpread)
	}()
}

// drainNow drains sess at once, telling the gateway reason, and returns
// when it has ended.
func (a *Agent) drainNow(ctx context.Context, sess clientSession, reason string) {
	sess.SetDrainReason(reason)
	closed := make(chan struct{})
	close(closed)
	_ = sess.Serve(ctx, a.srv, closed)
}
