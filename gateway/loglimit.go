package gateway

import (
	"sync"
	"time"
)

// logLimiter lets at most max lines of one kind through per window, so that
// a peer cannot flood the log by repeating what makes the gateway log (a
// client certificate from another CA at every handshake, say). The first
// line let through after some were held back says how many.
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
