package gateway

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
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

func TestLimitRefusals(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	now := time.Unix(1000, 0)
	log := limitRefusals(zap.New(core), func() time.Time { return now })
	a, b := log.Named("tunnel").With(zap.String("remote", "x")), log.Named("enroll")
	for i := range 25 {
		a.Warn("agent refused: unauthenticated", zap.Int("i", i))
		b.Warn("agent refused: unauthenticated", zap.Int("i", i)) // the same kind: shares the limit
		b.Warn("enrollment refused", zap.Int("i", i))
		a.Info("agent session started", zap.Int("i", i)) // not a refusal
		log.Debug("agent refused: debug is off")
	}
	count := func(msg string) int { return logs.FilterMessage(msg).Len() }
	if n := count("agent refused: unauthenticated"); n != refusalLinesPerWindow {
		t.Errorf("%d unauthenticated lines, want %d", n, refusalLinesPerWindow)
	}
	if n := count("enrollment refused"); n != refusalLinesPerWindow {
		t.Errorf("%d enrollment lines, want %d", n, refusalLinesPerWindow)
	}
	if n := count("agent session started"); n != 25 {
		t.Errorf("%d other lines, want all 25", n)
	}
	if n := logs.FilterFieldKey("similar_lines_suppressed").Len(); n != 0 {
		t.Errorf("%d lines carry a count before anything was held back", n)
	}
	now = now.Add(refusalWindow)
	a.Warn("agent refused: unauthenticated")
	last := logs.FilterMessage("agent refused: unauthenticated").All()
	f := last[len(last)-1].ContextMap()
	if f["similar_lines_suppressed"] != int64(30) || f["remote"] != "x" {
		t.Errorf("first line of the next window: %v; want 30 held back and the logger's fields", f)
	}
}

func TestLimitRefusalsKindsBounded(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := limitRefusals(zap.New(core), time.Now)
	for i := range maxRefusalKinds + 10 {
		for range refusalLinesPerWindow + 1 {
			log.Warn(fmt.Sprint("agent refused: kind ", i))
		}
	}
	// The first maxRefusalKinds kinds are limited; later ones pass whole.
	if want := maxRefusalKinds*refusalLinesPerWindow + 10*(refusalLinesPerWindow+1); logs.Len() != want {
		t.Errorf("%d lines, want %d", logs.Len(), want)
	}
}
