package e2e

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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// limitsGuard bounds every wait on a raw connection so that a broken test
// fails instead of hanging. No assertion depends on it.
const limitsGuard = 20 * time.Second

const limitsHost = "limits.test"

// countingBackend records what reaches the backend. Every malformed
// request must leave it untouched.
type countingBackend struct {
	srv      *httptest.Server
	arrived  atomic.Int32 // requests whose head reached the backend
	complete atomic.Int32 // requests whose body was read to its end
	failed   atomic.Int32 // requests whose body read failed

	mu   sync.Mutex
	last seenRequest // guarded by mu
}

// seenRequest is what the backend saw of the last whole request.
type seenRequest struct {
	method string
	header http.Header
	body   string
	length int64
}

func startCountingBackend(t testing.TB) *countingBackend {
	t.Helper()
	b := &countingBackend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.arrived.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			b.failed.Add(1)
			return
		}
		b.complete.Add(1)
		b.mu.Lock()
		b.last = seenRequest{method: r.Method, header: r.Header.Clone(), body: string(body), length: r.ContentLength}
		b.mu.Unlock()
		io.WriteString(w, "ok")
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *countingBackend) seen() seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// limitsRig publishes a counting backend as limitsHost through one agent.
func limitsRig(t testing.TB, edit func(*gateway.Config)) (addr string, b *countingBackend) {
	t.Helper()
	addr, b, _ = observedLimitsRig(t, edit)
	return addr, b
}

// observedLimitsRig is limitsRig with the gateway's and agent's logs kept.
func observedLimitsRig(t testing.TB, edit func(*gateway.Config)) (string, *countingBackend, *observer.ObservedLogs) {
	t.Helper()
	b := startCountingBackend(t)
	core, logs := observer.New(zap.InfoLevel)
	rig := testrig.New(t, testrig.Options{
		Routes:  []gateway.Route{{App: "limits", Hosts: []string{limitsHost}, Backend: testrig.MustURL(t, b.srv.URL)}},
		Gateway: edit,
		Log:     zap.New(core),
	})
	rig.StartAgent(nil)
	return strings.TrimPrefix(rig.URL, "http://"), b, logs
}

// dialRaw opens a TCP connection to addr that the test closes.
func dialRaw(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(limitsGuard))
	t.Cleanup(func() { c.Close() })
	return c
}

// writeRaw writes raw in the background: the server may answer (and hang
// up) before it read everything. The returned func waits for the write.
func writeRaw(c net.Conn, raw string) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.WriteString(c, raw)
	}()
	return func() {
		c.Close()
		<-done
	}
}

// rawResponse is one answer read off a raw connection.
type rawResponse struct {
	status int
	header http.Header
	body   string
	close  bool   // the response said Connection: close
	more   string // what the server sent after this response before closing
}

