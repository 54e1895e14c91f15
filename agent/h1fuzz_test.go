package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// Differential fuzzing of the agent's HTTP/1.1 client (h1Sync: peekHead and
// readResponseFast, ReadResponse with h1Body, the pool's reuse rules)
// against net/http reading the same bytes. The backend is a script that
// answers with the fuzzed bytes; the reference (refExchange) is
// http.ReadResponse plus reading the body to its end, with the rules of
// http.Transport and the agent's deliberate ones on top. The agent must
// agree with it about success, status, header, body, trailer and where the
// response ends: a connection it keeps for the next request must be one on
// which nothing follows the response.

// fuzzMethods are the methods h1Sync serves itself.
var fuzzMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodOptions}

// fuzzReadSizes are the sizes of the reads of a response body: the relay's
// (larger than the connection's read buffer), the buffer's, and small ones.
var fuzzReadSizes = [...]int{256 << 10, h1ReadBufferSize, 1, 1000}

// h1Outcome is what one exchange came to.
type h1Outcome struct {
	failed   bool   // no response, or its body ended in an error
	why      string // the error
	timedOut bool   // the exchange ran into its deadline: the agent waited for bytes
	status   string
	code     int
	proto    string
	header   http.Header
	length   int64 // ContentLength
	body     []byte
	trailer  http.Header
	reusable bool // the connection may carry the next request
	// Agent only: its connection's last read filled its buffer, so that
	// it cannot tell whether more follows (h1Conn.release).
	lastReadFull bool
	// Reference only:
	closes   bool // the response ends its connection (Connection: close, HTTP/1.0, read to the end)
	consumed int  // bytes of the stream the exchange took, 1xx heads included
	head     int  // bytes of its heads, 1xx included
	// The informational heads before the final one (but 101), as the
	// agent relays them (tunnel.RelayInformational): status and header.
	informational []string
}

// informationalEntry is one entry of h1Outcome.informational.
func informationalEntry(code int, h http.Header) string {
	return fmt.Sprintf("%d %q", code, h)
}

// refExchange is what net/http makes of stream as the answer to a request
// with method, read as http.Transport reads it, with the agent's deliberate
// rules on top:
//   - informational heads before the final one are passed on (RFC 9110
//     §15.2; the agent relays them when the gateway asks, within the
//     tunnel's limits, and gives up after 1 MiB of heads) and skipped;
//     a 101 fails, since no request h1Sync sends asks for an upgrade;
//   - the connection is reusable when the response ended without error,
//     does not close the connection, and nothing follows it in the stream
//     (Transport closes a connection on which bytes arrive while idle);
//   - an HTTP/1.0 response closes the connection, keep-alive or not (one
//     that names a Transfer-Encoding has faulty framing, RFC 9112 §6.1,
//     which ReadResponse does not tell).
func refExchange(method string, stream []byte) (out h1Outcome) {
	r := bytes.NewReader(stream)
	br := bufio.NewReader(r)
	consumed := func() int { return len(stream) - r.Len() - br.Buffered() }
	req := &http.Request{Method: method}
	var res *http.Response
	var informational []string
	for {
		var err error
		res, err = http.ReadResponse(br, req)
		if err != nil {
			return h1Outcome{failed: true, why: "head: " + err.Error(), closes: true}
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			return h1Outcome{failed: true, why: "101 to a request without Upgrade", closes: true}
		}
		if res.StatusCode < 100 || res.StatusCode > 199 {
			break
		}
		informational = append(informational, informationalEntry(res.StatusCode, res.Header))
	}
	out = h1Outcome{
		status: res.Status, code: res.StatusCode, proto: res.Proto,
		header: res.Header, length: res.ContentLength,
		closes: res.Close || !res.ProtoAtLeast(1, 1), head: consumed(), informational: informational,
	}
	body, err := io.ReadAll(res.Body)
	out.body, out.trailer, out.consumed = body, res.Trailer, consumed()
	if err != nil {
		out.failed, out.why, out.closes = true, "body: "+err.Error(), true
		return out
	}
	out.reusable = !out.closes && out.consumed == len(stream)
	return out
}

// agentExchange sends a bodiless request with method through rt and reads
// the body in reads of readSize bytes, as the relay does.
func agentExchange(t *testing.T, rt http.RoundTripper, method, url string, readSize int) (out h1Outcome) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	defer func() { out.timedOut = ctx.Err() != nil }()
	var informational []string
	ctx = tunnel.WithInformational(ctx, func(code int, h http.Header) error {
		informational = append(informational, informationalEntry(code, h))
		return nil
	})
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.RoundTrip(req)
	if err != nil {
		return h1Outcome{failed: true, why: err.Error()}
	}
	out = h1Outcome{
		status: res.Status, code: res.StatusCode, proto: res.Proto,
		header: res.Header, length: res.ContentLength, informational: informational,
	}
	var body bytes.Buffer
	// Wrapped so that io.CopyBuffer reads with buf, not ReadFrom's sizes.
	_, err = io.CopyBuffer(struct{ io.Writer }{&body}, struct{ io.Reader }{res.Body}, make([]byte, readSize))
	res.Body.Close()
	out.body, out.trailer = body.Bytes(), res.Trailer
	if err != nil {
		out.failed, out.why = true, "body: "+err.Error()
	}
	return out
}

