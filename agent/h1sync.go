package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sallyport/sallyport/internal/rawsock"
)

// h1Sync is the agent's synchronous HTTP/1.1 client for simple requests: a
// GET, HEAD or OPTIONS without a body, upgrade or Expect (see h1SyncEligible).
// The request is written and the response read in the caller's goroutine, on
// a connection from its own keep-alive pool: no goroutine per connection and
// no channel hand-off per exchange, which is most of what http.Transport
// spends on such requests (its readLoop and writeLoop goroutines, getConn
// queueing, a 4 KiB write buffer per connection). While an exchange waits for
// its response it holds only its connection and a 4 KiB read buffer, which
// matters for long polls. Every other request goes to Fallback.
//
// Methods are safe for concurrent use.
type h1Sync struct {
	// Dial opens the TCP connection to a backend host:port: the
	// allowlist-checked dialer that the profile's http.Transport uses too.
	// Nil means a plain net.Dialer (tests only).
	Dial backendDialFunc
	// TLS is the profile's client config for https:// backends, cloned for
	// each connection with ALPN "http/1.1". Nil means the defaults.
	TLS *tls.Config
	// Fallback serves the requests h1Sync does not take. Nil means they fail.
	Fallback http.RoundTripper
	// MaxIdlePerHost bounds the idle connections kept per backend and
	// MaxIdle those kept in all; zero means backendMaxIdlePerHost and
	// backendMaxIdleConns.
	MaxIdlePerHost, MaxIdle int
	// IdleTimeout closes connections idle for longer; zero means
	// backendIdleConnTimeout.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake; zero means backendTLSTimeout.
	HandshakeTimeout time.Duration
	// Now is the clock for idle times; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	idle  map[h1Key][]*h1Conn // oldest first; guarded by mu
	nidle int                 // connections in idle; guarded by mu
	sweep *time.Timer         // closes idle connections past IdleTimeout; guarded by mu
	swept bool                // sweep is armed; guarded by mu
}

// h1MaxResponseHeaderBytes bounds a response head, 1xx heads included.
// http.Transport allows 10 MiB by default; the gateway refuses a response
// head of more than 64 KiB anyway, so 1 MiB refuses nothing that could be
// relayed and bounds what a bad backend can make the agent buffer.
const h1MaxResponseHeaderBytes = 1 << 20

// h1Key names one keep-alive pool: a backend host:port and whether it is
// reached over TLS (the TLS profile is the h1Sync's own).
type h1Key struct {
	addr string
	tls  bool
}

func (t *h1Sync) maxIdlePerHost() int {
	if t.MaxIdlePerHost > 0 {
		return t.MaxIdlePerHost
	}
	return backendMaxIdlePerHost
}

func (t *h1Sync) maxIdle() int {
	if t.MaxIdle > 0 {
		return t.MaxIdle
	}
	return backendMaxIdleConns
}

func (t *h1Sync) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return backendIdleConnTimeout
}

func (t *h1Sync) handshakeTimeout() time.Duration {
	if t.HandshakeTimeout > 0 {
		return t.HandshakeTimeout
	}
	return backendTLSTimeout
}

func (t *h1Sync) now() time.Time {
	if t.Now == nil {
		return time.Now()
	}
	return t.Now()
}

var plainDialer net.Dialer

func (t *h1Sync) dial(ctx context.Context, addr string) (net.Conn, error) {
	if t.Dial == nil {
		return plainDialer.DialContext(ctx, "tcp", addr)
	}
	return t.Dial(ctx, "tcp", addr)
}

// h1SyncEligible reports whether req can take the synchronous path: an
// idempotent method (so that a request that meets a connection the backend
// closed while it was idle can be sent again), no body, no upgrade, no
// Expect, no trailers, plain http or https.
func h1SyncEligible(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, "":
	default:
		return false
	}
	if (req.Body != nil && req.Body != http.NoBody) || req.ContentLength != 0 ||
		len(req.TransferEncoding) != 0 || len(req.Trailer) != 0 || req.URL == nil {
		return false
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return false
	}
	h := req.Header
	if len(h["Expect"]) != 0 || len(h["Upgrade"]) != 0 ||
		httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") {
		return false
	}
	return true
}

// RelaysInformational reports that RoundTrip passes the informational
// responses of req on itself (see tunnel.InformationalRelayer): unless it
// goes to Fallback.
func (t *h1Sync) RelaysInformational(req *http.Request) bool {
	return h1SyncEligible(req) && h1HostOK(req.URL.Host)
}

