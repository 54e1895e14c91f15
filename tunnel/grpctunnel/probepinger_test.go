package grpctunnel

import (
	"bytes"
	"io"
	"runtime/metrics"
	"testing"
	"time"
)

// goroutinesCreated counts the goroutines the process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestProbesStartNoGoroutines: the gateway's liveness watch probes a
// quiet session's agent each time an exchange arms it (Probe: a PING);
// the connection's pinger writes them all, so n probes start no
// goroutine. Before, each Probe started one to write its PING (the
// pinger ran only on the agent's end).
func TestProbesStartNoGoroutines(t *testing.T) {
	in, _ := io.Pipe()
	c := &feedConn{in: in}
	p := newPingConn(c, false, 0, 0) // the gateway's end: no pings of its own
	defer p.Close()
	p.Write(frame(6)) // SETTINGS
	const n = 100
	before := goroutinesCreated()
	for i := range n {
		p.Probe()
		deadline := time.Now().Add(10 * time.Second)
		for p.probing.Load() || p.wrote.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("probe %d was not written", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		p.last.Store(p.wrote.Load() + 1) // the agent answers: the next exchange's arming probes again
	}
	created := goroutinesCreated() - before
	if pings := bytes.Count(c.written(), pingFrame[:]); pings != n {
		t.Fatalf("%d probes wrote %d PINGs, want %d", n, pings, n)
	}
	if created >= n/4 {
		t.Fatalf("%d probes started %d goroutines, want none (the pinger writes them)", n, created)
	}
	t.Logf("%d probes, %d goroutines started meanwhile (the process's, any)", n, created)
}
