package store

import (
	"context"
	"time"
)

// stallWatch tells a watcher (the gateway, WatchStalls) of the moments the
// store may have become stalled or may have stopped being, so that its log
// says so then rather than at its next heartbeat: when a call has waited
// SlowCall (at most once per SlowCall), when a call that took that long
// ended without one being told of, memory after the last slow call ended,
// and when the watcher asked to be told again (RecheckStalls). One timer,
// armed for the next of these, does it: a call costs a comparison, and
// resets the timer only when it is the first under way.
// Its fields are guarded by callWatch.mu.
type stallWatch struct {
	poke   func()          // the watcher; nil: none, nothing is armed
	memory time.Duration   // the watcher's memory (Stalled)
	done   <-chan struct{} // the watcher's context's, ending the watch
	// unwatch cancels the end of the watch registered on that context
	// (context.AfterFunc), when another watcher replaces it.
	unwatch func() bool
	timer   *time.Timer // runs fire; nil until first armed
	due     time.Time   // when timer fires; zero: not armed
	// toldUpTo: the calls begun at or before it were told of (or begun
	// before the watch).
	toldUpTo time.Time
	// toldEnd: the last slow call's end whose memory was told of.
	toldEnd time.Time
	// slowUntold: a slow call ended without a poke for it.
	slowUntold bool
	// recheckAt: when the watcher asked to be poked again (RecheckStalls);
	// zero: not asked.
	recheckAt time.Time
	// poking: fire runs poke; again: fire was due meanwhile.
	poking, again bool
}

// WatchStalls has poke called, on a goroutine of its own and one call at a
// time, when the store may have become stalled (see Stalled): a call has
// waited SlowCall (told at most once per SlowCall), or one that took that
// long ended untold; and when it may have stopped being: memory after the
// last call that took that long ended. poke is to ping the database (whose
// outcome sorts a stall from an outage, see callWatch) and then ask
// Stalled. The watch ends with ctx; calling it again with the same ctx
// only replaces poke and memory, and with another ctx replaces the
// watcher: a store has one.
func (s *DB) WatchStalls(ctx context.Context, memory time.Duration, poke func()) {
	w := &s.calls
	done := ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	watched, same := w.poke != nil, w.poke != nil && w.done == done
	w.poke, w.memory = poke, memory
	if same {
		return
	}
	w.done = done
	if !watched {
		// What happened before the watch is the watcher's first check's.
		w.toldUpTo, w.toldEnd = time.Now(), time.Now()
	}
	if w.unwatch != nil {
		// The watcher replaced (two gateways of a process on one store,
		// their checks taking turns): its context no longer ends the
		// watch, and keeps nothing of it.
		w.unwatch()
		w.unwatch = nil
	}
	if done != nil {
		w.unwatch = context.AfterFunc(ctx, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.done == done {
				w.poke, w.unwatch = nil, nil
				w.disarm()
			}
		})
	}
}

// RecheckStalls has the watcher poked again after d, once however often
// it asks meanwhile: a check that could not tell (its ping failed) while
// it says the store stalls asks it, so that the stall reads again soon
// after the database answers again (Stalled says nothing while the last
// ping failed). Without a watcher it does nothing.
func (s *DB) RecheckStalls(d time.Duration) {
	w := &s.calls
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.poke == nil || !w.recheckAt.IsZero() {
		return
	}
	w.recheckAt = time.Now().Add(d)
	w.arm(w.recheckAt)
}

// begun arms the watch for a call begun at start, if it is the first
// under way (the timer is armed for it otherwise, or for an earlier one).
func (w *callWatch) begun(start time.Time) {
	if w.poke == nil {
		return
	}
	if at := start.Add(SlowCall); w.due.IsZero() || at.Before(w.due) {
		w.arm(at)
	}
}

// endedSlow arms the watch for a slow call that ended at now: at once if
// it was not told of, and for the end of its memory.
func (w *callWatch) endedSlow(now, start time.Time) {
	if w.poke == nil {
		return
	}
	if start.After(w.toldUpTo) {
		w.slowUntold = true
		w.arm(now)
		return
	}
	w.arm(now.Add(w.memory))
}

// arm has fire run at at, unless it runs sooner.
func (w *callWatch) arm(at time.Time) {
	if !w.due.IsZero() && !at.Before(w.due) {
		return
	}
	w.due = at
	d := max(time.Until(at), 0)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire)
		return
	}
	w.timer.Reset(d)
}

func (w *callWatch) disarm() {
	if w.timer != nil {
		w.timer.Stop()
	}
	w.due = time.Time{}
}

// fire pokes the watcher if tick says so, one poke at a time.
func (w *callWatch) fire() {
	w.mu.Lock()
	w.due = time.Time{}
	if w.poking {
		w.again = true
		w.mu.Unlock()
		return
	}
	w.poking = true
	for {
		w.again = false
		poke, f := w.tick(time.Now()), w.poke
		w.mu.Unlock()
		if poke && f != nil {
			f()
		}
		w.mu.Lock()
		if !w.again {
			break
		}
	}
	w.poking = false
	w.mu.Unlock()
}

// tick reports whether the watcher is to be poked as of now, records it
// told, and arms the timer for the next moment to tell.
func (w *callWatch) tick(now time.Time) (poke bool) {
	if w.poke == nil {
		return false
	}
	if w.slowUntold {
		w.slowUntold, poke = false, true
	}
	if !w.recheckAt.IsZero() && !now.Before(w.recheckAt) {
		w.recheckAt, poke = time.Time{}, true
	}
	if oldest, ok := w.oldestUntold(); ok && !now.Before(oldest.Add(SlowCall)) {
		// Calls begun meanwhile are told with it: at most one poke per
		// SlowCall, however many calls pile up behind a lock.
		w.toldUpTo, poke = now, true
	}
	end, _ := w.lastSlow()
	if end.After(w.toldEnd) && w.memory > 0 && !now.Before(end.Add(w.memory)) {
		w.toldEnd, poke = end, true
	}
	w.armNext()
	return poke
}

// armNext arms the timer for the next moment to tell: the next call
// untold reaching SlowCall, the end of the last slow call's memory, or the
// recheck asked for.
func (w *callWatch) armNext() {
	if !w.recheckAt.IsZero() {
		w.arm(w.recheckAt)
	}
	if oldest, ok := w.oldestUntold(); ok {
		w.arm(oldest.Add(SlowCall))
	}
	if end, _ := w.lastSlow(); end.After(w.toldEnd) && w.memory > 0 {
		w.arm(end.Add(w.memory))
	}
}

// oldestUntold is the start of the oldest call under way not told of.
func (w *callWatch) oldestUntold() (oldest time.Time, ok bool) {
	for _, start := range w.running {
		if start.After(w.toldUpTo) && (!ok || start.Before(oldest)) {
			oldest, ok = start, true
		}
	}
	return oldest, ok
}
