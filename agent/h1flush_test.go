//go:build unix

package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// idleConn is the connection s keeps idle for backend URL u (the only one).
func idleConn(t *testing.T, s *h1Sync, u string, tls bool) *h1Conn {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.idle[h1Key{addr: pu.Host, tls: tls}]
	if len(list) != 1 {
		t.Fatalf("%d idle connections to %s, want 1", len(list), pu.Host)
	}
	return list[0]
}

// TestH1SyncFlushWaits: on a plain TCP connection, as dialled or in a
// bodyConn, the request is written from inside the wait for the response
// (flushThenWait runs twice: the write, then the wake-up), on a
// connection taken back at once; a fresh connection's first request, a
// connection idle for h1WaitFirstIdle or more, and a TLS one, write and
// read the plain way.
func TestH1SyncFlushWaits(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var d net.Dialer
	for _, tc := range []struct {
		name string
		dial backendDialFunc
	}{
		{"tcp", nil},
		{"bodyConn", withBodyConns(func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startCountedBackend(t, ok, false)
			var now atomic.Int64
			now.Store(time.Now().UnixNano())
			s := newTestH1Sync(t)
			s.Dial = tc.dial
			s.Now = func() time.Time { return time.Unix(0, now.Load()) }
			for i, want := range []int{0, 2, 0} {
				if i == 2 {
					now.Add(int64(h1WaitFirstIdle))
				}
				if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil || body != "ok" {
					t.Fatalf("request %d: %q, %v", i, body, err)
				}
				c := idleConn(t, s, b.URL, false)
				if c.raw == nil {
					t.Fatalf("request %d: a plain TCP connection without its RawConn", i)
				}
				if c.waits != want {
					t.Errorf("request %d: flushThenWait ran %d times, want %d", i, c.waits, want)
				}
				c.waits = 0
			}
			if n := b.accepted.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}

	t.Run("tls", func(t *testing.T) {
		b := startCountedBackend(t, ok, true)
		s := newTestH1Sync(t)
		s.TLS = b.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil || body != "ok" {
			t.Fatalf("%q, %v", body, err)
		}
		if c := idleConn(t, s, b.URL, true); c.raw != nil || c.waitFirst || c.waits != 0 {
			t.Errorf("TLS connection: raw %v, waitFirst %v, %d waits; want none", c.raw, c.waitFirst, c.waits)
		}
	})
}

// TestH1SyncHalfClosedIdleConn: a backend that half-closes a connection
// while it is idle and then reads what comes without answering. The wait
// of the fast path would not see the end of stream that arrived before it
// began, and would last as long as the exchange; a connection idle for
// h1WaitFirstIdle is read first, sees the end of stream and the request
// is sent again on a new connection.
func TestH1SyncHalfClosedIdleConn(t *testing.T) {
	const res = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	halfClosed := make(chan struct{})
	var first atomic.Bool
	addr, accepted := rawBackend(t, func(c net.Conn) {
		reqs := newRawRequests(c)
		if first.CompareAndSwap(false, true) {
			if _, err := reqs.next(); err != nil {
				return
			}
			io.WriteString(c, res)
			c.(*net.TCPConn).CloseWrite()
			close(halfClosed)
			io.Copy(io.Discard, c) // the next request, unanswered
			return
		}
		for {
			if _, err := reqs.next(); err != nil {
				return
			}
			io.WriteString(c, res)
		}
	})
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	s := newTestH1Sync(t)
	s.Now = func() time.Time { return time.Unix(0, now.Load()) }
	u := "http://" + addr + "/"
	if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "ok" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	<-halfClosed
	now.Add(int64(h1WaitFirstIdle))
	if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "ok" {
		t.Fatalf("request on the half-closed connection: %q, %v", body, err)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
}

// TestH1SyncReturnsWriterBeforeTheWait: the request's write buffer goes back
// to its pool once the request is written, before the response is awaited,
// so that an exchange whose backend answers late (a long poll) does not hold
// its 4 KiB.
func TestH1SyncReturnsWriterBeforeTheWait(t *testing.T) {
	release := make(chan struct{})
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "late")
	}), false)
	returned := make(chan struct{}, 4)
	h1WriterReturned = func() { returned <- struct{}{} }
	defer func() { h1WriterReturned = nil }()
	s := newTestH1Sync(t)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/")
		done <- result{body, err}
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second): // hang guard: before the fix, only the response returned it
		close(release)
		<-done
		t.Fatal("the write buffer is held while the response is awaited")
	}
	close(release)
	if r := <-done; r.err != nil || r.body != "late" {
		t.Fatalf("got %q, %v", r.body, r.err)
	}
}

