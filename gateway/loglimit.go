package gateway

import (
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Refusal lines are what any peer on the network can make the gateway write,
// once per connection or attempt: a client certificate of another CA, a
// session without a certificate, an enrollment with a wrong token. Each
// kind (message) gets at most refusalLinesPerWindow lines per
// refusalWindow, so nobody can flood the log; the first line let through
// after some were held back says how many in similar_lines_suppressed.
const (
	refusalLinesPerWindow = 20
	refusalWindow         = time.Minute
	maxRefusalKinds       = 64 // messages tracked; beyond, lines pass unlimited
)

// refusalPrefixes are the messages limited.
var refusalPrefixes = [...]string{"agent refused", "enrollment refused"}

func isRefusal(msg string) bool {
	for _, p := range refusalPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// limitRefusals wraps log so that refusal lines are limited; all other
// lines pass as they are. Loggers derived from the result share the limits.
func limitRefusals(log *zap.Logger, now func() time.Time) *zap.Logger {
	limits := &refusalLimits{now: now, byMsg: make(map[string]*logLimiter)}
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &refusalCore{Core: c, limits: limits}
	}))
}

type refusalLimits struct {
	now   func() time.Time
	mu    sync.Mutex
	byMsg map[string]*logLimiter // guarded by mu
}

func (l *refusalLimits) limiter(msg string) *logLimiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	ll := l.byMsg[msg]
	if ll == nil && len(l.byMsg) < maxRefusalKinds {
		ll = &logLimiter{max: refusalLinesPerWindow, window: refusalWindow}
		l.byMsg[msg] = ll
	}
	return ll
}

// refusalCore drops refusal lines over their limit and adds the count of
// held-back lines to the next one.
type refusalCore struct {
	zapcore.Core
	limits *refusalLimits
}

func (c *refusalCore) With(fields []zapcore.Field) zapcore.Core {
	return &refusalCore{Core: c.Core.With(fields), limits: c.limits}
}

func (c *refusalCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !c.Enabled(ent.Level) {
		return ce
	}
	if !isRefusal(ent.Message) {
		return c.Core.Check(ent, ce)
	}
	ll := c.limits.limiter(ent.Message)
	if ll == nil {
		return c.Core.Check(ent, ce)
	}
	ok, suppressed := ll.allow(c.limits.now())
	switch {
	case !ok:
		return ce
	case suppressed == 0:
		return c.Core.Check(ent, ce)
	}
	return ce.AddCore(ent, &countingCore{Core: c.Core, suppressed: suppressed})
}

// countingCore writes one entry with the number of lines held back before it.
type countingCore struct {
	zapcore.Core
	suppressed int
}

func (c *countingCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	return c.Core.Write(ent, append(fields, zap.Int("similar_lines_suppressed", c.suppressed)))
}

// logLimiter lets at most max lines through per window.
type logLimiter struct {
	max    int           // lines per window
	window time.Duration // window length

	mu         sync.Mutex
	start      time.Time // of the current window
	n          int       // lines let through in it
	suppressed int       // lines held back since the last one let through
}

// allow reports whether a line may be logged now, and how many were held
// back before it (to be logged with it).
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.window || now.Before(l.start) {
		l.start, l.n = now, 0
	}
	if l.n >= l.max {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