// rawRoundTrip sends raw on a new connection, reads one response, then
// everything the server sends until it closes the connection.
func rawRoundTrip(t testing.TB, addr, raw string) rawResponse {
	t.Helper()
	c := dialRaw(t, addr)
	wait := writeRaw(c, raw)
	defer wait()
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("response body: %v", err)
	}
	more, err := io.ReadAll(br)
	if isTimeout(err) {
		t.Fatalf("the connection stayed open after a %d answer", res.StatusCode)
	}
	return rawResponse{status: res.StatusCode, header: res.Header, body: string(body), close: res.Close, more: string(more)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wantClosed reads from c until the server closes it and checks that it
// sent want before.
func wantClosed(t testing.TB, c net.Conn, want string) {
	t.Helper()
	b, err := io.ReadAll(c)
	if isTimeout(err) {
		t.Fatal("the server kept the connection open")
	}
	if !strings.HasPrefix(string(b), want) || (want == "" && len(b) != 0) {
		t.Fatalf("the server sent %q before closing, want %q", b, want)
	}
}

func TestLimitsTimeouts(t *testing.T) {
	addr, b := limitsRig(t, func(c *gateway.Config) {
		c.ReadHeaderTimeout = 200 * time.Millisecond
		c.IdleTimeout = 200 * time.Millisecond
	})
	t.Run("half a request head", func(t *testing.T) {
		c := dialRaw(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+limitsHost+"\r\nX-Slow: 1\r\n")
		wantClosed(t, c, "")
	})
	t.Run("a few bytes", func(t *testing.T) {
		c := dialRaw(t, addr)
		// Too short to tell HTTP/1 from the h2c preface: the server gives
		// up on it with a 400.
		io.WriteString(c, "GE")
		wantClosed(t, c, "HTTP/1.1 400 ")
	})
	t.Run("nothing at all", func(t *testing.T) {
		wantClosed(t, dialRaw(t, addr), "")
	})
	if n := b.arrived.Load(); n != 0 {
		t.Fatalf("%d requests reached the backend", n)
	}
	t.Run("idle keep-alive connection", func(t *testing.T) {
		c := dialRaw(t, addr)
		io.WriteString(c, "GET /idle HTTP/1.1\r\nHost: "+limitsHost+"\r\n\r\n")
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(body) != "ok" || res.Close {
			t.Fatalf("got %d %q close=%v", res.StatusCode, body, res.Close)
		}
		// Kept alive, then closed once idle.
		rest, err := io.ReadAll(br)
		if isTimeout(err) || len(rest) != 0 {
			t.Fatalf("idle connection: read %q, %v", rest, err)
		}
		if n := b.complete.Load(); n != 1 {
			t.Fatalf("backend served %d requests, want 1", n)
		}
	})
}

func TestLimitsHeaderSize(t *testing.T) {
	addr, b, logs := observedLimitsRig(t, nil)
	head := func(fields string) string {
		return "GET / HTTP/1.1\r\nHost: " + limitsHost + "\r\nConnection: close\r\n" + fields + "\r\n"
	}
	big := func(n int) string { return "X-Big: " + strings.Repeat("a", n) + "\r\n" }
	many := func(n int) string {
		var sb strings.Builder
		for i := range n {
			fmt.Fprintf(&sb, "X-F%d: v\r\n", i)
		}
		return sb.String()
	}
	t.Run("too large", func(t *testing.T) {
		for name, fields := range map[string]string{
			// Go's server refuses heads over MaxHeaderBytes plus 4 KiB
			// of slack itself; the gateway refuses what fits there but
			// not in a tunnel head (64 KiB of names and values, 1000
			// fields) rather than relay a head that the agent refuses.
			"65 KiB":      big(65 << 10),
			"67 KiB":      big(67 << 10),
			"70 KiB":      big(70 << 10),
			"1000 fields": many(1000),
		} {
			r := rawRoundTrip(t, addr, head(fields))
			if r.status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("%s: got %d %s=%q, want 431", name, r.status, gateway.ErrorHeader, r.header.Get(gateway.ErrorHeader))
			}
		}
		// With a small body that never comes: the 431 does not wait for
		// it (the gateway reads small bodies before relaying, under the
		// app's timeout, 85 s here; this connection gives up after
		// limitsGuard, 20 s).
		r := rawRoundTrip(t, addr, "POST / HTTP/1.1\r\nHost: "+limitsHost+"\r\nConnection: close\r\nContent-Length: 100\r\n"+
			many(1000)+"\r\n")
		if r.status != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("1000 fields and a body not sent: got %d %s=%q, want 431 at once", r.status, gateway.ErrorHeader,
				r.header.Get(gateway.ErrorHeader))
		}
		if n := b.arrived.Load(); n != 0 {
			t.Fatalf("%d requests reached the backend", n)
		}
		if w := logs.FilterMessage("malformed request from the gateway").All(); len(w) != 0 {
			t.Fatalf("the agent refused %d heads: %v", len(w), w[0].ContextMap())
		}
	})
	t.Run("under the limits", func(t *testing.T) {
		n := 60 << 10
		r := rawRoundTrip(t, addr, head(big(n)))
		if r.status != 200 || len(b.seen().header.Get("X-Big")) != n {
			t.Fatalf("got %d %q; the backend saw %d bytes of X-Big", r.status, r.body, len(b.seen().header.Get("X-Big")))
		}
		r = rawRoundTrip(t, addr, head(many(900)))
		if r.status != 200 || b.seen().header.Get("X-F899") != "v" {
			t.Fatalf("900 fields: got %d %q", r.status, r.body)
		}
	})
}

