package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// headerLog is a ResponseWriter that notes every WriteHeader call. It
// supports nothing optional (no Flush, no Hijack).
type headerLog struct {
	h     http.Header
	codes []int
	body  bytes.Buffer
}

func (w *headerLog) Header() http.Header {
	if w.h == nil {
		w.h = make(http.Header)
	}
	return w.h
}
func (w *headerLog) WriteHeader(code int)        { w.codes = append(w.codes, code) }
func (w *headerLog) Write(p []byte) (int, error) { return w.body.Write(p) }

func TestStatusRecorder(t *testing.T) {
	type op struct {
		header int    // WriteHeader(header) when non-zero
		write  string // else Write(write)
	}
	tests := []struct {
		name       string
		ops        []op
		wantStatus int
		wantBytes  int64
		wantCodes  []int // WriteHeader calls passed on
	}{
		{"nothing written", nil, 200, 0, nil},
		{"implicit 200", []op{{write: "hello"}}, 200, 5, nil},
		{"explicit", []op{{header: 404}, {write: "nope"}, {write: "!"}}, 404, 5, []int{404}},
		{"first final counts", []op{{header: 500}, {header: 200}}, 500, 0, []int{500, 200}},
		{"write then header", []op{{write: "x"}, {header: 500}}, 200, 1, []int{500}},
		{"100 continue", []op{{header: 100}, {write: "body"}}, 200, 4, []int{100}},
		{"early hints", []op{{header: 103}, {header: 103}, {header: 201}}, 201, 0, []int{103, 103, 201}},
		{"switching protocols", []op{{header: 101}}, 101, 0, []int{101}},
		{"no content", []op{{header: 204}}, 204, 0, []int{204}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			under := &headerLog{}
			rec := newStatusRecorder(under)
			for _, o := range tt.ops {
				if o.header != 0 {
					rec.WriteHeader(o.header)
				} else if _, err := io.WriteString(rec, o.write); err != nil {
					t.Fatal(err)
				}
			}
			if rec.Status() != tt.wantStatus || rec.BytesWritten() != tt.wantBytes {
				t.Errorf("status %d, bytes %d; want %d, %d", rec.Status(), rec.BytesWritten(), tt.wantStatus, tt.wantBytes)
			}
			if fmt.Sprint(under.codes) != fmt.Sprint(tt.wantCodes) {
				t.Errorf("WriteHeader calls passed on: %v, want %v", under.codes, tt.wantCodes)
			}
			if int64(under.body.Len()) != tt.wantBytes {
				t.Errorf("wrapped writer got %d bytes", under.body.Len())
			}
		})
	}
}

func TestStatusRecorderResponseController(t *testing.T) {
	rr := httptest.NewRecorder()
	rec := newStatusRecorder(rr)
	rc := http.NewResponseController(rec)
	if err := rc.Flush(); err != nil || !rr.Flushed {
		t.Errorf("Flush through the recorder: err %v, flushed %v", err, rr.Flushed)
	}

	// A writer without Hijack: the error comes through, nothing is noted.
	bare := newStatusRecorder(&headerLog{})
	if _, _, err := http.NewResponseController(bare).Hijack(); !errors.Is(err, http.ErrNotSupported) {
		t.Errorf("Hijack on a plain writer: %v, want ErrNotSupported", err)
	}
	if bare.hijacked || bare.Status() != 200 {
		t.Errorf("failed hijack recorded: hijacked %v, status %d", bare.hijacked, bare.Status())
	}
	if err := http.NewResponseController(bare).Flush(); !errors.Is(err, http.ErrNotSupported) {
		t.Errorf("Flush on a plain writer: %v, want ErrNotSupported", err)
	}
}

