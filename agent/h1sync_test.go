package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countedBackend is an httptest server that counts the connections it
// accepted and keeps them, so that a test can close them under the client.
type countedBackend struct {
	*httptest.Server
	accepted atomic.Int32
	closed   chan struct{} // one value per connection the server saw close

	mu    sync.Mutex
	conns []net.Conn // guarded by mu
}

func startCountedBackend(t *testing.T, h http.Handler, withTLS bool) *countedBackend {
	t.Helper()
	b := &countedBackend{closed: make(chan struct{}, 1024)}
	b.Server = httptest.NewUnstartedServer(h)
	b.Config.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		case http.StateClosed, http.StateHijacked:
			b.closed <- struct{}{}
		}
	}
	if withTLS {
		// h2 on offer too, so that ALPN shows what the client asked for.
		b.EnableHTTP2 = true
		b.TLS = &tls.Config{NextProtos: []string{"h2", "http/1.1"}}
		b.StartTLS()
	} else {
		b.Start()
	}
	t.Cleanup(b.Close)
	return b
}

// closeServerSide closes every connection the server accepted so far.
func (b *countedBackend) closeServerSide() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

func newTestH1Sync(t *testing.T) *h1Sync {
	t.Helper()
	s := &h1Sync{Fallback: failingRoundTripper{t}}
	t.Cleanup(s.CloseIdleConnections)
	return s
}

// failingRoundTripper fails a test that reaches the fallback unexpectedly.
type failingRoundTripper struct{ t *testing.T }

func (f failingRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	f.t.Errorf("%s %s went to the fallback transport", req.Method, req.URL)
	return nil, errors.New("fallback")
}

// roundTripBody sends one request through rt with a 10 s bound and returns
// the response with its body read. hdr holds header names and values.
func roundTripBody(t *testing.T, rt http.RoundTripper, method, url string, hdr ...string) (*http.Response, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	res, err := rt.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res, string(body), err
}

// skipWithoutIdleCheck skips a test of connection reuse where h1Sync
// reuses none (outside Unix: h1Conn.checkable) and Backends does not use it.
func skipWithoutIdleCheck(t testing.TB) {
	t.Helper()
	if !rawWaits {
		t.Skip("outside Unix h1Sync reuses no connection and Backends does not use it (h1Conn.checkable); CI runs Linux, where this runs")
	}
}

func (s *h1Sync) idleCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nidle
}

func TestH1SyncKeepAlive(t *testing.T) {
	skipWithoutIdleCheck(t)
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}), false)
	s := newTestH1Sync(t)
	for i := range 3 {
		res, body, err := roundTripBody(t, s, http.MethodGet, fmt.Sprintf("%s/r%d", b.URL, i))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("/r%d", i); body != want || res.StatusCode != 200 {
			t.Fatalf("got %d %q, want 200 %q", res.StatusCode, body, want)
		}
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for 3 sequential requests, want 1", n)
	}
	if n := s.idleCount(); n != 1 {
		t.Errorf("%d idle connections, want 1", n)
	}
}

func TestH1SyncConcurrent(t *testing.T) {
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), false)
	s := newTestH1Sync(t)
	const workers, each = 8, 20
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil || body != "ok" {
					t.Errorf("body %q, err %v", body, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := b.accepted.Load(); n > workers {
		t.Errorf("backend accepted %d connections for %d workers", n, workers)
	}
}

func TestH1SyncConnectionClose(t *testing.T) {
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	}), false)
	tests := []struct {
		name string
		path string
		hdr  []string
	}{
		{"server says close", "/close", nil},
		{"request says close", "/", []string{"Connection", "close"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestH1Sync(t)
			before := b.accepted.Load()
			for range 2 {
				if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+tt.path, tt.hdr...); err != nil || body != "ok" {
					t.Fatalf("body %q, err %v", body, err)
				}
			}
			if n := b.accepted.Load() - before; n != 2 {
				t.Errorf("backend accepted %d connections, want 2 (none reused)", n)
			}
			if n := s.idleCount(); n != 0 {
				t.Errorf("%d idle connections, want 0", n)
			}
		})
	}
}

