package agent

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestPeekHead compares the fast head parser with http.ReadResponse: every
// head it takes must come out the same, and it must leave the others (and
// the reader's bytes) to ReadResponse.
func TestPeekHead(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		taken     bool
	}{
		{"usual", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", true},
		{"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", true},
		{"odd reason", "HTTP/1.1 599 Very Odd  Status\r\nContent-Length: 0\r\n\r\n", true},
		{"repeated field", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-A: 1\r\nSet-Cookie: b=2\r\nContent-Length: 1\r\n\r\nx", true},
		{"lower-case names, padded values", "HTTP/1.1 200 OK\r\ncontent-length:  3 \r\nx-a:\tv\t\r\nX-Empty:\r\n\r\nabc", true},
		{"leading zeros", "HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n1234567", true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"close-delimited", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false},
		{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 0\r\n\r\n", false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false},
		{"103", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx", false},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", false},
		{"folded line", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", false},
		{"space before colon", "HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 0\r\n\r\n", false},
		{"control in value", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n", false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", false},
		// ReadResponse ends the status line at the LF: the next line is
		// a field that frames the body as chunked.
		{"LF in status line", "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\r\nContent-Length: 12\r\n\r\n0\r\n\r\nabcdefg", false},
		// ReadResponse ends the head at the CRLF after the LF: what
		// follows is a body until the connection closes.
		{"LF before CRLF", "HTTP/1.1 200 OK\r\nX-A: a\n\r\nContent-Length: 0\r\n\r\n", false},
		{"CR at end of value", "HTTP/1.1 200 OK\r\nX-A: a\r\r\nContent-Length: 0\r\n\r\n", false},
		{"bad status", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"long status", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"head not complete", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.raw))
			br.Peek(1)
			h, ok := peekHead(br)
			if ok != tc.taken {
				t.Fatalf("taken %v, want %v", ok, tc.taken)
			}
			if br.Buffered() != len(tc.raw) {
				t.Fatalf("peekHead consumed %d bytes", len(tc.raw)-br.Buffered())
			}
			if !ok {
				return
			}
			want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.raw)), nil)
			if err != nil {
				t.Fatalf("ReadResponse: %v", err)
			}
			if h.status != want.Status || h.code != want.StatusCode || h.length != want.ContentLength ||
				!reflect.DeepEqual(h.header, want.Header) {
				t.Errorf("peekHead: %q %d length %d %q\nReadResponse: %q %d length %d %q",
					h.status, h.code, h.length, h.header, want.Status, want.StatusCode, want.ContentLength, want.Header)
			}
			br.Discard(h.size)
			body, _ := io.ReadAll(&lengthBody{br: br, left: h.length})
			wantBody, _ := io.ReadAll(want.Body)
			if string(body) != string(wantBody) {
				t.Errorf("body %q, want %q", body, wantBody)
			}
		})
	}
}

// TestH1SyncTruncatedBody: a body that ends before its Content-Length is an
// error (not a clean end), and its connection is not reused.
func TestH1SyncTruncatedBody(t *testing.T) {
	addr, accepted := rawBackend(t, func(c net.Conn) {
		reqs := newRawRequests(c)
		if _, err := reqs.next(); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
	})
	s := newTestH1Sync(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/", nil)
	res, err := s.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(body) != "only this" {
		t.Fatalf("read %q, %v; want \"only this\" and io.ErrUnexpectedEOF", body, err)
	}
	if n := s.idleCount(); n != 0 || accepted.Load() != 1 {
		t.Fatalf("%d idle connections after a truncated body, want 0", n)
	}
}
