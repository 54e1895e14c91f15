package logging

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// writes records each Write to it, as one string.
type writes struct {
	mu  sync.Mutex
	got []string
	err error // returned by every Write when set
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, string(p))
	return len(p), w.err
}

func (w *writes) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.got...)
}

// String is everything written so far.
func (w *writes) String() string { return strings.Join(w.list(), "") }

// fakeTimes drives a flushWriter: a clock moved by hand and the flush it
// scheduled, run by hand.
type fakeTimes struct {
	now     time.Time
	pending func()
	delay   time.Duration
}

func newFakeWriter(w *writes, every time.Duration) (*flushWriter, *fakeTimes) {
	ft := &fakeTimes{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	fw := newFlushWriter(w, every)
	fw.now = func() time.Time { return ft.now }
	fw.after = func(d time.Duration, f func()) {
		if ft.pending != nil {
			panic("a second flush scheduled while one is pending")
		}
		ft.delay, ft.pending = d, f
	}
	return fw, ft
}

// fire runs the scheduled flush at its time.
func (ft *fakeTimes) fire(t *testing.T) {
	t.Helper()
	if ft.pending == nil {
		t.Fatal("no flush was scheduled")
	}
	f := ft.pending
	ft.pending = nil
	ft.now = ft.now.Add(ft.delay)
	f()
}

func writeLines(t *testing.T, fw *flushWriter, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if n, err := fw.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", l, n, err)
		}
	}
}

// TestFlushWriterBatchesUnderLoad: a line after a quiet interval goes out
// at once; lines that follow within the interval wait and go out together,
// in order, one interval after the last write; then the next quiet line
// goes out at once again.
func TestFlushWriterBatchesUnderLoad(t *testing.T) {
	w := &writes{}
	fw, ft := newFakeWriter(w, 100*time.Millisecond)
	writeLines(t, fw, "a\n")
	if got := w.list(); len(got) != 1 || got[0] != "a\n" {
		t.Fatalf("the first line: written %q, want it at once", got)
	}
	ft.now = ft.now.Add(30 * time.Millisecond)
	writeLines(t, fw, "b\n", "c\n")
	ft.now = ft.now.Add(10 * time.Millisecond)
	writeLines(t, fw, "d\n")
	if got := w.list(); len(got) != 1 {
		t.Fatalf("lines within the interval were written at once: %q", got)
	}
	if ft.delay != 70*time.Millisecond {
		t.Fatalf("flush scheduled in %v, want 70ms (100ms after the last write)", ft.delay)
	}
	ft.fire(t)
	if got := w.list(); len(got) != 2 || got[1] != "b\nc\nd\n" {
		t.Fatalf("after the interval: writes %q, want the three waiting lines in one", got)
	}
	// Still busy: the next line waits for the next interval.
	ft.now = ft.now.Add(50 * time.Millisecond)
	writeLines(t, fw, "e\n")
	if ft.pending == nil || ft.delay != 50*time.Millisecond || len(w.list()) != 2 {
		t.Fatalf("a line 50ms after a batch: pending %v in %v, writes %q", ft.pending != nil, ft.delay, w.list())
	}
	ft.fire(t)
	// Quiet again: at once.
	ft.now = ft.now.Add(time.Second)
	writeLines(t, fw, "f\n")
	if got := w.list(); len(got) != 4 || got[2] != "e\n" || got[3] != "f\n" {
		t.Fatalf("writes %q, want e then f each on its own", got)
	}
	// A scheduled flush with nothing left (Sync took it) writes nothing.
	writeLines(t, fw, "g\n")
	if err := fw.Sync(); err != nil {
		t.Fatal(err)
	}
	ft.fire(t)
	if got := w.list(); len(got) != 5 || got[4] != "g\n" {
		t.Fatalf("writes %q, want g once, by Sync", got)
	}
}