// TestLimitsMalformedRequests sends requests that break HTTP/1.1 framing
// or syntax, the stuff of request smuggling. Each is refused before
// anything reaches the backend.
func TestLimitsMalformedRequests(t *testing.T) {
	addr, b := limitsRig(t, nil)
	const host = "Host: " + limitsHost + "\r\n"
	cases := []struct {
		name   string
		raw    string
		status int
	}{
		{"two different Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"Content-Length list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 4, 5\r\n\r\nhello", 400},
		{"negative Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", 400},
		{"signed Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\nhello", 400},
		{"Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"Transfer-Encoding chunked, identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501},
		{"two Transfer-Encoding fields", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"Transfer-Encoding xchunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n", 400},
		{"space in header name", "GET / HTTP/1.1\r\n" + host + "X A: b\r\n\r\n", 400},
		{"Transfer-Encoding with space before colon", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"NUL in header value", "GET / HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", 400},
		{"bare CR in header", "GET / HTTP/1.1\r\n" + host + "X-A: a\rX-B: b\r\n\r\n", 400},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Host fields", "GET / HTTP/1.1\r\n" + host + host + "\r\n", 400},
		{"Host with a path", "GET / HTTP/1.1\r\nHost: " + limitsHost + "/x\r\n\r\n", 400},
		{"bad request line", "GET /  HTTP/1.1 x\r\n" + host + "\r\n", 400},
		{"unknown protocol version", "GET / HTTP/1.2.3\r\n" + host + "\r\n", 400},
		// The gateway is no forward proxy: a CONNECT to a published host
		// would reach the backend as a CONNECT, and a 2xx answer would
		// tell the client that a tunnel was open.
		{"CONNECT", "CONNECT " + limitsHost + ":443 HTTP/1.1\r\nHost: " + limitsHost + ":443\r\nConnection: close\r\n\r\n", 501},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawRoundTrip(t, addr, tc.raw)
			if r.status != tc.status {
				t.Fatalf("got %d %q, want %d", r.status, r.body, tc.status)
			}
			if r.more != "" {
				t.Fatalf("more bytes after the error: %q", r.more)
			}
			if n := b.arrived.Load(); n != 0 {
				t.Fatalf("%d requests reached the backend", n)
			}
		})
	}
}

// TestLimitsInvalidChunkedBody: a chunked body that turns out malformed is
// only found while it streams, after the head may already have gone
// through the tunnel. The client gets a clear 400 and the backend never
// gets a whole request: at most a head whose body fails. The gateway logs
// each at info, not as a warning: the client broke it off, the operator has
// nothing to act on.
func TestLimitsInvalidChunkedBody(t *testing.T) {
	addr, b, logs := observedLimitsRig(t, nil)
	const head = "POST /upload HTTP/1.1\r\nHost: " + limitsHost + "\r\nTransfer-Encoding: chunked\r\n\r\n"
	for name, body := range map[string]string{
		"bad chunk size":          "zz\r\nhello\r\n0\r\n\r\n",
		"bad second chunk size":   "5\r\nhello\r\nxyz\r\n0\r\n\r\n",
		"chunk shorter than size": "5\r\nhel\r\n0\r\n\r\n",
		"bare LF in chunk line":   "5\nhello\n0\n\n",
		"chunk size overflow":     "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			r := rawRoundTrip(t, addr, head+body)
			if r.status != 400 || r.header.Get(gateway.ErrorHeader) != gateway.CodeBadRequest {
				t.Fatalf("got %d %s=%q, want 400 bad-request", r.status, gateway.ErrorHeader, r.header.Get(gateway.ErrorHeader))
			}
		})
	}
	// Close waits for the backend's handlers: every head that got through
	// has seen its body fail by now.
	b.srv.Close()
	if c := b.complete.Load(); c != 0 {
		t.Fatalf("the backend got %d whole requests", c)
	}
	if a, f := b.arrived.Load(), b.failed.Load(); a != f {
		t.Fatalf("%d heads reached the backend but only %d saw their body fail", a, f)
	} else {
		t.Logf("%d of 5 heads reached the backend before the body broke; each saw the body fail", a)
	}
	gw := logs.FilterLoggerName("gateway")
	failed := gw.FilterMessageSnippet("exchange failed")
	if w := failed.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zap.WarnLevel }).All(); len(w) != 0 {
		t.Errorf("the gateway logged %d failed exchanges at warn or above for bodies the client broke, want none: %s %v",
			len(w), w[0].Message, w[0].ContextMap())
	}
	if n := failed.FilterMessageSnippet("the client's request body could not be read").Len(); n != 5 {
		t.Errorf("the gateway logged %d broken bodies at info, want 5", n)
	}
}

