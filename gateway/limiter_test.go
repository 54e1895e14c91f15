package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestFailLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &failLimiter{max: 3, window: time.Minute, now: func() time.Time { return now }}
	for i := range 3 {
		if l.blocked("a") {
			t.Fatalf("blocked after %d failures", i)
		}
		if got := l.fail("a"); got != (i == 2) {
			t.Fatalf("fail %d reported block %v", i, got)
		}
	}
	if !l.blocked("a") || l.blocked("b") {
		t.Fatal("the limit is not per address")
	}
	now = now.Add(time.Minute)
	if l.blocked("a") {
		t.Fatal("still blocked after the window")
	}
	// IPv6 counts per /64; IPv4 per address, also written as v4-mapped IPv6.
	for range 3 {
		l.fail("2001:db8:1:2::1")
	}
	if !l.blocked("2001:db8:1:2:ffff::9") || l.blocked("2001:db8:1:3::1") {
		t.Error("the IPv6 limit is not per /64")
	}
	for range 3 {
		l.fail("192.0.2.1")
	}
	if !l.blocked("::ffff:192.0.2.1") || l.blocked("192.0.2.2") {
		t.Error("the IPv4 limit is not per address")
	}
	// The table is bounded.
	for i := range maxLimiterEntries + 10 {
		l.fail(fmt.Sprint("ip", i))
	}
	if n := len(l.byIP); n > maxLimiterEntries {
		t.Fatalf("%d entries, want at most %d", n, maxLimiterEntries)
	}
}

// TestFailLimiterAcquire: attempts of one address take turns; a waiting
// attempt whose request ends gives up with its context's error, and no
// turn is left behind once every attempt is over. Another address does not
// wait.
func TestFailLimiterAcquire(t *testing.T) {
	l := &failLimiter{now: time.Now}
	release, err := l.acquire(context.Background(), "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	// Another address runs at once.
	other, err := l.acquire(context.Background(), "192.0.2.2")
	if err != nil {
		t.Fatal(err)
	}
	other()

	// A second attempt of the first address waits, until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() {
		r, err := l.acquire(ctx, "192.0.2.1")
		if r != nil {
			r()
		}
		waited <- err
	}()
	// The first holds its turn, so the second can only end by its context.
	cancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v, want context.Canceled", err)
	}

	// A third one gets its turn once the first is released.
	got := make(chan func(), 1)
	go func() {
		r, err := l.acquire(context.Background(), "192.0.2.1")
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	release()
	(<-got)()

	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.turns) != 0 {
		t.Fatalf("turns left behind: %v", l.turns)
	}
}
