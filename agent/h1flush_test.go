//go:build unix

package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
// (flushThenWait runs twice: the write, then the wake-up) on a reused
// connection, however long it was idle; a fresh connection's first
// request and a TLS connection write and read the plain way.
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
			for i, want := range []int{0, 2, 2} {
				if i == 2 {
					now.Add(int64(time.Minute)) // idle, within the idle timeout
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

// TestH1SyncIdleConnChecked: a backend that, after a whole response,
// half-closes the connection while it is idle, or sends more bytes in a
// later write (here a complete second response), then reads whatever comes
// and never answers. The next request must neither wait on that connection
// (the fast path's wait cannot see what arrived before it began) nor take
// the bytes for its answer: the reused connection is checked before the
// request is written (idleCheck, in the fast path's wait or before the
// plain path's first write, here forced by a head larger than the write
// buffer), closed unused, and the request goes out on a new connection.
// Over TLS (always the plain path) the check is checkIdleTLS, made as the
// connection leaves the pool: the misbehaviour is a close_notify or a
// record sent while idle.
func TestH1SyncIdleConnChecked(t *testing.T) {
	const stale = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
	big := strings.Repeat("c", 2*h1WriteBufferSize)
	halfClose := func(c net.Conn) { c.(interface{ CloseWrite() error }).CloseWrite() }
	unsolicited := func(c net.Conn) { io.WriteString(c, stale) }
	for _, tc := range []struct {
		name      string
		misbehave func(c net.Conn)
		cookie    string
		tls       bool
	}{
		{"half-closed, fast path", halfClose, "", false},
		{"half-closed, plain path", halfClose, big, false},
		{"unsolicited bytes, fast path", unsolicited, "", false},
		{"unsolicited bytes, plain path", unsolicited, big, false},
		{"half-closed, TLS", halfClose, "", true},
		{"unsolicited bytes, TLS", unsolicited, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			misbehave, misbehaved := make(chan struct{}), make(chan struct{})
			var first atomic.Bool
			scheme, addr, accepted, clientTLS := maybeTLSBackend(t, tc.tls, func(c net.Conn) {
				reqs := newRawRequests(c)
				if first.CompareAndSwap(false, true) {
					if _, err := reqs.next(); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					<-misbehave
					tc.misbehave(c)
					close(misbehaved)
					io.Copy(io.Discard, c) // what comes next, unanswered
					return
				}
				answerFresh(reqs, c)
			})
			s := newTestH1Sync(t)
			s.TLS = clientTLS
			u := scheme + "://" + addr + "/"
			if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "ok" {
				t.Fatalf("first request: %q, %v", body, err)
			}
			close(misbehave)
			<-misbehaved
			c := idleConn(t, s, u, tc.tls)
			raw := c.raw
			if tc.tls {
				raw = c.tlsRaw
			}
			waitReadable(t, raw) // in the agent's socket, not just sent
			_, body, err := roundTripBody(t, s, http.MethodGet, u, "Cookie", tc.cookie)
			if err != nil || body != "fresh" {
				t.Fatalf("second request: %q, %v; want the answer of a new connection, \"fresh\"", body, err)
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

// answerFresh answers each request that comes on a new connection with
// "fresh", until the connection ends.
func answerFresh(reqs *rawRequests, w io.Writer) {
	for {
		if _, err := reqs.next(); err != nil {
			return
		}
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
	}
}

// waitReadable waits until c's socket holds bytes or an end of stream to
// read, without reading them (MSG_PEEK leaves them).
func waitReadable(t *testing.T, raw syscall.RawConn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		var perr error
		if err := raw.Control(func(fd uintptr) {
			var b [1]byte
			n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		}); err != nil {
			t.Fatal(err)
		}
		if n > 0 || perr == nil { // bytes, or 0 for an end of stream
			return
		}
		if perr != nil && perr != syscall.EAGAIN {
			t.Fatal(perr)
		}
		runtime.Gosched()
	}
	t.Fatal("nothing the backend sent reached the agent's socket")
}

// testTLSConfigs are a TLS server's config with httptest's certificate and
// a client's that trusts it.
func testTLSConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	defer srv.Close()
	return srv.TLS.Clone(), srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}

// TestH1SyncTLSSurplusRecord: a TLS backend answers with a whole response
// and, in the same TCP write, a response nobody asked for: in a second
// record, or in the same record after a response that ends exactly where
// the agent's read buffer is full. Either way nothing is left in the read
// buffer and the socket is empty, but the bytes wait in the TLS connection.
// They must not answer the next request: checkIdleTLS reads them before the
// request is written, and the request goes out on a new connection.
func TestH1SyncTLSSurplusRecord(t *testing.T) {
	const stale = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
	full := "HTTP/1.1 200 OK\r\nContent-Length: 4055\r\n\r\n" + strings.Repeat("f", 4055)
	if len(full) != h1ReadBufferSize {
		t.Fatalf("the full response has %d bytes, want %d", len(full), h1ReadBufferSize)
	}
	for _, tc := range []struct {
		name   string
		writes []string // TLS writes, all in one TCP write
		body   string   // of the first response
	}{
		{"second record", []string{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", stale}, "ok"},
		{"same record, full read", []string{full + stale}, full[len(full)-4055:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverTLS, clientTLS := testTLSConfigs(t)
			serverTLS.DynamicRecordSizingDisabled = true // a record as large as the write
			var first atomic.Bool
			addr, accepted := rawBackend(t, func(c net.Conn) {
				hc := &heldConn{Conn: c}
				sc := tls.Server(hc, serverTLS)
				reqs := newRawRequests(sc)
				if first.CompareAndSwap(false, true) {
					if _, err := reqs.next(); err != nil {
						return
					}
					hc.hold = true
					for _, w := range tc.writes {
						io.WriteString(sc, w)
					}
					if hc.flush() != nil {
						return
					}
					io.Copy(io.Discard, sc)
					return
				}
				answerFresh(reqs, sc)
			})
			s := newTestH1Sync(t)
			s.TLS = clientTLS
			u := "https://" + addr + "/"
			if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != tc.body {
				t.Fatalf("first request: %.20q (%d bytes), %v", body, len(body), err)
			}
			if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "fresh" {
				t.Fatalf("second request: %q, %v; want the answer of a new connection, \"fresh\"", body, err)
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

// heldConn keeps what is written while hold is set until flush, which
// writes it at once. Owned by one goroutine.
type heldConn struct {
	net.Conn
	hold bool
	held []byte
}

func (c *heldConn) Write(p []byte) (int, error) {
	if c.hold {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *heldConn) flush() error {
	c.hold = false
	_, err := c.Conn.Write(c.held)
	return err
}

// TestH1SyncUncheckableConnNotReused: a connection that h1Sync cannot look
// at before it reuses it (no RawConn: every connection outside Unix, or a
// Dial that wraps the TCP connection) is not used for another request. A
// backend that answers a HEAD with a body in a later write (or sends more
// than its Content-Length late) would otherwise answer the next request,
// another user's, with those bytes.
func TestH1SyncUncheckableConnNotReused(t *testing.T) {
	const late = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			sent := make(chan struct{})
			var first atomic.Bool
			scheme, addr, accepted, clientTLS := maybeTLSBackend(t, withTLS, func(c net.Conn) {
				reqs := newRawRequests(c)
				if first.CompareAndSwap(false, true) {
					if _, err := reqs.next(); err != nil {
						return
					}
					// A HEAD answer, then its body in a later write.
					io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(late)))
					<-sent
					io.WriteString(c, late)
					io.Copy(io.Discard, c)
					return
				}
				answerFresh(reqs, c)
			})
			var firstConn atomic.Pointer[net.TCPConn]
			var d net.Dialer
			s := newTestH1Sync(t)
			s.TLS = clientTLS
			s.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				firstConn.CompareAndSwap(nil, c.(*net.TCPConn))
				return struct{ net.Conn }{c}, nil // no RawConn
			}
			u := scheme + "://" + addr + "/"
			if res, _, err := roundTripBody(t, s, http.MethodHead, u); err != nil || res.StatusCode != 200 {
				t.Fatalf("HEAD: %v", err)
			}
			close(sent)
			raw, err := firstConn.Load().SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			waitReadable(t, raw) // in the agent's socket, not just sent
			_, body, err := roundTripBody(t, s, http.MethodGet, u)
			if err != nil || body != "fresh" {
				t.Fatalf("next request: %q, %v; want the answer of a new connection, \"fresh\"", body, err)
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

// TestBackendsSyncConnsCheckable: the connections that Backends' own
// HTTP/1.1 client dials through the allowlist, plain and TLS, can be
// checked before they are reused (h1Conn.checkable). A dialer that wrapped
// them would turn the check off and make h1Sync reuse none.
func TestBackendsSyncConnsCheckable(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	plain := startCountedBackend(t, ok, false)
	withTLS := startCountedBackend(t, ok, true)
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
		BackendTLS{Hosts: []string{withTLS.Listener.Addr().String()}, CAFile: writeBackendCA(t, withTLS.Server), ServerName: "example.com"})
	for i, tc := range []struct {
		url  string
		sync *h1Sync
		tls  bool
	}{
		{plain.URL, bk.profiles[0].sync, false},
		{withTLS.URL, bk.profiles[1].sync, true},
	} {
		if body, _, err := backendRoundTrip(t, bk, http.MethodGet, tc.url+"/", "", false); err != nil || body != "ok" {
			t.Fatalf("%d: %q, %v", i, body, err)
		}
		if c := idleConn(t, tc.sync, tc.url, tc.tls); !c.checkable() {
			t.Errorf("%s: the connection cannot be checked for bytes sent while idle (%T)", tc.url, c.conn)
		}
	}
}

// maybeTLSBackend is rawBackend speaking TLS when withTLS: serve gets each
// connection's server side; scheme and clientTLS are the client's.
func maybeTLSBackend(t *testing.T, withTLS bool, serve func(c net.Conn)) (scheme, addr string, accepted *atomic.Int32, clientTLS *tls.Config) {
	t.Helper()
	scheme = "http"
	var serverTLS *tls.Config
	if withTLS {
		scheme = "https"
		serverTLS, clientTLS = testTLSConfigs(t)
	}
	addr, accepted = rawBackend(t, func(c net.Conn) {
		if serverTLS != nil {
			c = tls.Server(c, serverTLS)
		}
		serve(c)
	})
	return scheme, addr, accepted, clientTLS
}