// compareExchange reports where the agent's outcome got differs from the
// reference want. The agent may refuse a response that the reference
// takes only where it says so deliberately (its 1 MiB bound on heads, of
// which up to a read buffer more may have been read) and only failing safe:
// the connection is not kept.
func compareExchange(t *testing.T, got, want h1Outcome) {
	t.Helper()
	if got.timedOut {
		t.Errorf("the agent waited for bytes the reference does not need (want %s)", describe(want))
		return
	}
	switch {
	case want.failed && !got.failed:
		t.Errorf("the agent accepted what net/http refuses (%s): %s", want.why, describe(got))
	case want.failed:
	case got.failed && want.head+h1ReadBufferSize > h1MaxResponseHeaderBytes:
	case got.failed:
		t.Errorf("the agent refused what net/http accepts (%s): want %s", got.why, describe(want))
	default:
		// net/http adds Cache-Control: no-cache to a response with
		// Pragma: no-cache and no Cache-Control (RFC 7234 §5.4); the
		// agent's fast path passes the header on as the backend sent it.
		wantHeader := want.header
		if p := got.header["Pragma"]; len(p) > 0 && p[0] == "no-cache" && got.header["Cache-Control"] == nil {
			wantHeader = maps.Clone(want.header)
			delete(wantHeader, "Cache-Control")
		}
		if got.status != want.status || got.code != want.code || got.proto != want.proto ||
			got.length != want.length || !sameHeader(got.header, wantHeader) ||
			!bytes.Equal(got.body, want.body) || !sameHeader(got.trailer, want.trailer) {
			t.Errorf("the agent read\n  %s\nnet/http read\n  %s", describe(got), describe(want))
		}
		if !slices.Equal(got.informational, want.informational) {
			t.Errorf("the agent relayed the informational heads\n  %q\nnet/http read\n  %q", got.informational, want.informational)
		}
	}
	if got.failed && got.reusable {
		t.Errorf("the agent kept the connection of a failed exchange (%s)", got.why)
	}
}

func sameHeader(a, b http.Header) bool { return maps.EqualFunc(a, b, slices.Equal[[]string]) }

func describe(o h1Outcome) string {
	if o.failed {
		return fmt.Sprintf("failed: %s (body %.60q)", o.why, o.body)
	}
	return fmt.Sprintf("%s %q header %q length %d body %.80q (%d bytes) trailer %q reusable %v",
		o.proto, o.status, o.header, o.length, o.body, len(o.body), o.trailer, o.reusable)
}

// pipeExchange sends one request with method through an h1Sync whose
// backend connection is a net.Pipe, which has no RawConn: h1Sync would
// not use it again (h1Conn.checkable), but it still puts it into the pool
// when release keeps it, which is what reusable reports. The backend
// reads the request, answers with stream in two writes (split there) and
// hangs up.
func pipeExchange(t *testing.T, method string, stream []byte, split, readSize int) h1Outcome {
	var wg sync.WaitGroup
	defer wg.Wait()
	var client *lastReadConn
	s := &h1Sync{Fallback: failingRoundTripper{t}, Dial: func(context.Context, string, string) (net.Conn, error) {
		c, server := net.Pipe()
		client = &lastReadConn{Conn: c}
		wg.Go(func() {
			defer server.Close()
			if _, err := http.ReadRequest(bufio.NewReader(server)); err != nil {
				return
			}
			if _, err := server.Write(stream[:split]); err == nil && split < len(stream) {
				server.Write(stream[split:])
			}
		})
		return client, nil
	}}
	defer s.CloseIdleConnections() // before wg.Wait: a kept connection may hold the backend's write
	out := agentExchange(t, s, method, "http://backend.test/", readSize)
	out.reusable = s.idleCount() == 1
	out.lastReadFull = client != nil && client.full.Load()
	return out
}

// lastReadConn records whether its last Read filled its buffer.
type lastReadConn struct {
	net.Conn
	full atomic.Bool
}

func (c *lastReadConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.full.Store(n == len(p))
	return n, err
}

// addH1Seeds adds each seed response to f with every method, through add.
func addH1Seeds(add func(method uint8, stream []byte)) {
	for _, s := range h1SeedResponses {
		for m := range fuzzMethods {
			add(uint8(m), []byte(s))
		}
	}
}

