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