// TestH1SyncRetriesDeadIdleConn has the backend close a kept-alive
// connection while it is idle: the next request finds it dead and is sent
// again, once, on a fresh connection.
func TestH1SyncRetriesDeadIdleConn(t *testing.T) {
	skipWithoutIdleCheck(t)
	var hits atomic.Int32
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}), false)
	s := newTestH1Sync(t)
	if _, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil {
		t.Fatal(err)
	}
	b.closeServerSide()
	<-b.closed
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if _, _, err := roundTripBody(t, s, m, b.URL+"/"); err != nil {
			t.Fatalf("%s on a connection the backend closed: %v", m, err)
		}
	}
	if n := b.accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("backend served %d requests, want 3", n)
	}
}

// rawBackend accepts connections on loopback and runs serve on each. It
// returns the address and the number of connections accepted so far.
func rawBackend(t *testing.T, serve func(c net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), &accepted
}

// rawRequests reads the requests without body that arrive on c, one at a
// time, and returns each as the bytes it came in.
type rawRequests struct {
	raw bytes.Buffer
	br  *bufio.Reader
}

func newRawRequests(c net.Conn) *rawRequests {
	r := &rawRequests{}
	r.br = bufio.NewReader(io.TeeReader(c, &r.raw))
	return r
}

func (r *rawRequests) next() (string, error) {
	// The client sends the next request only after the response, so the
	// buffer holds one request head.
	r.raw.Reset()
	if _, err := http.ReadRequest(r.br); err != nil {
		return "", err
	}
	return r.raw.String(), nil
}

// TestH1SyncNoRetryOnFreshConn checks that a fresh connection that fails is
// not retried: the backend reads the request and hangs up.
func TestH1SyncNoRetryOnFreshConn(t *testing.T) {
	addr, accepted := rawBackend(t, func(c net.Conn) {
		newRawRequests(c).next()
	})
	s := newTestH1Sync(t)
	_, _, err := roundTripBody(t, s, http.MethodGet, "http://"+addr+"/")
	if err == nil {
		t.Fatal("request succeeded, want an error")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Errorf("err = %v, want an unexpected EOF", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

// TestH1SyncSameBytesAsTransport checks that a request goes out byte for
// byte as http.Transport writes it.
func TestH1SyncSameBytesAsTransport(t *testing.T) {
	heads := make(chan string, 2)
	addr, _ := rawBackend(t, func(c net.Conn) {
		reqs := newRawRequests(c)
		for {
			h, err := reqs.next()
			if err != nil {
				return
			}
			heads <- h
			io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		}
	})
	var p http.Protocols
	p.SetHTTP1(true)
	tr := &http.Transport{DisableCompression: true, Protocols: &p}
	defer tr.CloseIdleConnections()
	s := newTestH1Sync(t)

	tests := []struct {
		method, path, host string
		hdr                http.Header
	}{
		{http.MethodGet, "/a/b?c=d&e=%2F", "", nil},
		{http.MethodGet, "/", "app.example:8080", http.Header{
			"Accept": {"*/*"}, "X-Forwarded-For": {"192.0.2.1", "198.51.100.2"}, "User-Agent": {"curl/8"},
			"Cookie": {"a=b; c=d"}, "X-Empty": {""}}},
		{http.MethodGet, "/", "", http.Header{"User-Agent": {""}}},
		{http.MethodGet, "/", "", http.Header{"User-Agent": {"  spaced  "}, "X-Trim": {" v "}, "X-Many": {"1", "2"}}},
		{http.MethodGet, "/", "bücher.example:8080", nil}, // punycode: written by Request.Write
		{http.MethodHead, "/head", "", http.Header{"If-None-Match": {`"x"`}}},
		{http.MethodOptions, "*", "", nil},
		{http.MethodOptions, "/opt", "", nil},
	}
	for _, tt := range tests {
		var got [2]string
		for i, rt := range []http.RoundTripper{tr, s} {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, "http://"+addr+"/", http.NoBody)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Path, req.URL.RawQuery, _ = strings.Cut(tt.path, "?")
			if tt.host != "" {
				req.Host = tt.host
			}
			if tt.hdr != nil {
				req.Header = tt.hdr.Clone()
			}
			res, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			res.Body.Close()
			got[i] = <-heads
		}
		if got[0] != got[1] {
			t.Errorf("%s %s:\nhttp.Transport wrote %q\nh1Sync wrote        %q", tt.method, tt.path, got[0], got[1])
		}
	}
}

func TestH1SyncResponseFraming(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello, ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "chunks")
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "abc")
	})
	mux.HandleFunc("/close-delimited", func(w http.ResponseWriter, r *http.Request) {
		c, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
		bw.Flush()
	})
	mux.HandleFunc("/length", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "11")
		io.WriteString(w, "hello world") // not written for HEAD
	})
	mux.HandleFunc("/204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/304", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc("/103", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "after hints")
	})
	b := startCountedBackend(t, mux, false)

	tests := []struct {
		method, path string
		status       int
		body         string
		length       int64
		noBody       bool // Body is http.NoBody
		trailer      string
		reused       bool // the connection serves the next request
	}{
		{"GET", "/chunked", 200, "hello, chunks", -1, false, "", true},
		{"GET", "/trailers", 200, "body", -1, false, "abc", true},
		{"GET", "/close-delimited", 200, "until the end", -1, false, "", false},
		{"GET", "/length", 200, "hello world", 11, false, "", true},
		{"HEAD", "/length", 200, "", 11, true, "", true},
		{"GET", "/204", 204, "", 0, true, "", true},
		{"GET", "/304", 304, "", 0, true, "", true},
		{"GET", "/103", 200, "after hints", 11, false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			s := newTestH1Sync(t)
			before := b.accepted.Load()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, tt.method, b.URL+tt.path, nil)
			res, err := s.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if tt.noBody != (res.Body == http.NoBody) {
				t.Errorf("Body is NoBody: %v, want %v", res.Body == http.NoBody, tt.noBody)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status || string(body) != tt.body || res.ContentLength != tt.length {
				t.Errorf("got %d %q (length %d), want %d %q (length %d)",
					res.StatusCode, body, res.ContentLength, tt.status, tt.body, tt.length)
			}
			if got := res.Trailer.Get("X-Checksum"); got != tt.trailer {
				t.Errorf("trailer %q, want %q", got, tt.trailer)
			}
			if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/length"); err != nil || body != "hello world" {
				t.Fatalf("next request: %q, %v", body, err)
			}
			want := int32(2)
			if tt.reused {
				want = 1
			}
			if n := b.accepted.Load() - before; n != want {
				t.Errorf("two requests took %d connections, want %d", n, want)
			}
		})
	}
}