// h1SeedResponses cover every decision of the agent's response parser.
var h1SeedResponses = []string{
	// Status lines.
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 599 Very Odd  Status\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1  200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\tOK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\r\nContent-Length: 0\r\n\r\n",
	"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nh2",
	"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"ICY 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	// HTTP/1.0 and keep-alive.
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\n\r\nuntil the end",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n",
	// Connection.
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
	// Responses without framing: read until the connection closes.
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
	"HTTP/1.1 200 OK\r\n\r\n",
	// Content-Length forms.
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
	"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\ncontent-length:  3 \r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n1234567",
	"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi and more",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
	// Transfer-Encoding.
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1;q=\"a b\"\r\nhello\r\n0;last\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: v\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: v\r\nbad trailer\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nsurplus",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nhi\n0\n\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 2\r\n\r\nhi",
	// Informational heads.
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b.js>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 102 Processing\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload; as=style\r\nLink: </b.js>; rel=preload; as=script\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/html\r\n\r\nhi",
	"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes",
	// Responses without a body.
	"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"v1\"\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	// Header forms.
	"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-A: 1\r\nSet-Cookie: b=2\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nx-a:\tv\t\r\nX-Empty:\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\n X-A: a\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-\x00A: a\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\n: empty name\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX-A: trailing CR\r\r\nContent-Length: 1\r\n\r\nx",
	// Bare LF line endings.
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nhi",
	"HTTP/1.1 200 OK\r\nX-A: a\n\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\r\nContent-Length: 12\r\n\r\n0\r\n\r\nabcdefg",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nhi",
	// Truncated and empty.
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
	"HTTP/1.1 200",
	"",
	"\r\n",
}

// h1LongSeeds are seeds whose size matters: heads and bodies around the
// connection's 4 KiB read buffer, with and without bytes after them.
func h1LongSeeds() []string {
	pad := func(n int) string { return strings.Repeat("a", n) }
	head := "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
	exact := func(total, extra int) string { // head and body total bytes, then extra bytes
		h := fmt.Sprintf(head, 0)
		n := total - len(h)
		h = fmt.Sprintf(head, n)
		n = total - len(h)
		return fmt.Sprintf(head, n) + pad(n) + pad(extra)
	}
	return []string{
		"HTTP/1.1 200 OK\r\nX-Long: " + pad(5000) + "\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nX-Long: " + pad(5000) + "\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		exact(h1ReadBufferSize, 0),
		exact(h1ReadBufferSize, 5),
		exact(h1ReadBufferSize-1, 5),
		exact(3*h1ReadBufferSize, 7),
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + pad(4096) + "\r\n0\r\n\r\nextra",
	}
}

// FuzzH1Response: one response, answered on a connection without a
// RawConn. The agent must read it as net/http does and keep the connection
// exactly when nothing follows the response: such a connection is not
// checked before its next request. split cuts the answer into two writes;
// bytes after the response that come in a later write than its end are
// not seen before the next request on such a connection (as with TLS),
// which FuzzH1Reuse checks on plain TCP. The agent may close a connection
// that net/http would keep only where its last read filled its buffer
// right up to the response's end (h1Conn.release).
func FuzzH1Response(f *testing.F) {
	addH1Seeds(func(m uint8, s []byte) { f.Add(m, uint8(0), uint16(len(s)), s) })
	for _, s := range h1LongSeeds() {
		for rs := range fuzzReadSizes {
			f.Add(uint8(0), uint8(rs), uint16(len(s)), []byte(s))
		}
	}
	// Heads cut short by the first write: peekHead leaves them to
	// ReadResponse.
	f.Add(uint8(0), uint8(0), uint16(20), []byte(h1SeedResponses[0]))
	f.Add(uint8(2), uint8(2), uint16(40), []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, m, rs uint8, split uint16, stream []byte) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		at := min(int(split), len(stream))
		want := refExchange(method, stream)
		got := pipeExchange(t, method, stream, at, fuzzReadSizes[int(rs)%len(fuzzReadSizes)])
		compareExchange(t, got, want)
		// Bytes that follow the response in the write that ended it must
		// not leave the connection kept.
		later := want.consumed == at && at < len(stream)
		if got.reusable && !want.reusable && !want.failed && !(later && !want.closes) {
			t.Errorf("the agent kept a connection that net/http would not: %s", describe(want))
		}
		if !got.reusable && want.reusable && !got.failed && !got.lastReadFull {
			t.Errorf("the agent closed a connection that net/http would keep: %s", describe(want))
		}
	})
}