// TestLimitsLenientParsing covers inputs that Go's server accepts: each is
// normalised to one unambiguous request, and since the tunnel carries the
// parsed request rather than bytes, the backend cannot read it any other
// way than the gateway did.
func TestLimitsLenientParsing(t *testing.T) {
	addr, b := limitsRig(t, nil)
	t.Run("Content-Length and Transfer-Encoding", func(t *testing.T) {
		// RFC 9112 §6.3: chunked wins and Content-Length is dropped. The
		// "0" chunk ends the body; what follows is a second request on
		// the client's own connection, not one hidden in the first.
		raw := "POST /first HTTP/1.1\r\nHost: " + limitsHost + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n0\r\n\r\n"
		r := rawRoundTrip(t, addr, raw+"GET /second HTTP/1.1\r\nHost: "+limitsHost+"\r\nConnection: close\r\n\r\n")
		s := b.seen()
		if r.status != 200 || s.body != "" || s.method != "GET" {
			t.Fatalf("got %d; backend last saw %s %q", r.status, s.method, s.body)
		}
		if n := b.complete.Load(); n != 2 {
			t.Fatalf("backend saw %d requests, want 2", n)
		}
		if !strings.HasPrefix(r.more, "HTTP/1.1 200") {
			t.Fatalf("second answer: %q", r.more)
		}
	})
	t.Run("Content-Length and Transfer-Encoding body", func(t *testing.T) {
		before := b.complete.Load()
		raw := "POST / HTTP/1.1\r\nHost: " + limitsHost + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
			"5\r\nhello\r\n0\r\n\r\n"
		r := rawRoundTrip(t, addr, raw)
		s := b.seen()
		if r.status != 200 || s.body != "hello" || s.header.Get("Content-Length") == "4" || b.complete.Load() != before+1 {
			t.Fatalf("got %d; backend saw %q with Content-Length %q", r.status, s.body, s.header.Get("Content-Length"))
		}
	})
	t.Run("HTTP/1.0 with Transfer-Encoding", func(t *testing.T) {
		// Go ignores Transfer-Encoding in HTTP/1.0 (golang.org/issue/12785)
		// and removes the header before any handler runs, so the gateway
		// cannot refuse it: the request has no body, and without
		// keep-alive the connection ends after the answer, so the chunked
		// bytes are never read as a request.
		before := b.complete.Load()
		r := rawRoundTrip(t, addr, "POST / HTTP/1.0\r\nHost: "+limitsHost+"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
		s := b.seen()
		if r.status != 200 || s.body != "" || s.length != 0 || r.more != "" || b.complete.Load() != before+1 {
			t.Fatalf("got %d, then %q; backend saw %q (length %d)", r.status, r.more, s.body, s.length)
		}
	})
	t.Run("HTTP/1.0 keep-alive with Transfer-Encoding", func(t *testing.T) {
		// With keep-alive the leftover chunk bytes are parsed as the next
		// request: garbage, answered with 400. They never reach the
		// backend, and a request hidden there would be routed and logged
		// like any other request of this client.
		before := b.complete.Load()
		r := rawRoundTrip(t, addr, "POST / HTTP/1.0\r\nHost: "+limitsHost+"\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
		if r.status != 200 || !strings.HasPrefix(r.more, "HTTP/1.1 400") || b.complete.Load() != before+1 {
			t.Fatalf("got %d, then %q", r.status, r.more)
		}
	})
	t.Run("obsolete line folding", func(t *testing.T) {
		// RFC 9112 §5.2 lets a server replace obs-fold with spaces.
		r := rawRoundTrip(t, addr, "GET / HTTP/1.1\r\nHost: "+limitsHost+"\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n")
		if got := b.seen().header.Values("X-Folded"); r.status != 200 || len(got) != 1 || got[0] != "a b" {
			t.Fatalf("got %d; backend saw X-Folded %q", r.status, got)
		}
	})
	t.Run("bare LF line endings", func(t *testing.T) {
		// RFC 9112 §2.2 lets a recipient accept a lone LF as a line end.
		r := rawRoundTrip(t, addr, "GET /lf HTTP/1.1\nHost: "+limitsHost+"\nX-Lf: yes\nConnection: close\n\n")
		if r.status != 200 || b.seen().header.Get("X-Lf") != "yes" {
			t.Fatalf("got %d; backend saw %v", r.status, b.seen().header)
		}
	})
	t.Run("absolute-form target names another host", func(t *testing.T) {
		// The target's host wins over Host (RFC 9112 §3.2.2), and routing
		// uses it: the request cannot borrow another app's route.
		before := b.arrived.Load()
		r := rawRoundTrip(t, addr, "GET http://other.test/ HTTP/1.1\r\nHost: "+limitsHost+"\r\nConnection: close\r\n\r\n")
		if r.status != 404 || r.header.Get(gateway.ErrorHeader) != gateway.CodeNoRoute || b.arrived.Load() != before {
			t.Fatalf("got %d %s", r.status, r.header.Get(gateway.ErrorHeader))
		}
	})
}

// TestLimitsH2CMaxConcurrentStreams opens more HTTP/2 streams on one h2c
// connection than the gateway's SETTINGS_MAX_CONCURRENT_STREAMS allows.
// Go's server refuses each stream over the limit with RST_STREAM
// (REFUSED_STREAM while the client has not acknowledged the settings,
// PROTOCOL_ERROR after), keeps the connection, and answers every admitted
// stream correctly.
func TestLimitsH2CMaxConcurrentStreams(t *testing.T) {
	for _, ack := range []bool{true, false} {
		t.Run(fmt.Sprintf("settings acknowledged=%v", ack), func(t *testing.T) {
			testH2CMaxConcurrentStreams(t, ack)
		})
	}
}

func testH2CMaxConcurrentStreams(t *testing.T, ackSettings bool) {
	release := make(chan struct{})
	var arrived atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "h2", Hosts: []string{limitsHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)

	c := dialRaw(t, strings.TrimPrefix(rig.URL, "http://"))
	c.SetDeadline(time.Now().Add(2 * limitsGuard))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var limit uint32
	for limit == 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the server's settings: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			v, ok := sf.Value(http2.SettingMaxConcurrentStreams)
			if !ok || v == 0 {
				t.Fatal("the server announces no stream limit")
			}
			limit = v
		}
	}
	if ackSettings {
		if err := fr.WriteSettingsAck(); err != nil {
			t.Fatal(err)
		}
	}

	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	open := func(id uint32) {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", limitsHost}, {":path", fmt.Sprintf("/s%d", id)}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	const extra = 10
	total := int(limit) + extra
	for i := range total {
		open(uint32(2*i + 1))
	}

	wantReset := http2.ErrCodeProtocol
	if !ackSettings {
		wantReset = http2.ErrCodeRefusedStream
	}
	status := map[uint32]string{}
	body := map[uint32]string{}
	ended := map[uint32]bool{}
	reset := map[uint32]http2.ErrCode{}
	// Read until every stream is answered or reset; release the backend
	// once the refusals are in, so that the admitted streams stay open
	// (and count against the limit) until then.
	for frames := 0; len(ended)+len(reset) < total; frames++ {
		if frames > 100*total {
			t.Fatal("too many frames")
		}
		if len(reset) == extra {
			releaseOnce.Do(func() { close(release) })
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d answers and %d resets: %v", len(ended), len(reset), err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status[f.StreamID] = f.PseudoValue("status")
			if f.StreamEnded() {
				ended[f.StreamID] = true
			}
		case *http2.DataFrame:
			body[f.StreamID] += string(f.Data())
			if f.StreamEnded() {
				ended[f.StreamID] = true
			}
			if n := uint32(len(f.Data())); n > 0 {
				fr.WriteWindowUpdate(0, n)
				fr.WriteWindowUpdate(f.StreamID, n)
			}
		case *http2.RSTStreamFrame:
			reset[f.StreamID] = f.ErrCode
		case *http2.GoAwayFrame:
			t.Fatalf("the server closed the connection: %v", f.ErrCode)
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		}
	}
	if len(reset) != extra {
		t.Fatalf("%d streams reset, want the %d over the limit", len(reset), extra)
	}
	for id, code := range reset {
		if id <= uint32(2*limit) || code != wantReset {
			t.Fatalf("stream %d reset with %v; want streams over the limit reset with %v", id, code, wantReset)
		}
	}
	for id := range ended {
		if status[id] != "200" || body[id] != fmt.Sprintf("ok /s%d", id) {
			t.Fatalf("stream %d: %s %q", id, status[id], body[id])
		}
	}
	if n := arrived.Load(); n != int32(limit) {
		t.Fatalf("%d requests reached the backend, want %d", n, limit)
	}

	// The connection still serves new streams.
	next := uint32(2*total + 1)
	open(next)
	for frames := 0; !ended[next]; frames++ {
		if frames > 100 {
			t.Fatal("no answer on the connection after the refusals")
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status[f.StreamID] = f.PseudoValue("status")
			ended[f.StreamID] = ended[f.StreamID] || f.StreamEnded()
		case *http2.DataFrame:
			ended[f.StreamID] = ended[f.StreamID] || f.StreamEnded()
		case *http2.RSTStreamFrame:
			t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		}
	}
	if status[next] != "200" {
		t.Fatalf("new stream: %s", status[next])
	}
}

// TestLimitsResponseHeadSize: a backend's response head over the tunnel's
// limits (64 KiB of names and values, 1000 fields) is the backend's fault:
// 502 backend-unreachable, with the reason in the agent's log, on the agent's
// own HTTP/1.1 client (GET) and net/http's (POST). The agent used to relay
// it and the gateway refused it as a malformed frame: 502 tunnel-failed,
// which sent operators looking for a tunnel problem. The session serves
// the next exchange.
func TestLimitsResponseHeadSize(t *testing.T) {
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("X-Big", strings.Repeat("a", 70<<10))
		case "/many":
			for i := range 1100 {
				w.Header().Set(fmt.Sprintf("X-F%d", i), "v")
			}
		case "/fits":
			w.Header().Set("X-Big", strings.Repeat("a", 60<<10))
		}
		io.WriteString(w, "ok")
	}))
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "heads", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	for _, method := range []string{"GET", "POST"} {
		for _, path := range []string{"/big", "/many"} {
			res, _ := doAndRead(t, c, appRequest(t, context.Background(), method, rig.URL+path, strings.NewReader("x")))
			if res.StatusCode != http.StatusBadGateway || res.Header.Get(gateway.ErrorHeader) != gateway.CodeBackendUnreachable {
				t.Errorf("%s %s: %d %s=%q, want 502 %s", method, path, res.StatusCode, gateway.ErrorHeader,
					res.Header.Get(gateway.ErrorHeader), gateway.CodeBackendUnreachable)
			}
		}
		res, b := doAndRead(t, c, appRequest(t, context.Background(), method, rig.URL+"/fits", strings.NewReader("x")))
		if res.StatusCode != http.StatusOK || string(b) != "ok" || len(res.Header.Get("X-Big")) != 60<<10 {
			t.Errorf("%s /fits (60 KiB of headers): %d %q", method, res.StatusCode, b)
		}
	}
}

