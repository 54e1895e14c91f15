package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitContext(t *testing.T) {
	t.Run("times out", func(t *testing.T) {
		c := newWaitContext(t.Context(), time.Millisecond)
		defer c.stop()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("Done not closed after the wait")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v, want DeadlineExceeded", c.Err())
		}
	})
	t.Run("parent cancel", func(t *testing.T) {
		parent, cancel := context.WithCancel(t.Context())
		c := newWaitContext(parent, time.Hour)
		defer c.stop()
		done := c.Done()
		if c.Err() != nil {
			t.Fatalf("Err = %v before anything ended", c.Err())
		}
		cancel()
		<-done
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err = %v, want Canceled", c.Err())
		}
	})
	t.Run("deadline is the earlier one", func(t *testing.T) {
		parent, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		pd, _ := parent.Deadline()
		c := newWaitContext(parent, time.Hour)
		if d, ok := c.Deadline(); !ok || !d.Equal(pd) {
			t.Errorf("Deadline = %v, %v; want the parent's %v", d, ok, pd)
		}
		c2 := newWaitContext(t.Context(), time.Second)
		if d, ok := c2.Deadline(); !ok || !d.Equal(c2.deadline) {
			t.Errorf("Deadline = %v, %v; want %v", d, ok, c2.deadline)
		}
	})
	t.Run("stop before use", func(t *testing.T) {
		c := newWaitContext(t.Context(), time.Hour)
		c.stop()
		select {
		case <-c.Done():
		default:
			t.Fatal("Done open after stop")
		}
		if c.Err() == nil {
			t.Error("Err nil although Done is closed")
		}
		if c.timed != nil {
			t.Error("stop made a timer")
		}
	})
	t.Run("stop after use releases the timer", func(t *testing.T) {
		c := newWaitContext(t.Context(), time.Hour)
		done := c.Done()
		c.stop()
		<-done
		if c.Err() == nil {
			t.Error("Err nil although Done is closed")
		}
		// Nothing of the timer is kept: an exchange that waited for its
		// stream may then wait long for its response.
		if c.timed != nil || c.cancel != nil {
			t.Error("the timer is still referenced after stop")
		}
		select {
		case <-c.Done():
		default:
			t.Fatal("Done open after stop")
		}
	})
}
