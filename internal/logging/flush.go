package logging

import (
	"io"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
)

// DefaultFlushInterval is the --log-flush-interval default: lines are
// written at once while few come, and under load at most every 100 ms.
const DefaultFlushInterval = 100 * time.Millisecond

// maxBatch is how many bytes of waiting lines make flushWriter write them
// before their time.
const maxBatch = 64 << 10

// flushWriter writes log lines at once while they are few, and in batches
// while many come: a line that comes within every of the last write waits
// in a buffer, written every after that write (or as soon as maxBatch bytes
// wait). The gateway's access log, one line per exchange, then costs one
// write(2) per batch under load instead of one per exchange, which on a
// busy gateway was as much CPU as encoding the line. Lines keep their order.
// Sync writes what waits; so does every line at warn or above (flushCore).
// A process that dies without either (SIGKILL, a crash) loses at most the
// info and debug lines of the last interval. Safe for concurrent use.
//
// Not zapcore.BufferedWriteSyncer: that one holds every line, a lone one
// too, until its ticker fires (a command's only line of a minute would
// wait the interval), and its ticker goroutine runs from the first line
// until Stop, which every logger of every command (and test) would have to
// call. flushWriter holds lines only while they come faster than every,
// and needs a timer only then.
type flushWriter struct {
	w     io.Writer
	every time.Duration
	now   func() time.Time
	after func(d time.Duration, f func()) // time.AfterFunc; tests replace both

	mu    sync.Mutex
	buf   []byte    // lines waiting; guarded by mu
	last  time.Time // when w was last written; guarded by mu
	armed bool      // a flush is scheduled; guarded by mu
}

func newFlushWriter(w io.Writer, every time.Duration) *flushWriter {
	return &flushWriter{w: w, every: every, now: time.Now,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if len(f.buf) == 0 && now.Sub(f.last) >= f.every {
		f.last = now
		return f.w.Write(p)
	}
	f.buf = append(f.buf, p...) // zap reuses p once Write returns
	if len(f.buf) >= maxBatch {
		return len(p), f.flushLocked(now)
	}
	if !f.armed {
		f.armed = true
		f.after(f.every-now.Sub(f.last), f.timed)
	}
	return len(p), nil
}

// timed is the scheduled flush. An error has no caller to go to: the log
// itself is what failed.
func (f *flushWriter) timed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = false
	_ = f.flushLocked(f.now())
}

// Sync writes the waiting lines. It does not fsync: standard error is a
// terminal, a pipe or a file that the process does not own.
func (f *flushWriter) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flushLocked(f.now())
}

func (f *flushWriter) flushLocked(now time.Time) error {
	if len(f.buf) == 0 {
		return nil
	}
	_, err := f.w.Write(f.buf)
	f.last = now
	if cap(f.buf) > 2*maxBatch {
		f.buf = nil // a burst of long lines: do not keep its room
	} else {
		f.buf = f.buf[:0]
	}
	return err
}

// flushCore writes an entry at warn or above at once, with every line
// that waits before it: warnings and errors are what an operator looks for
// first, and what is lost if the process then dies.
type flushCore struct {
	zapcore.Core
	fw *flushWriter
}

func (c *flushCore) With(fields []zapcore.Field) zapcore.Core {
	return &flushCore{Core: c.Core.With(fields), fw: c.fw}
}

func (c *flushCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *flushCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	err := c.Core.Write(ent, fields)
	if ent.Level >= zapcore.WarnLevel {
		if serr := c.fw.Sync(); err == nil {
			err = serr
		}
	}
	return err
}