// RoundTrip sends req on a pooled connection, or passes it to Fallback when
// it is not eligible. The response body must be read to EOF or closed; only
// a body read to its end gives the connection back to the pool.
func (t *h1Sync) RoundTrip(req *http.Request) (*http.Response, error) {
	if !h1SyncEligible(req) {
		return t.fallback(req)
	}
	key, ok := h1KeyFor(req)
	if !ok {
		return t.fallback(req)
	}
	if err := checkHeaderFields(req.Header); err != nil {
		return nil, err
	}
	ctx := req.Context()
	c, err := t.getConn(ctx, key)
	if err != nil {
		return nil, err
	}
	res, nothingBack, err := c.roundTrip(ctx, req)
	if err == nil || !c.reused || !nothingBack || ctx.Err() != nil {
		return res, err
	}
	// Slow path: the idle connection was dead (the backend closed it while
	// it was idle) and nothing of a response came back. The request is
	// idempotent and has no body: send it once more on a fresh connection,
	// as net/http does.
	c, err = t.dialConn(ctx, key)
	if err != nil {
		return nil, err
	}
	res, _, err = c.roundTrip(ctx, req)
	return res, err
}

// fallback passes req to Fallback: requests that are not eligible, and
// hosts that need IDNA or are missing (http.Transport knows what to do, or
// which error to give).
func (t *h1Sync) fallback(req *http.Request) (*http.Response, error) {
	if t.Fallback == nil {
		return nil, errors.New("backend request: not eligible for the synchronous HTTP/1.1 client and no fallback is set")
	}
	return t.Fallback.RoundTrip(req)
}

// h1KeyFor returns the pool of req's backend. It refuses a host with
// non-ASCII bytes (http.Transport converts those with IDNA) or without a
// name.
func h1KeyFor(req *http.Request) (h1Key, bool) {
	host := req.URL.Host
	if !h1HostOK(host) {
		return h1Key{}, false
	}
	k := h1Key{addr: host, tls: req.URL.Scheme == "https"}
	if req.URL.Port() == "" {
		port := "80"
		if k.tls {
			port = defaultHTTPSPort
		}
		k.addr = net.JoinHostPort(req.URL.Hostname(), port)
	}
	return k, true
}

// h1HostOK reports whether h1Sync takes a URL's host: one with a name and
// only ASCII bytes.
func h1HostOK(host string) bool {
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			return false
		}
	}
	return true
}

