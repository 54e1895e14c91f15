//go:build unix

package agent

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestH1SyncHTTP10TransferEncoding: an HTTP/1.0 response that names a
// Transfer-Encoding has faulty framing (RFC 9112 §6.1: the connection must
// be closed after it, since the sender may have framed it otherwise and
// still be sending). net/http reads it by its Content-Length and keeps a
// keep-alive connection; the rest of the backend's chunked body, sent
// after the next request went out, would answer that request, another
// user's. The agent keeps no connection after an HTTP/1.0 response.
func TestH1SyncHTTP10TransferEncoding(t *testing.T) {
	skipWithoutIdleCheck(t)
	const rest = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale\r\n0\r\n\r\n"
	var first atomic.Bool
	addr, accepted := rawBackend(t, func(c net.Conn) {
		reqs := newRawRequests(c)
		if !first.CompareAndSwap(false, true) {
			answerFresh(reqs, c)
			return
		}
		if _, err := reqs.next(); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"+
			"2b\r\n")
		// The rest of the chunked body once the next request came, or
		// the connection closed.
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			return
		}
		io.WriteString(c, rest)
		io.Copy(io.Discard, c)
	})
	s := newTestH1Sync(t)
	u := "http://" + addr + "/"
	if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "2b\r\n" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "fresh" {
		t.Fatalf("second request: %q, %v; want the answer of a new connection, \"fresh\"", body, err)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}