// TestStatusRecorderOnServer runs the recorder on a real server: the
// ResponseController features reach the server's writer through it.
func TestStatusRecorderOnServer(t *testing.T) {
	type result struct {
		status   int
		hijacked bool
		errs     []error
	}
	results := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := newStatusRecorder(w)
		rc := http.NewResponseController(rec)
		var res result
		res.errs = append(res.errs,
			rc.EnableFullDuplex(),
			rc.SetReadDeadline(time.Now().Add(time.Minute)),
			rc.SetWriteDeadline(time.Now().Add(time.Minute)))
		if _, ok := any(rec).(http.Hijacker); !ok {
			res.errs = append(res.errs, errors.New("recorder is not a Hijacker"))
		}
		conn, brw, err := rc.Hijack()
		res.errs = append(res.errs, err)
		if err == nil {
			_, _ = brw.WriteString("HTTP/1.1 299 Custom\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			res.errs = append(res.errs, brw.Flush())
			conn.Close()
		}
		res.status, res.hijacked = rec.Status(), rec.hijacked
		results <- res
	}))
	defer srv.Close()

	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 299 || string(body) != "ok" {
		t.Errorf("client got %d %q", res.StatusCode, body)
	}
	got := <-results
	for _, err := range got.errs {
		if err != nil {
			t.Errorf("through the recorder: %v", err)
		}
	}
	if !got.hijacked || got.status != http.StatusSwitchingProtocols {
		t.Errorf("hijacked %v, status %d; want true, 101", got.hijacked, got.status)
	}
}

// proxyBehindRecorder serves a ReverseProxy to backend behind a
// statusRecorder and hands each finished recorder to the returned channel.
func proxyBehindRecorder(t *testing.T, backend *httptest.Server) (*httptest.Server, <-chan *statusRecorder) {
	t.Helper()
	u, err := url.Parse(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.Transport = backend.Client().Transport // closed with the backend
	proxy.FlushInterval = -1
	done := make(chan *statusRecorder, 1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := newStatusRecorder(w)
		proxy.ServeHTTP(rec, r)
		done <- rec
	}))
	t.Cleanup(front.Close)
	return front, done
}

// TestStatusRecorderProxyFlush streams through a ReverseProxy: the first
// line must reach the client while the backend still holds the second, which
// only works if the proxy's flushes pass the recorder.
func TestStatusRecorderProxyFlush(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "first\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	}))
	defer backend.Close()
	front, done := proxyBehindRecorder(t, backend)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL, nil)
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v: the flush did not pass the recorder", line, err)
	}
	unblock()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	rec := <-done
	if rec.Status() != http.StatusAccepted || rec.BytesWritten() != int64(len("first\nsecond\n")) {
		t.Errorf("recorded status %d, %d bytes", rec.Status(), rec.BytesWritten())
	}
}

// TestStatusRecorderProxyUpgrade relays a protocol upgrade through a
// ReverseProxy, which hijacks the client connection through the recorder.
func TestStatusRecorderProxyUpgrade(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		if brw.Flush() != nil {
			return
		}
		_, _ = io.Copy(conn, brw.Reader) // echo until the client half closes
	}))
	defer backend.Close()
	front, done := proxyBehindRecorder(t, backend)

	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q, %v", rest, err)
	}
	rec := <-done
	if rec.Status() != http.StatusSwitchingProtocols || !rec.hijacked {
		t.Errorf("recorded status %d, hijacked %v; want 101, true", rec.Status(), rec.hijacked)
	}
}

// closeNoter notes Close calls on a body.
type closeNoter struct {
	io.Reader
	closed int
	err    error
}

func (c *closeNoter) Close() error { c.closed++; return c.err }

func TestCountingBody(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		src     io.Reader
		read    func(io.Reader) (int64, error)
		want    int64
		wantErr error
	}{
		{"empty", strings.NewReader(""), readAll, 0, nil},
		{"small", strings.NewReader("hello"), readAll, 5, nil},
		{"large", bytes.NewReader(make([]byte, 100<<10+1)), readAll, 100<<10 + 1, nil},
		{"one byte at a time", iotest.OneByteReader(strings.NewReader("abcdef")), readAll, 6, nil},
		{"data with EOF", iotest.DataErrReader(strings.NewReader("abc")), readAll, 3, nil},
		{"partial read", strings.NewReader("0123456789"), readN(4), 4, nil},
		{"error midway", io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)), readAll, 3, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			under := &closeNoter{Reader: tt.src, err: boom}
			b := newCountingBody(under)
			n, err := tt.read(b)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("read error %v, want %v", err, tt.wantErr)
			}
			if n != tt.want || b.N() != tt.want {
				t.Errorf("read %d, counted %d; want %d", n, b.N(), tt.want)
			}
			if err := b.Close(); err != boom || under.closed != 1 {
				t.Errorf("Close: %v, wrapped body closed %d times", err, under.closed)
			}
		})
	}
}

func readAll(r io.Reader) (int64, error) {
	return io.Copy(io.Discard, r)
}

