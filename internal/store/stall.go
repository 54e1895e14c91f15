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
// the last slow one. Ping is not followed, but its outcome sorts the slow
// calls: a database that does not answer it is not stalled but down
// (/readyz reports that), and the calls that waited for it are no stall.
//
// A slow call is confirmed a stall when a ping answered while it had
// waited SlowCall since the database last answered again (confirmed): it
// waited for a database that answers, for a lock or a refusal, and a ping
// failing after that (a second of outage) does not make it an outage's.
// Calls not confirmed count only if they began after the database last
// answered again (upAt); a failed ping forgets those that ended.
type callWatch struct {
	mu      sync.Mutex
	next    uint64
	running map[uint64]time.Time // start of each call under way
	// slowEnd and slowTook: when the last confirmed slow call ended, and
	// how long it took. Kept when a ping fails.
	slowEnd  time.Time
	slowTook time.Duration
	// tentEnd and tentTook: the same for the last slow call not
	// confirmed, begun after upAt: a lock's or an outage's, forgotten when
	// a ping fails.
	tentEnd  time.Time
	tentTook time.Duration
	// confirmed: the calls begun at or before it were under way when a
	// ping answered, having waited SlowCall since upAt: stalls. Zero: none.
	confirmed time.Time
	// upAt: when a ping answered after one had failed (zero before any
	// failed). The calls begun before waited for the outage, at least in
	// part: they count only once confirmed.
	upAt time.Time
	// beatErr: the last heartbeat's error when the database answered it
	// with a refusal (a full disk, a read-only database), nil after one
	// that worked. Errors of a database that does not answer are left to
	// Ping and the slow calls.
	beatErr error
	beatAt  time.Time
	// isDown: the last Ping that could tell found the database not
	// answering: an outage, which Ping's callers report, not a stall.
	isDown bool

	stallWatch // who is told of stalls as they begin and end (stalltime.go)
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
	w.begun(start)
	w.mu.Unlock()
	return func() { w.end(id) }
}

// end records the end of the call id.
func (w *callWatch) end(id uint64) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	start, ok := w.running[id]
	if !ok {
		return // ended already
	}
	delete(w.running, id)
	took := now.Sub(start)
	if took < SlowCall {
		return
	}
	switch {
	case !start.After(w.confirmed):
		w.slowEnd, w.slowTook = now, took
	case !w.isDown && start.After(w.upAt):
		w.tentEnd, w.tentTook = now, took
	default:
		return // an outage's (see callWatch)
	}
	w.endedSlow(now, start)
}

// up records a Ping that the database answered: the calls under way that
// had waited SlowCall since the database last answered again are
// confirmed stalls.
func (w *callWatch) up() {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.isDown {
		w.isDown, w.upAt = false, now
		return
	}
	if c := now.Add(-SlowCall); c.After(w.upAt) && c.After(w.confirmed) {
		w.confirmed = c
	}
}

// down records that the database did not answer a ping at at: the slow
// calls not confirmed are an outage's, forgotten by Stalled; the
// confirmed ones are kept, and Stalled reports nothing until a ping
// answers again.
func (w *callWatch) down(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.isDown = true
	if !w.tentEnd.After(at) {
		// Begun before it ended, so before at: an outage's too.
		w.tentEnd, w.tentTook = time.Time{}, 0
	}
}

// counts reports whether a call begun at start is counted by Stalled (see
// callWatch).
func (w *callWatch) counts(start time.Time) bool {
	return !start.After(w.confirmed) || start.After(w.upAt)
}

// lastSlow is when the last slow call that Stalled counts ended, and how
// long it took.
func (w *callWatch) lastSlow() (time.Time, time.Duration) {
	if w.tentEnd.After(w.slowEnd) {
		return w.tentEnd, w.tentTook
	}
	return w.slowEnd, w.slowTook
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
// disk, a read-only database), until one goes through. Nothing is while
// the last Ping found the database down; once it answers again, the slow
// calls that waited for the outage are not counted (they are no stall),
// but those a ping confirmed before it are (see callWatch). It only reads
// what the calls recorded: cheap enough for every scrape of a metric.
// now is real time (time.Now), as the calls' records are.
func (s *DB) Stalled(now time.Time, memory time.Duration) error {
	w := &s.calls
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.isDown {
		return nil // down, not stalled (see down)
	}
	var oldest time.Time
	for _, start := range w.running {
		if !w.counts(start) {
			continue // waits for an outage (see callWatch)
		}
		if oldest.IsZero() || start.Before(oldest) {
			oldest = start
		}
	}
	slowEnd, slowTook := w.lastSlow()
	hint := "another session holds a lock on its tables (see pg_locks and pg_stat_activity), or it does not answer"
	if !s.Shared() {
		hint = "another process holds its write lock (a sqlite3 shell, a backup tool), or its disk does not answer"
	}
	switch {
	case !oldest.IsZero() && now.Sub(oldest) >= SlowCall:
		return fmt.Errorf("%w: a call to the %s database has waited %s: %s",
			ErrStalled, s.d.name, now.Sub(oldest).Round(time.Second), hint)
	case !slowEnd.IsZero() && now.Sub(slowEnd) < memory:
		return fmt.Errorf("%w: a call to the %s database took %s, %s ago: %s",
			ErrStalled, s.d.name, slowTook.Round(time.Second), now.Sub(slowEnd).Round(time.Second), hint)
	case w.beatErr != nil:
		return fmt.Errorf("%w: the %s database refused the replica heartbeat, a write, %s ago (check that its disk has room and that it takes writes): %v",
			ErrStalled, s.d.name, now.Sub(w.beatAt).Round(time.Second), w.beatErr)
	}
	return nil
}
