//go:build unix

package agent

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
)

// TestH1SyncTLSPartialRecord: a TLS backend answers with a whole
// response and sends, just after it, a response nobody asked for in a
// record of its own, of which only the first bytes come with the answer
// (a large record spans many TCP segments). The TLS connection reads those
// bytes with the answer's last record but cannot decrypt them yet: nothing
// is in the read buffer, and the socket is empty when the next request
// looks. The rest of the record arrives after the next request was
// written. The connection must not carry that request: the bytes already
// received are the start of a response that no request asked for, and
// would answer it, another user's, with the first one's bytes.
func TestH1SyncTLSPartialRecord(t *testing.T) {
	const stale = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
	serverTLS, clientTLS := testTLSConfigs(t)
	serverTLS.DynamicRecordSizingDisabled = true // a record as large as the write
	var first atomic.Bool
	addr, accepted := rawBackend(t, func(c net.Conn) {
		hc := &heldConn{Conn: c}
		sc := tls.Server(hc, serverTLS)
		reqs := newRawRequests(sc)
		if !first.CompareAndSwap(false, true) {
			answerFresh(reqs, sc)
			return
		}
		if _, err := reqs.next(); err != nil {
			return
		}
		hc.hold = true
		io.WriteString(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		answer := len(hc.held)
		io.WriteString(sc, stale)
		held := hc.held
		// The answer and the first 10 bytes of the next record (its
		// 5-byte header and 5 of its bytes) in one TCP write.
		if _, err := c.Write(held[:answer+10]); err != nil {
			return
		}
		// The rest only once the client sent something: a request on
		// this connection.
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			return
		}
		c.Write(held[answer+10:])
		io.Copy(io.Discard, c)
	})
	s := newTestH1Sync(t)
	s.TLS = clientTLS
	u := "https://" + addr + "/"
	if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "ok" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	if _, body, err := roundTripBody(t, s, http.MethodGet, u); err != nil || body != "fresh" {
		t.Fatalf("second request: %q, %v; want the answer of a new connection, \"fresh\"", body, err)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestH1SyncTLSRecordFraming: tlsRecordConn follows the record framing
// through reads cut anywhere, zero-length and 16 KiB records included, and
// a TLS connection that only reuses answers stays in use.
func TestH1SyncTLSRecordFraming(t *testing.T) {
	var stream []byte
	var ends []int // where each record ends
	for _, n := range []int{0, 1, 4, 5, 255, 256, 16384 + 256, 3} {
		stream = append(stream, 23, 3, 3, byte(n>>8), byte(n))
		stream = append(stream, make([]byte, n)...)
		ends = append(ends, len(stream))
	}
	for _, cut := range []int{1, 2, 3, 5, 7, 4096, len(stream)} {
		var c tlsRecordConn
		for at := 0; at < len(stream); {
			next := min(at+cut, len(stream))
			c.track(stream[at:next])
			at = next
			if got, want := c.midRecord(), !slices.Contains(ends, at); got != want {
				t.Fatalf("reads of %d: at byte %d midRecord is %v, want %v", cut, at, got, want)
			}
		}
	}

	serverTLS, clientTLS := testTLSConfigs(t)
	addr, accepted := rawBackend(t, func(c net.Conn) {
		sc := tls.Server(c, serverTLS)
		answerFresh(newRawRequests(sc), sc)
	})
	s := newTestH1Sync(t)
	s.TLS = clientTLS
	for i := 0; i < 3; i++ {
		if _, body, err := roundTripBody(t, s, http.MethodGet, "https://"+addr+"/"); err != nil || body != "fresh" {
			t.Fatalf("request %d: %q, %v", i+1, body, err)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("3 requests took %d TLS connections, want 1", n)
	}
}
