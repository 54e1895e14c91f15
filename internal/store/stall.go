package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// SlowCall is how long a call of the store may take before it counts as
// stalled (see Stalled): calls take milliseconds, and the gateway's own
// bounds on a session start are 4 and 5 s. One that waits this long waits
// for the database: for a lock someone holds on a table (a migration by
// hand, VACUUM FULL, LOCK TABLE; on SQLite any write transaction of
// another process, such as the sqlite3 shell), or for a database that does
// not answer.
const SlowCall = 3 * time.Second

// callWatch follows the calls of a store for Stalled: those under way and
// the last slow one. Ping is not followed: a database that does not
// answer it is not stalled but down (/readyz reports that).
type callWatch struct {
	mu      sync.Mutex
	next    uint64
	running map[uint64]time.Time // start of each call under way
	// slowEnd and slowTook: when the last call that took SlowCall or more
	// ended, and how long it took.
	slowEnd  time.Time
	slowTook time.Duration
	// beatErr: the last heartbeat's error when the database answered it
	// with a refusal (a full disk, a read-only database), nil after one
	// that worked. Errors of a database that does not answer are left to
	// Ping and the slow calls.
	beatErr error
	beatAt  time.Time
	// downAt: when Ping last found the database not answering. The calls
	// begun before waited (or wait) for an outage, not for a lock or a
	// refusal: Stalled does not count them, so that the timeouts of an
	// outage do not read as a stall once the database answers again.
	downAt time.Time
	// isDown: the last Ping that could tell found the database not
	// answering: an outage, which Ping's callers report, not a stall.
	isDown bool
}

// begin records a call starting; end, returned, records its end.
func (w *callWatch) begin() (end func()) {
	start := time.Now()
	w.mu.Lock()
	if w.running == nil {
		w.running = make(map[uint64]time.Time)
	}
	id := w.next
	w.next++
	w.running[id] = start
	w.mu.Unlock()
	return func() {
		now := time.Now()
		w.mu.Lock()
		delete(w.running, id)
		if took := now.Sub(start); took >= SlowCall && start.After(w.downAt) {
			w.slowEnd, w.slowTook = now, took
		}
		w.mu.Unlock()
	}
}

// down records that the database did not answer a ping at at: the calls
// begun before are an outage's, forgotten by Stalled.
// up records a Ping that the database answered.
func (w *callWatch) up() {
	w.mu.Lock()
	w.isDown = false
	w.mu.Unlock()
}

func (w *callWatch) down(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.isDown = true
	if at.After(w.downAt) {
		w.downAt = at
	}
	if !w.slowEnd.After(at) {
		// Begun before it ended, so before at: an outage's too.
		w.slowEnd, w.slowTook = time.Time{}, 0
	}
}

// heartbeat records the outcome of a replica heartbeat.
func (w *callWatch) heartbeat(err error) {
	// A cancelled call (the gateway stops) was not refused either.
	if Unavailable(err) || errors.Is(err, context.Canceled) {
		return
	}
	w.mu.Lock()
	w.beatErr, w.beatAt = err, time.Now()
	w.mu.Unlock()
}

// ErrStalled says that the store's calls hang or fail although the
// database answers a ping (see Stalled).
var ErrStalled = errors.New("store stalled")

// Stalled reports (ErrStalled, saying why) whether, as of now, the store
// cannot do its work although the database answers: a call under way has
// waited SlowCall or more; a call that took that long ended within memory
// before now; or the last replica heartbeat, a write, was refused (a full
// disk, a read-only database), until one goes through. Calls begun before
// Ping last failed are not counted: they waited for an outage, which
// /readyz reports, and their timeouts are no stall; and nothing is while
// the last Ping found the database down. It only reads what
// the calls recorded: cheap enough for every scrape of a metric. now is
// real time (time.Now), as the calls' records are.
func (s *DB) Stalled(now time.Time, memory time.Duration) error {
	w := &s.calls
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.isDown {
		return nil // down, not stalled (see down)
	}
	var oldest time.Time
	for _, start := range w.running {
		if !start.After(w.downAt) {
			continue // waits for an outage (see down)
		}
		if oldest.IsZero() || start.Before(oldest) {
			oldest = start
		}
	}
	hint := "another session holds a lock on its tables (see pg_locks and pg_stat_activity), or it does not answer"
	if !s.Shared() {
		hint = "another process holds its write lock (a sqlite3 shell, a backup tool), or its disk does not answer"
	}
	switch {
	case !oldest.IsZero() && now.Sub(oldest) >= SlowCall:
		return fmt.Errorf("%w: a call to the %s database has waited %s: %s",
			ErrStalled, s.d.name, now.Sub(oldest).Round(time.Second), hint)
	case !w.slowEnd.IsZero() && now.Sub(w.slowEnd) < memory:
		return fmt.Errorf("%w: a call to the %s database took %s, %s ago: %s",
			ErrStalled, s.d.name, w.slowTook.Round(time.Second), now.Sub(w.slowEnd).Round(time.Second), hint)
	case w.beatErr != nil:
		return fmt.Errorf("%w: the %s database refused the replica heartbeat, a write, %s ago (check that its disk has room and that it takes writes): %v",
			ErrStalled, s.d.name, now.Sub(w.beatAt).Round(time.Second), w.beatErr)
	}
	return nil
}