// checkHeaderFields refuses what http.Transport refuses: a header name or
// value that would let a request smuggle another one.
func checkHeaderFields(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("backend request: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("backend request: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// getConn takes the most recently used idle connection for key, or dials.
// An idle TLS connection on which the backend sent something is closed
// and the next one taken (checkIdleTLS); a plain one is checked as its
// request is written (idleCheck). One that cannot be checked is closed
// too (see checkable).
func (t *h1Sync) getConn(ctx context.Context, key h1Key) (*h1Conn, error) {
	for {
		c := t.takeIdle(key)
		if c == nil {
			return t.dialConn(ctx, key)
		}
		if c.checkable() && (c.state == nil || c.checkIdleTLS() == nil) {
			return c, nil
		}
		c.close()
	}
}

func (t *h1Sync) takeIdle(key h1Key) *h1Conn {
	t.mu.Lock()
	list := t.idle[key]
	if len(list) == 0 {
		t.mu.Unlock()
		return nil
	}
	// The newest is at the end; if it is past the idle timeout, so are
	// all the others.
	c := list[len(list)-1]
	if t.now().Sub(c.idleAt) > t.idleTimeout() {
		delete(t.idle, key)
		t.nidle -= len(list)
		t.mu.Unlock()
		closeConns(list)
		return nil
	}
	list[len(list)-1] = nil
	// An emptied list stays, so that the next put reuses its array
	// (TestH1SyncAllocs); sweepIdle skips it.
	t.idle[key] = list[:len(list)-1]
	t.nidle--
	t.mu.Unlock()
	c.reused = true
	c.waitFirst = c.raw != nil
	c.checkIdle = c.raw != nil
	return c
}

// putIdle keeps c for the next request to its backend, or closes it when
// the pool is full.
func (t *h1Sync) putIdle(c *h1Conn) {
	t.mu.Lock()
	list := t.idle[c.key]
	if len(list) >= t.maxIdlePerHost() || t.nidle >= t.maxIdle() {
		t.mu.Unlock()
		c.close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[h1Key][]*h1Conn)
	}
	c.idleAt = t.now()
	t.idle[c.key] = append(list, c)
	t.nidle++
	if !t.swept {
		t.swept = true
		if t.sweep == nil {
			t.sweep = time.AfterFunc(t.idleTimeout(), t.sweepIdle)
		} else {
			t.sweep.Reset(t.idleTimeout())
		}
	}
	t.mu.Unlock()
}

// sweepIdle closes the connections idle for longer than the idle timeout
// and arms itself again while any stay idle. It runs on the timer, so that
// connections to a backend no request goes to any more are closed too.
func (t *h1Sync) sweepIdle() {
	var stale []*h1Conn
	t.mu.Lock()
	now := t.now()
	var oldest time.Time
	for key, list := range t.idle {
		if len(list) == 0 { // its connections are in use (takeIdle)
			continue
		}
		n := 0
		for n < len(list) && now.Sub(list[n].idleAt) > t.idleTimeout() {
			n++
		}
		if n > 0 {
			stale = append(stale, list[:n]...)
			clear(list[:n])
			list = list[n:]
			t.nidle -= n
			if len(list) == 0 {
				delete(t.idle, key)
				continue
			}
			t.idle[key] = list
		}
		if oldest.IsZero() || list[0].idleAt.Before(oldest) {
			oldest = list[0].idleAt
		}
	}
	t.swept = !oldest.IsZero()
	if t.swept {
		t.sweep.Reset(oldest.Add(t.idleTimeout()).Sub(now) + time.Millisecond)
	}
	t.mu.Unlock()
	closeConns(stale)
}

// CloseIdleConnections closes every idle connection.
func (t *h1Sync) CloseIdleConnections() {
	t.mu.Lock()
	var all []*h1Conn
	for _, list := range t.idle {
		all = append(all, list...)
	}
	t.idle = nil
	t.nidle = 0
	if t.sweep != nil {
		t.sweep.Stop()
	}
	t.swept = false
	t.mu.Unlock()
	closeConns(all)
}

func closeConns(cs []*h1Conn) {
	for _, c := range cs {
		c.close()
	}
}

// dialConn opens a new connection for key: TCP through Dial, then TLS for
// https with the profile's config and ALPN "http/1.1" only.
func (t *h1Sync) dialConn(ctx context.Context, key h1Key) (*h1Conn, error) {
	nc, err := t.dial(ctx, key.addr)
	if err != nil {
		return nil, err // the dialer's errors are classified as they are
	}
	c := &h1Conn{t: t, key: key, conn: nc}
	c.watch.c = c
	c.stopWatch = c.watch.stop
	if !key.tls {
		// The first request takes the plain path (waitFirst stays
		// false): a backend may speak first (a banner from a database or
		// mail server on a mistyped port), and bytes that arrived before
		// the wait began would not end it (see flush). Reused
		// connections take the fast path.
		c.raw = rawConnOf(nc)
		c.flushWait = c.flushThenWait
		c.conn = rawIO(nc)
	} else {
		c.tlsRaw = rawConnOf(nc)
		c.records = &tlsRecordConn{Conn: rawIO(nc)}
		c.conn = c.records
		if err := c.handshake(ctx, t.tlsConfig(key.addr), t.handshakeTimeout()); err != nil {
			nc.Close()
			return nil, err
		}
	}
	c.br = bufio.NewReaderSize(c, h1ReadBufferSize)
	return c, nil
}

// rawIO is nc for an h1Conn's reads and writes: a plain TCP connection
// (tcpConnOf; a bodyConn's ReadFrom is not used by an h1Conn) makes them
// without the scheduler's system-call state (package rawsock); the h1Conn
// waits for each response and each idle time, so every exchange would
// otherwise pay the scheduler for them. Anything else is nc.
func rawIO(nc net.Conn) net.Conn {
	if tc := tcpConnOf(nc); tc != nil {
		return rawsock.Wrap(tc)
	}
	return nc
}

// tlsConfig is the profile's config for one connection to addr.
func (t *h1Sync) tlsConfig(addr string) *tls.Config {
	var cfg *tls.Config
	if t.TLS != nil {
		cfg = t.TLS.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.NextProtos = []string{"http/1.1"}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	return cfg
}
