package gateway

import (
	"net/netip"
	"sync"
	"time"
)

// failLimiter counts failed enrollments per address in fixed windows; an
// address with maxFailures failures in its window is refused until the
// window ends. It holds at most maxEntries addresses. An IPv6 address counts
// as its /64, which one host usually has to itself (see limitKey).
type failLimiter struct {
	max    int              // 0 → 5
	window time.Duration    // 0 → 1 minute
	now    func() time.Time // never nil

	mu   sync.Mutex
	byIP map[string]*failEntry // guarded by mu
}

type failEntry struct {
	start time.Time
	n     int
}

const maxLimiterEntries = 10000

func (l *failLimiter) maxFailures() int {
	if l.max <= 0 {
		return 5
	}
	return l.max
}

func (l *failLimiter) windowLen() time.Duration {
	if l.window <= 0 {
		return time.Minute
	}
	return l.window
}

// entry returns ip's current window; mu must be held.
func (l *failLimiter) entry(ip string, create bool) *failEntry {
	now := l.now()
	e := l.byIP[ip]
	if e != nil && now.Sub(e.start) >= l.windowLen() {
		delete(l.byIP, ip)
		e = nil
	}
	if e == nil && create {
		if len(l.byIP) >= maxLimiterEntries {
			for k, v := range l.byIP {
				if now.Sub(v.start) >= l.windowLen() {
					delete(l.byIP, k)
				}
			}
			if len(l.byIP) >= maxLimiterEntries {
				clear(l.byIP)
			}
		}
		if l.byIP == nil {
			l.byIP = make(map[string]*failEntry)
		}
		e = &failEntry{start: now}
		l.byIP[ip] = e
	}
	return e
}

// limitKey is what failures are counted by: an IPv4 address, or an IPv6
// address's /64 (a host that picks a new address in its /64 for every
// attempt is still one host). Anything else counts as itself.
func limitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

func (l *failLimiter) blocked(ip string) bool {
	ip = limitKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(ip, false)
	return e != nil && e.n >= l.maxFailures()
}

// fail counts a failure and reports whether it is the one that blocks ip.
func (l *failLimiter) fail(ip string) bool {
	ip = limitKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(ip, true)
	e.n++
	return e.n == l.maxFailures()
}