func readN(n int64) func(io.Reader) (int64, error) {
	return func(r io.Reader) (int64, error) {
		return io.CopyN(io.Discard, r, n)
	}
}

// TestCountingBodyConcurrentN reads N while another goroutine reads the
// body, as the access log may while a transport still sends the body.
func TestCountingBodyConcurrentN(t *testing.T) {
	b := newCountingBody(io.NopCloser(iotest.HalfReader(bytes.NewReader(make([]byte, 1<<20)))))
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(io.Discard, b) })
	for b.N() < 1<<20 {
		_ = b.N()
	}
	wg.Wait()
}

func TestLogAccess(t *testing.T) {
	full := accessFields{
		App: "hello", Method: "GET", Path: "/x/y", Status: 200, BytesIn: 10, BytesOut: 20,
		Duration: 1500 * time.Millisecond, Agent: "host-1", Session: "s-1", RequestID: "rid", Remote: "192.0.2.1:5555",
	}
	tests := []struct {
		name   string
		in     accessFields
		change map[string]any // expected fields that differ from full's
		absent []string       // fields that must not be there
	}{
		{"ok", full, nil, []string{"error", "user", "email"}},
		{"signed in", func() accessFields { f := full; f.User, f.Email = "sub-alice", "alice@example.com"; return f }(),
			map[string]any{"user": "sub-alice", "email": "alice@example.com"}, []string{"error"}},
		{"signed in without email, error", func() accessFields { f := full; f.User, f.ErrCode = "sub-bob", CodeNoConnector; return f }(),
			map[string]any{"user": "sub-bob", "error": CodeNoConnector}, []string{"email"}},
		{"query cut off", func() accessFields { f := full; f.Path = "/cb?code=secret&state=1"; return f }(),
			map[string]any{"path": "/cb"}, []string{"error"}},
		{"error", func() accessFields {
			f := full
			f.Status, f.ErrCode, f.App, f.Agent, f.Session = 404, CodeNoRoute, "", "", ""
			return f
		}(), map[string]any{"status": int64(404), "error": CodeNoRoute, "app": "", "agent": "", "session": ""}, []string{"user", "email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			logAccess(zap.New(core), tt.in)
			entries := logs.AllUntimed()
			if len(entries) != 1 {
				t.Fatalf("%d log entries, want 1", len(entries))
			}
			e := entries[0]
			if e.Level != zapcore.InfoLevel || e.Message != "access" {
				t.Errorf("entry %v %q", e.Level, e.Message)
			}
			want := map[string]any{
				"app": "hello", "method": "GET", "path": "/x/y", "status": int64(200),
				"bytes_in": int64(10), "bytes_out": int64(20), "duration": 1500 * time.Millisecond,
				"agent": "host-1", "session": "s-1", "request_id": "rid", "remote": "192.0.2.1:5555",
			}
			for k, v := range tt.change {
				want[k] = v
			}
			got := e.ContextMap()
			for k, v := range want {
				if got[k] != v {
					t.Errorf("field %s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := got[k]; ok {
					t.Errorf("field %s present", k)
				}
			}
			if strings.Contains(fmt.Sprint(got), "secret") {
				t.Errorf("query logged: %v", got)
			}
		})
	}
}

func TestLogAccessDisabled(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	logAccess(zap.New(core), accessFields{Path: "/"})
	if logs.Len() != 0 {
		t.Fatalf("%d entries at warn level, want none", logs.Len())
	}
	logAccess(zap.NewNop(), accessFields{Path: "/"})
}

// TestAccessLoggerWithoutCaller: the access log's lines are named "access"
// and carry no caller, though the gateway's logger adds one to its others.
func TestAccessLoggerWithoutCaller(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core, zap.AddCaller())
	logAccess(accessLogger(log), accessFields{Path: "/"})
	log.Info("other")
	all := logs.All()
	if len(all) != 2 || all[0].LoggerName != "access" || all[0].Caller.Defined || !all[1].Caller.Defined {
		t.Fatalf("entries %+v; want an access line without a caller, then a line with one", all)
	}
}

func BenchmarkLogAccess(b *testing.B) {
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	f := accessFields{App: "hello", Method: "GET", Path: "/x?y=1", Status: 200, RequestID: "rid", Remote: "192.0.2.1:1"}
	b.ReportAllocs()
	for b.Loop() {
		logAccess(log, f)
	}
}