// blockingBackend answers /slow with part of a body, or with nothing, and
// then waits until the client goes away or the test ends.
func blockingBackend(t *testing.T) (*countedBackend, <-chan struct{}) {
	t.Helper()
	started := make(chan struct{}, 16)
	done := make(chan struct{})
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
		case "/body":
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, "first part")
			w.(http.Flusher).Flush()
		default:
			io.WriteString(w, "ok")
			return
		}
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}), false)
	t.Cleanup(func() { close(done) }) // runs before b.Close
	return b, started
}

func TestH1SyncCancel(t *testing.T) {
	b, started := blockingBackend(t)
	s := newTestH1Sync(t)

	t.Run("waiting for the head", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/head", nil)
		go func() {
			<-started
			cancel()
		}()
		_, err := s.RoundTrip(req)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		nextRequestDials(t, s, b)
	})

	t.Run("mid body", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/body", nil)
		res, err := s.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		buf := make([]byte, len("first part"))
		if _, err := io.ReadFull(res.Body, buf); err != nil {
			t.Fatal(err)
		}
		<-started
		cancel()
		if _, err := res.Body.Read(buf); !errors.Is(err, context.Canceled) {
			t.Fatalf("read after cancel: %v, want context.Canceled", err)
		}
		nextRequestDials(t, s, b)
	})

	t.Run("deadline", func(t *testing.T) {
		// An idle connection, so that the deadline passes while the
		// response head is awaited, not while dialling.
		if _, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/head", nil)
		_, err := s.RoundTrip(req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if code, _ := ClassifyBackendError(err); code != CodeBackendTimeout {
			t.Errorf("classified as %q, want %q", code, CodeBackendTimeout)
		}
	})
}

// nextRequestDials checks that s kept no connection to b: the next request
// dials a new one.
func nextRequestDials(t *testing.T, s *h1Sync, b *countedBackend) {
	t.Helper()
	if n := s.idleCount(); n != 0 {
		t.Errorf("%d idle connections after a cancelled request, want 0", n)
	}
	before := b.accepted.Load()
	if _, body, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil || body != "ok" {
		t.Fatalf("next request: %q, %v", body, err)
	}
	if n := b.accepted.Load() - before; n != 1 {
		t.Errorf("the next request took %d new connections, want 1", n)
	}
}

