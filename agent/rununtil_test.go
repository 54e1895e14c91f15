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

// runningAgent is an agent started by startAgent.
type runningAgent struct {
	logs *observer.ObservedLogs
	// met is closed when the first log entry satisfies until.
	met chan struct{}
	// done is closed when Run has returned; err is what it returned.
	done   chan struct{}
	err    error
	cancel context.CancelFunc
}

// startAgent starts an agent of cfg (its Log replaced by one that records
// at info and above) whose Run is stopped by stop or at t's cleanup.
// until may be called from several goroutines at once and after it was
// met; it sees each entry after the logs recorded it.
func startAgent(t *testing.T, cfg Config, until func(zapcore.Entry) bool) *runningAgent {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	r := &runningAgent{logs: logs, met: make(chan struct{}), done: make(chan struct{})}
	var once sync.Once
	cfg.Log = zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if until(e) {
			once.Do(func() { close(r.met) })
		}
		return nil
	}))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); r.err = a.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels the agent's Run and returns what it returned.
func (r *runningAgent) stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// runAgentUntil runs an agent of cfg (its Log replaced by one that records
// at info and above) until a log entry satisfies until or timeout passes,
// then stops it; Run must return nil. It returns the recorded logs and
// whether until was met. until may be called from several goroutines at
// once and after it was met.
func runAgentUntil(t *testing.T, cfg Config, until func(zapcore.Entry) bool, timeout time.Duration) (*observer.ObservedLogs, bool) {
	t.Helper()
	r := startAgent(t, cfg, until)
	ok := true
	select {
	case <-r.met:
	case <-time.After(timeout):
		ok = false
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	return r.logs, ok
}
