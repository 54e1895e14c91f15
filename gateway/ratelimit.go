package gateway

import (
	"context"
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

	mu    sync.Mutex
	byIP  map[string]*failEntry // guarded by mu
	turns map[string]*turn      // attempts under way, per key (see acquire); guarded by mu
}

// turn lets one attempt of a key run at a time.
type turn struct {
	slot chan struct{} // holds a value while an attempt runs; never closed
	refs int           // attempts running or waiting; guarded by failLimiter.mu
}

// acquire waits until no other attempt from ip's key is under way, so that
// every attempt sees the failures of the ones before it: attempts sent in
// parallel (many gRPC streams at once) would otherwise all pass blocked
// before the first of them failed, and the limit would not hold. Call
// release once the attempt's failure, if any, is counted.
func (l *failLimiter) acquire(ctx context.Context, ip string) (release func(), err error) {
	key := limitKey(ip)
	l.mu.Lock()
	t := l.turns[key]
	if t == nil {
		if l.turns == nil {
			l.turns = make(map[string]*turn)
		}
		t = &turn{slot: make(chan struct{}, 1)}
		l.turns[key] = t
	}
	t.refs++
	l.mu.Unlock()
	leave := func() {
		l.mu.Lock()
		if t.refs--; t.refs == 0 {
			delete(l.turns, key)
		}
		l.mu.Unlock()
	}
	select {
	case t.slot <- struct{}{}:
		return func() { <-t.slot; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
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