func TestH1SyncEarlyCloseDiscards(t *testing.T) {
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 1<<20))
	}), false)
	s := newTestH1Sync(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, b.URL+"/", nil)
	res, err := s.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if _, err := res.Body.Read(make([]byte, 10)); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("read after close: %v", err)
	}
	if n := s.idleCount(); n != 0 {
		t.Errorf("%d idle connections after an early close, want 0", n)
	}
	<-b.closed // the backend saw the connection go
}

func TestH1SyncHeadTooLarge(t *testing.T) {
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		big := strings.Repeat("a", 100<<10)
		if r.URL.Path == "/hints" {
			// Eleven 1xx heads of 100 KiB: each is small, together too big.
			w.Header().Set("Link", big)
			for range 11 {
				w.WriteHeader(http.StatusEarlyHints)
			}
			return
		}
		w.Header().Set("X-Big", big+big+big+big+big+big+big+big+big+big+big)
	}), false)
	s := newTestH1Sync(t)
	for _, path := range []string{"/", "/hints"} {
		_, _, err := roundTripBody(t, s, http.MethodGet, b.URL+path)
		if !errors.Is(err, errHeadTooLarge) {
			t.Errorf("%s: err = %v, want the head refused as too large", path, err)
		}
	}
}

// TestH1SyncIdleTimeout moves an injected clock past the idle timeout: the
// idle connection is closed, when the next request looks for one and when
// the sweep runs.
func TestH1SyncIdleTimeout(t *testing.T) {
	skipWithoutIdleCheck(t)
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), false)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	s := newTestH1Sync(t)
	s.IdleTimeout = time.Minute
	s.Now = func() time.Time { return time.Unix(0, now.Load()) }

	if _, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(59 * time.Second))
	if _, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil {
		t.Fatal(err)
	}
	if n := b.accepted.Load(); n != 1 {
		t.Fatalf("%d connections before the timeout, want 1", n)
	}
	now.Add(int64(61 * time.Second))
	if _, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil {
		t.Fatal(err)
	}
	if n := b.accepted.Load(); n != 2 {
		t.Errorf("%d connections after the timeout, want 2", n)
	}
	<-b.closed // the expired one

	now.Add(int64(61 * time.Second))
	s.sweepIdle()
	if n := s.idleCount(); n != 0 {
		t.Errorf("%d idle connections after the sweep, want 0", n)
	}
	<-b.closed
}

// TestH1SyncSweepWhileTaken runs the idle sweep while the only connection
// to a backend is taken by a request. The soak found agents dying of it
// (index out of range in sweepIdle, a minute and a half into mixed traffic):
// takeIdle leaves the backend's emptied list in the pool (its array is
// reused by the next put) and the sweep read its first entry.
func TestH1SyncSweepWhileTaken(t *testing.T) {
	skipWithoutIdleCheck(t)
	arrived := make(chan struct{})
	release := make(chan struct{})
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(arrived)
			select {
			case <-release: // the test's check is done
			case <-r.Context().Done():
			}
		}
	}), false)
	s := newTestH1Sync(t)
	if _, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/hold")
		done <- err
	}()
	<-arrived
	defer close(release)
	// The connection is in use: nothing to sweep. A panic would come with
	// s.mu held; it is let go so that the cleanup can close the pool.
	func() {
		defer func() {
			if p := recover(); p != nil {
				s.mu.Unlock()
				t.Fatalf("sweepIdle while the backend's only connection is in use: panic: %v", p)
			}
		}()
		s.sweepIdle()
	}()
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatalf("held request: %v", err)
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("%d connections, want the one reused", n)
	}
	if n := s.idleCount(); n != 1 {
		t.Errorf("%d idle connections after the held request, want 1", n)
	}
}

