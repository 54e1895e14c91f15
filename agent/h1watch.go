package agent

import (
	"context"
	"sync"
	"time"
)

// h1WatchDelay is how long an h1Conn exchange runs before it watches its
// context: most small exchanges are over by then, and registering with the
// context (context.AfterFunc) cost five allocations and a children map on
// the exchange's context every time. A cancellation in the first
// h1WatchDelay interrupts the connection that much later at most.
const h1WatchDelay = 20 * time.Millisecond

// h1Watch interrupts an h1Conn's exchange when the exchange's context is
// cancelled. It belongs to the connection and serves its exchanges one
// after another; its timer is made once per connection.
type h1Watch struct {
	c *h1Conn

	mu      sync.Mutex
	ctx     context.Context // the current exchange's; guarded by mu
	active  bool            // between start and stop; guarded by mu
	stopCtx func() bool     // stops the context's AfterFunc; nil until watching; guarded by mu
	timer   *time.Timer     // runs fire; guarded by mu
}

// start begins an exchange on ctx: watching starts after h1WatchDelay, or
// at once when ctx is already done.
func (w *h1Watch) start(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ctx, w.active, w.stopCtx = ctx, true, nil
	// ctx.Done is not called here: on a cancelCtx it makes the channel, an
	// allocation per exchange that most never wait on. A context that is
	// never cancelled costs a timer and, past h1WatchDelay, an AfterFunc
	// that does nothing.
	switch {
	case ctx.Err() != nil:
		w.watchLocked()
	case w.timer == nil:
		w.timer = time.AfterFunc(h1WatchDelay, w.fire)
	default:
		w.timer.Reset(h1WatchDelay)
	}
}

// fire runs on the timer: the exchange is still running, so watch its
// context. A fire left over from an earlier exchange may start watching the
// next one early, which is harmless.
func (w *h1Watch) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active && w.stopCtx == nil {
		w.watchLocked()
	}
}

func (w *h1Watch) watchLocked() {
	w.stopCtx = context.AfterFunc(w.ctx, w.c.interrupt)
}

// stop ends the exchange's watch. It reports false when the interrupt ran
// (or is running): the connection then cannot be used again.
func (w *h1Watch) stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.active, w.ctx = false, nil
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.stopCtx == nil {
		return true
	}
	stopped := w.stopCtx()
	w.stopCtx = nil
	return stopped
}