// TestPublicMaxConnections: with public.max_connections 2, two idle client
// connections hold the public listener; a third client's request waits
// (the gateway logs that the limit is reached) and is answered once one of
// the two closes. The limit keeps clients from taking every file
// descriptor, which stopped the tunnel and admin listeners too.
func TestPublicMaxConnections(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	backend := startLoopbackBackend(t, demoapp.New())
	rig := testrig.New(t, testrig.Options{
		Log:     zap.New(core),
		Routes:  []gateway.Route{{App: "echo", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)}},
		Gateway: func(cfg *gateway.Config) { cfg.MaxConnections = 2 },
	})
	rig.StartAgent(nil)
	addr := strings.TrimPrefix(rig.URL, "http://")
	// The rig's own client may hold a kept-alive connection: close it.
	rig.Client().Transport.(*http.Transport).CloseIdleConnections()
	idle := []net.Conn{dialRaw(t, addr), dialRaw(t, addr)}
	third := dialRaw(t, addr)
	answered := make(chan string, 1)
	go func() {
		io.WriteString(third, "GET /echo HTTP/1.1\r\nHost: "+appHost+"\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(third)
		answered <- string(b)
	}()
	deadline := time.Now().Add(limitsGuard)
	for logs.FilterMessageSnippet("public.max_connections connections are open").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the third connection was not held back: %v", logs.All())
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case got := <-answered:
		t.Fatalf("the third client was answered while two connections were open: %.80q", got)
	default:
	}
	idle[0].Close()
	if got := waitSignal(t, answered, "the third client's answer"); !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Fatalf("third client after a slot freed: %.120q", got)
	}
}