// TestH1SyncIdleBounds holds three requests at once, so that they take three
// connections, and keeps two of them.
func TestH1SyncIdleBounds(t *testing.T) {
	const held = 3
	var arrived atomic.Int32
	all := make(chan struct{})
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == held {
			close(all)
		}
		<-all
	}), false)
	s := newTestH1Sync(t)
	s.MaxIdlePerHost = held - 1
	var wg sync.WaitGroup
	for range held {
		wg.Go(func() {
			if _, _, err := roundTripBody(t, s, http.MethodGet, b.URL+"/"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := b.accepted.Load(); n != held {
		t.Fatalf("%d connections, want %d", n, held)
	}
	if n := s.idleCount(); n != held-1 {
		t.Errorf("%d idle connections, want %d", n, held-1)
	}
	<-b.closed // the one that did not fit
}

func TestH1SyncCloseIdleConnections(t *testing.T) {
	skipWithoutIdleCheck(t)
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), false)
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	if _, _, err := backendRoundTrip(t, bk, http.MethodGet, b.URL+"/", "", false); err != nil {
		t.Fatal(err)
	}
	if n := bk.profiles[0].sync.idleCount(); n != 1 {
		t.Fatalf("%d idle connections, want 1", n)
	}
	bk.CloseIdleConnections()
	if n := bk.profiles[0].sync.idleCount(); n != 0 {
		t.Errorf("%d idle connections after CloseIdleConnections", n)
	}
	<-b.closed
}

func TestH1SyncTLS(t *testing.T) {
	skipWithoutIdleCheck(t)
	var alpn atomic.Value
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		alpn.Store(r.TLS.NegotiatedProtocol)
		fmt.Fprintf(w, "%d", r.ProtoMajor)
	}), true)
	b.EnableHTTP2 = true
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
		BackendTLS{Hosts: []string{b.Listener.Addr().String()}, CAFile: writeBackendCA(t, b.Server), ServerName: "example.com"})
	for range 2 {
		body, res, err := backendRoundTrip(t, bk, http.MethodGet, b.URL+"/", "", false)
		if err != nil {
			t.Fatal(err)
		}
		if body != "1" || res.TLS == nil || res.TLS.ServerName != "example.com" {
			t.Fatalf("body %q, TLS %+v", body, res.TLS)
		}
	}
	if got := alpn.Load(); got != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", got)
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("%d connections for two requests, want 1", n)
	}
	if n := bk.profiles[1].sync.idleCount(); n != 1 {
		t.Errorf("the profile's synchronous pool holds %d connections, want 1", n)
	}
}

// TestBackendsSyncPool checks which client serves which request, by the
// connections the backend accepts: each pool keeps its own.
func TestBackendsSyncPool(t *testing.T) {
	skipWithoutIdleCheck(t)
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "test" {
			c, bw, _ := w.(http.Hijacker).Hijack()
			bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
			bw.Flush()
			c.Close()
			return
		}
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %d", r.Method, r.ProtoMajor)
	}), false)
	h2c := startH2CBackend(t, protoEchoHandler)
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	p := &bk.profiles[0]

	tests := []struct {
		name   string
		method string
		url    string
		body   string
		hdr    []string
		force  bool
		want   http.RoundTripper
		conns  int32 // connections b accepted in all after the request
	}{
		{"GET", "GET", b.URL, "", nil, false, p.sync, 1},
		{"POST with body", "POST", b.URL, "data", nil, false, p.h1, 2},
		{"GET again reuses", "GET", b.URL, "", nil, false, p.sync, 2},
		{"HEAD", "HEAD", b.URL, "", nil, false, p.sync, 2},
		{"OPTIONS", "OPTIONS", b.URL, "", nil, false, p.sync, 2},
		{"PUT without body", "PUT", b.URL, "", nil, false, p.h1, 2},
		{"GET with Expect", "GET", b.URL, "", []string{"Expect", "100-continue"}, false, p.h1, 2},
		{"upgrade", "GET", b.URL, "", []string{"Connection", "Upgrade", "Upgrade", "test"}, false, p.h1, 2},
		{"grpc", "GET", h2c, "", []string{"Content-Type", "application/grpc"}, false, p.h2, 2},
		{"forced h2", "GET", h2c, "", nil, true, p.h2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, tt.url+"/", body)
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			rt := bk.Transport(req, tt.force)
			if rt != tt.want {
				t.Fatalf("Transport picked %T %p, want %p", rt, rt, tt.want)
			}
			res, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode == http.StatusSwitchingProtocols {
				if _, ok := res.Body.(io.ReadWriteCloser); !ok {
					t.Errorf("101 body %T is not writable", res.Body)
				}
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if n := b.accepted.Load(); n != tt.conns {
				t.Errorf("backend has accepted %d connections, want %d", n, tt.conns)
			}
		})
	}
	if n := p.sync.idleCount(); n != 1 {
		t.Errorf("synchronous pool holds %d connections, want 1", n)
	}
}

