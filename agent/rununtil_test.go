package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// runAgentUntil runs an agent of cfg (its Log replaced by one that records
// at info and above) until a log entry satisfies until or timeout passes,
// then stops it; Run must return nil. It returns the recorded logs and
// whether until was met. until may be called from several goroutines at
// once and after it was met.
func runAgentUntil(t *testing.T, cfg Config, until func(zapcore.Entry) bool, timeout time.Duration) (*observer.ObservedLogs, bool) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	met := make(chan struct{})
	var once sync.Once
	cfg.Log = zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if until(e) {
			once.Do(func() { close(met) })
		}
		return nil
	}))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	ok := true
	select {
	case <-met:
	case <-time.After(timeout):
		ok = false
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	return logs, ok
}