// TestH1SyncFlushWaitsWholeHeadOnly: a request head larger than the write
// buffer leaves in part before flush, and the backend may answer that part
// (431 from a server with a small head limit) before the wait begins; the
// wait would not see the answer. Such a request writes and reads the plain
// way, on a connection that would otherwise take the fast path.
func TestH1SyncFlushWaitsWholeHeadOnly(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	b := startCountedBackend(t, ok, false)
	s := newTestH1Sync(t)
	now := time.Now()
	s.Now = func() time.Time { return now } // idle for no time: the fast path applies
	big := strings.Repeat("c", 2*h1WriteBufferSize)
	for i, tc := range []struct {
		cookie string
		want   int
	}{
		{"", 0}, // fresh connection
		{"small", 2},
		{big, 0},
		{"small", 2},
	} {
		if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/", "Cookie", tc.cookie); err != nil || body != "ok" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
		c := idleConn(t, s, b.URL, false)
		if c.waits != tc.want {
			t.Errorf("request %d (head of %d+ bytes): flushThenWait ran %d times, want %d", i, len(tc.cookie), c.waits, tc.want)
		}
		c.waits = 0
	}
}

// TestH1SyncUnsolicitedWhileIdle: a backend that, after a whole response,
// sends more bytes in a later write while the connection is idle (here a
// complete second response). The next request must not take them for its
// answer: the reused connection is checked before the request is written
// (in the fast path's wait, and before the first write of the plain path
// for a connection idle for h1WaitFirstIdle or more), closed, and the
// request goes out on a new connection.
func TestH1SyncUnsolicitedWhileIdle(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle time.Duration
	}{
		{"fast path", 0},
		{"plain path", h1WaitFirstIdle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const stale = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
			sent := make(chan struct{})
			var first atomic.Bool
			addr, accepted := rawBackend(t, func(c net.Conn) {
				reqs := newRawRequests(c)
				if first.CompareAndSwap(false, true) {
					// First connection: one request answered; when the test
					// says so, the stale bytes; then whatever comes is read
					// and never answered.
					if _, err := reqs.next(); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					<-sent
					io.WriteString(c, stale)
					sent <- struct{}{}
					io.Copy(io.Discard, c)
					return
				}
				for {
					if _, err := reqs.next(); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
				}
			})
			var now atomic.Int64
			now.Store(time.Now().UnixNano())
			s := newTestH1Sync(t)
			s.Now = func() time.Time { return time.Unix(0, now.Load()) }
			u := "http://" + addr + "/"
			if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "ok" {
				t.Fatalf("first request: %q, %v", body, err)
			}
			sent <- struct{}{} // the backend writes the stale bytes now
			<-sent             // and has written them
			if c := idleConn(t, s, u, false); c.raw != nil {
				waitReadable(t, c) // in the agent's socket, not just sent
			}
			now.Add(int64(tc.idle))
			_, body, err := roundTripBody(t, s, http.MethodGet, u)
			if err != nil || body != "fresh" {
				t.Fatalf("second request: %q, %v; want the answer of a new connection, \"fresh\"", body, err)
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

// waitReadable waits until c's socket holds bytes to read, without
// reading them (poll(2) through the connection's RawConn would take
// them; MSG_PEEK leaves them).
func waitReadable(t *testing.T, c *h1Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		var perr error
		if err := c.raw.Control(func(fd uintptr) {
			var b [1]byte
			n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		}); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if perr != nil && perr != syscall.EAGAIN {
			t.Fatal(perr)
		}
		runtime.Gosched()
	}
	t.Fatal("the stale bytes never reached the agent's socket")
}
