// Package watchctx is a context for tests that reports every watch
// registered on it, to prove which code paths register with their context
// (context.AfterFunc and everything built on it).
package watchctx

import (
	"context"
	"sync"
)

// Ctx is a cancellable context that is not one of the context package's
// own, so context.AfterFunc registers through its AfterFunc method, which
// reports each registration on Watched. Values come from Background; it has
// no deadline. Make it with New.
type Ctx struct {
	context.Context
	// Watched receives one value per registration; buffered (16): a test
	// that expects more must read them.
	Watched chan struct{}

	done chan struct{}
	mu   sync.Mutex
	fns  []func() // guarded by mu
	err  error    // guarded by mu
}

// New returns a context that is not cancelled yet.
func New() *Ctx {
	return &Ctx{Context: context.Background(), Watched: make(chan struct{}, 16), done: make(chan struct{})}
}

func (c *Ctx) Done() <-chan struct{} { return c.done }

func (c *Ctx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// AfterFunc registers f to run when c is cancelled (at once, in its own
// goroutine, when it already is). The returned stop does not unregister f:
// a cancelled test context running a stopped f is harmless for the tests
// that use it.
func (c *Ctx) AfterFunc(f func()) func() bool {
	c.Watched <- struct{}{}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	c.fns = append(c.fns, f)
	return func() bool { return true }
}

// Cancel cancels c with context.Canceled and runs the registered functions.
func (c *Ctx) Cancel() {
	c.mu.Lock()
	c.err = context.Canceled
	fns := c.fns
	c.mu.Unlock()
	close(c.done)
	for _, f := range fns {
		go f()
	}
}