// FuzzH1Reuse: two exchanges, the second on the first one's connection if
// the agent keeps it, over loopback TCP (the real path: the first request
// on a new connection is written then read, a reused connection is checked
// for bytes sent while idle and flushes inside its wait). The backend
// answers the first request with first and keeps the connection open if
// net/http would, and the second with second, then hangs up. The second
// answer must be read as net/http reads second alone: bytes after the
// first response must never answer the second request.
func FuzzH1Reuse(f *testing.F) {
	skipWithoutIdleCheck(f)
	next := "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"
	addH1Seeds(func(m uint8, s []byte) { f.Add(m, s, []byte(next)) })
	for _, s := range h1LongSeeds() {
		f.Add(uint8(0), []byte(s), []byte(next))
	}
	f.Add(uint8(0), []byte(next), []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"))
	// One listener for all inputs: a listener each would run out of
	// ports within a minute of fuzzing.
	b := startScriptBackend(f)
	f.Fuzz(func(t *testing.T, m uint8, first, second []byte) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		want1, want2 := refExchange(method, first), refExchange(method, second)
		sc := &h1Script{answers: [][]byte{first, second}, keepOpen: !want1.failed && !want1.closes}
		b.script.Store(sc)
		s := newTestH1Sync(t)
		url := "http://" + b.addr + "/"
		got1 := agentExchange(t, s, method, url, fuzzReadSizes[0])
		got1.reusable = s.idleCount() == 1
		compareExchange(t, got1, want1)
		if got1.reusable && (want1.failed || want1.closes) {
			t.Errorf("the agent kept a connection that the response closes: %s", describe(want1))
		}
		got2 := agentExchange(t, s, method, url, fuzzReadSizes[0])
		compareExchange(t, got2, want2)
		if reused := sc.secondOnFirst.Load(); reused != want1.reusable {
			t.Errorf("second request on the first one's connection: %v; net/http: %v (first answer %s)",
				reused, want1.reusable, describe(want1))
		}
	})
}

// h1Script is what a scriptBackend answers: the nth request it reads, on
// whichever connection, gets answers[n-1] in one write; after the first
// answer the connection stays open only if keepOpen, after the last it
// closes.
type h1Script struct {
	answers  [][]byte
	keepOpen bool
	accepted atomic.Int32 // connections served
	answered atomic.Int32 // requests answered
	// The first connection read a second request. (The connections the
	// backend accepted would not tell: a request that gets nothing back
	// on a reused connection is sent again on a new one.)
	secondOnFirst atomic.Bool
}

// scriptBackend is a loopback listener that serves each connection with
// the script that is current when it is accepted.
type scriptBackend struct {
	addr   string
	script atomic.Pointer[h1Script]

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open; guarded by mu
}

func startScriptBackend(tb testing.TB) *scriptBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &scriptBackend{addr: ln.Addr().String(), conns: make(map[net.Conn]struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			sc := b.script.Load()
			wg.Go(func() {
				defer func() {
					c.Close()
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
				}()
				sc.serve(c)
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		wg.Wait()
	})
	return b
}

func (sc *h1Script) serve(c net.Conn) {
	first := sc.accepted.Add(1) == 1
	rr := newRawRequests(c)
	for i := 1; ; i++ {
		if _, err := rr.next(); err != nil {
			return
		}
		if first && i == 2 {
			sc.secondOnFirst.Store(true)
		}
		n := int(sc.answered.Add(1))
		if n > len(sc.answers) {
			return
		}
		if _, err := c.Write(sc.answers[n-1]); err != nil || n == len(sc.answers) || n == 1 && !sc.keepOpen {
			return
		}
	}
}

// FuzzPeekHead: every head that peekHead takes, http.ReadResponse reads the
// same way (status, proto, fields, length, where the head ends, and a
// connection it keeps), and peekHead consumes nothing. The exchange
// targets check the same through the whole client; this one reaches many
// more heads a second.
func FuzzPeekHead(f *testing.F) {
	for _, s := range h1SeedResponses {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(raw), h1ReadBufferSize)
		br.Peek(1)
		buffered := br.Buffered()
		h, ok := peekHead(br)
		if br.Buffered() != buffered {
			t.Fatalf("peekHead consumed %d bytes", buffered-br.Buffered())
		}
		if !ok {
			return
		}
		r := bytes.NewReader(raw)
		rbr := bufio.NewReader(r)
		res, err := http.ReadResponse(rbr, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("peekHead took a head that ReadResponse refuses: %v", err)
		}
		got := h1Outcome{status: h.status, code: h.code, proto: "HTTP/1.1", header: h.header, length: h.length}
		want := h1Outcome{status: res.Status, code: res.StatusCode, proto: res.Proto, header: res.Header, length: res.ContentLength}
		compareExchange(t, got, want)
		if size := len(raw) - r.Len() - rbr.Buffered(); size != h.size {
			t.Errorf("peekHead's head has %d bytes, ReadResponse's %d", h.size, size)
		}
		if res.Close {
			t.Error("peekHead took a head whose response closes the connection")
		}
	})
}