// TestFlushWriterFullBatch: waiting lines go out as soon as they reach
// maxBatch bytes, without waiting for the interval, and the writer does not
// keep a burst's room.
func TestFlushWriterFullBatch(t *testing.T) {
	w := &writes{}
	fw, _ := newFakeWriter(w, time.Hour)
	writeLines(t, fw, "first\n")
	line := strings.Repeat("x", 999) + "\n"
	for range maxBatch / len(line) {
		writeLines(t, fw, line)
	}
	if got := w.list(); len(got) != 1 {
		t.Fatalf("%d writes before the batch was full, want 1", len(got))
	}
	writeLines(t, fw, line)
	got := w.list()
	if len(got) != 2 || len(got[1]) < maxBatch || strings.Count(got[1], "\n") != maxBatch/len(line)+1 {
		t.Fatalf("a full batch: %d writes, the last of %d bytes", len(got), len(got[len(got)-1]))
	}
	writeLines(t, fw, strings.Repeat("y", 3*maxBatch)+"\n") // one very long line
	if len(w.list()) != 3 || fw.buf != nil {
		t.Fatalf("a line longer than a batch: %d writes, %d bytes of room kept", len(w.list()), cap(fw.buf))
	}
}

// TestFlushWriterErrors: a failed write is returned by the Write or Sync
// that made it.
func TestFlushWriterErrors(t *testing.T) {
	w := &writes{err: errors.New("disk full")}
	fw, _ := newFakeWriter(w, 100*time.Millisecond)
	if _, err := fw.Write([]byte("a\n")); err == nil {
		t.Error("a line written at once: the writer's error was lost")
	}
	if _, err := fw.Write([]byte("b\n")); err != nil {
		t.Errorf("a waiting line: %v", err)
	}
	if err := fw.Sync(); err == nil {
		t.Error("Sync: the writer's error was lost")
	}
}

// TestWarnWritesWaitingLines: through the logger, info lines under load
// wait, and a warning goes out at once with the lines before it, in order;
// Sync writes the rest.
func TestWarnWritesWaitingLines(t *testing.T) {
	var buf writes
	log, err := build(&buf, "info", "json", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("one")
	log.Info("two")
	log.Info("three")
	if got := buf.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, `"one"`) {
		t.Fatalf("before the warning: %q, want only the first line", got)
	}
	log.Named("x").With(zap.String("k", "v")).Warn("careful")
	got := buf.String()
	if strings.Count(got, "\n") != 4 || !(strings.Index(got, `"two"`) < strings.Index(got, `"three"`) &&
		strings.Index(got, `"three"`) < strings.Index(got, `"careful"`)) {
		t.Fatalf("after the warning: %q, want one, two, three, careful", got)
	}
	log.Info("four")
	if strings.Contains(buf.String(), `"four"`) {
		t.Fatal("an info line right after the warning was written at once")
	}
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"four"`) {
		t.Fatal("Sync left a line waiting")
	}
	log.Debug("hidden")
	if err := log.Sync(); err != nil || strings.Contains(buf.String(), "hidden") {
		t.Fatalf("a debug line at info: %q, %v", buf.String(), err)
	}
}

// TestFlushWriterConcurrent: lines from many goroutines, with the real
// clock and timers, all arrive whole (run with -race).
func TestFlushWriterConcurrent(t *testing.T) {
	var buf writes
	log, err := build(&buf, "info", "console", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				log.Info(fmt.Sprintf("line %d-%d", g, i))
			}
		})
	}
	wg.Wait()
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for g := range 8 {
		for i := range 200 {
			if !strings.Contains(got, fmt.Sprintf("line %d-%d\n", g, i)) {
				t.Fatalf("line %d-%d is missing", g, i)
			}
		}
	}
	if n := strings.Count(got, "\n"); n != 1600 {
		t.Fatalf("%d lines, want 1600", n)
	}
}

func TestNegativeFlushInterval(t *testing.T) {
	_, err := New("info", "console", -time.Second)
	if err == nil || err.Error() != "--log-flush-interval -1s: must be 0 (each line at once) or a positive duration such as 100ms" {
		t.Fatalf("got %v", err)
	}
}
