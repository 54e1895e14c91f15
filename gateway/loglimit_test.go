package gateway

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	l := &logLimiter{max: 3, window: time.Minute}
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, s := l.allow(now); !ok || s != 0 {
			t.Fatalf("line %d: %v %d", i, ok, s)
		}
	}
	for range 5 {
		if ok, _ := l.allow(now.Add(30 * time.Second)); ok {
			t.Fatal("let through over the limit")
		}
	}
	if ok, s := l.allow(now.Add(time.Minute)); !ok || s != 5 {
		t.Fatalf("next window: %v, suppressed %d; want true, 5", ok, s)
	}
	if ok, s := l.allow(now.Add(time.Minute)); !ok || s != 0 {
		t.Fatalf("then: %v %d", ok, s)
	}
}