func TestH1SyncNotAllowed(t *testing.T) {
	skipWithoutIdleCheck(t)
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), false)
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:1"))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, b.URL+"/", nil)
	rt := bk.Transport(req, false)
	if rt != bk.profiles[0].sync {
		t.Fatalf("Transport picked %T, want the synchronous client", rt)
	}
	_, err := rt.RoundTrip(req)
	var na *NotAllowedError
	if !errors.As(err, &na) {
		t.Fatalf("err = %v, want *NotAllowedError", err)
	}
	if code, _ := ClassifyBackendError(err); code != CodeBackendNotAllowed {
		t.Errorf("classified as %q", code)
	}
	if n := b.accepted.Load(); n != 0 {
		t.Errorf("backend accepted %d connections", n)
	}
}

func TestH1SyncDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	_, _, err = backendRoundTrip(t, bk, http.MethodGet, "http://"+addr+"/", "", false)
	code, msg := ClassifyBackendError(err)
	if code != CodeBackendUnreachable || !strings.Contains(msg, "refused") {
		t.Errorf("classified %v as %q: %s", err, code, msg)
	}
}

func TestH1SyncInvalidHeader(t *testing.T) {
	s := newTestH1Sync(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1:1/", nil)
	req.Header.Set("X-Bad", "a\r\nInjected: yes")
	if _, err := s.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "invalid header") {
		t.Errorf("err = %v, want the header refused", err)
	}
}

func BenchmarkH1Sync(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 64))
	}))
	defer srv.Close()
	var p http.Protocols
	p.SetHTTP1(true)
	tr := &http.Transport{DisableCompression: true, Protocols: &p}
	defer tr.CloseIdleConnections()
	s := &h1Sync{}
	defer s.CloseIdleConnections()
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
	}{{"sync", s}, {"transport", tr}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
			buf := make([]byte, 128)
			for b.Loop() {
				res, err := bc.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				for err == nil {
					_, err = res.Body.Read(buf)
				}
				res.Body.Close()
			}
		})
	}
}

// TestH1SyncBodyLongerThanDeclared checks that a backend that sends more
// than its Content-Length in one write cannot make the surplus the next
// request's response: the connection is closed, not pooled. The surplus
// here is a whole response, what a backend that miscounts a reflected
// body would let a user smuggle into another user's exchange.
func TestH1SyncBodyLongerThanDeclared(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra string // header field that sends the head down ReadResponse
	}{
		{"fast head", ""},
		{"net/http head", "Connection: keep-alive\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 64 << 10
			smuggled := "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
			addr, accepted := rawBackend(t, func(c net.Conn) {
				rr := newRawRequests(c)
				for {
					head, err := rr.next()
					if err != nil {
						return
					}
					if strings.HasPrefix(head, "GET /first ") {
						c.Write([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s%s",
							tc.extra, size, strings.Repeat("a", size), smuggled)))
						continue
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
				}
			})
			s := newTestH1Sync(t)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/first", nil)
			res, err := s.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			// Read as the agent's relay does: into a buffer larger than
			// the client's read buffer.
			n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{res.Body}, make([]byte, 256<<10))
			res.Body.Close()
			if err != nil || n != size {
				t.Fatalf("first body: %d bytes, %v; want %d bytes", n, err, size)
			}
			_, body, err := roundTripBody(t, s, http.MethodGet, "http://"+addr+"/second")
			if err != nil || body != "second" {
				t.Errorf("second request: body %.40q, %v; want %q (the surplus of the first response must not answer it)", body, err, "second")
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("backend accepted %d connections, want 2 (the first one closed)", n)
			}
		})
	}
}

// TestBackendsSyncOnlyWhereChecked: Backends gives requests to h1Sync only
// where it can check a reused connection for bytes sent while it was idle
// (h1Conn.checkable): on Unix. Elsewhere net/http's Transport serves them.
func TestBackendsSyncOnlyWhereChecked(t *testing.T) {
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	p := &bk.profiles[0]
	want := http.RoundTripper(p.h1)
	if rawWaits {
		want = p.sync
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1:1/", nil)
	if rt := bk.Transport(req, false); rt != want {
		t.Errorf("Transport picked %T %p, want %p (rawWaits %v)", rt, rt, want, rawWaits)
	}
}
