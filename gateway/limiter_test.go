package gateway

import (
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
	// The table is bounded.
	for i := range maxLimiterEntries + 10 {
		l.fail(fmt.Sprint("ip", i))
	}
	if n := len(l.byIP); n > maxLimiterEntries {
		t.Fatalf("%d entries, want at most %d", n, maxLimiterEntries)
	}
}
