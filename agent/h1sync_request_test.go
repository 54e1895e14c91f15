package agent

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestH1SyncRequestInjection: request heads that would let a request
// smuggle another one to the backend, or change its Host or framing, are
// refused before a byte is sent, or sent as exactly one bodiless request
// with the Host the exchange asked for. Heads come from the tunnel, which
// validates them too (tunnel.RequestFromHead); h1Sync must not rely on it.
func TestH1SyncRequestInjection(t *testing.T) {
	var mu sync.Mutex
	var got []string // the raw bytes of each connection
	addr, _ := rawBackend(t, func(c net.Conn) {
		var raw strings.Builder
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err == nil {
			raw.WriteString(req.Host + "|" + req.Header.Get("Transfer-Encoding") + "|" + req.Header.Get("Content-Length"))
		} else {
			raw.WriteString("bad request: " + err.Error())
		}
		// Nothing may follow the one request.
		if n := br.Buffered(); n != 0 {
			raw.WriteString("|surplus")
		}
		// Recorded before the answer: once RoundTrip has it, got has this
		// connection's line (recorded after it, a late line went to the
		// next case's got, and a case could pass with got still empty).
		mu.Lock()
		got = append(got, raw.String())
		mu.Unlock()
		if err == nil {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"))
		}
	})
	for _, tc := range []struct {
		name string
		set  func(r *http.Request)
	}{
		{"CRLF in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\r\nHost: evil"} }},
		{"LF in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\nTransfer-Encoding: chunked"} }},
		{"CR in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\rb"} }},
		{"NUL in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\x00b"} }},
		{"colon in a name", func(r *http.Request) { r.Header["Host: evil\r\nX"] = []string{"1"} }},
		{"space in a name", func(r *http.Request) { r.Header["X A"] = []string{"1"} }},
		{"empty name", func(r *http.Request) { r.Header[""] = []string{"1"} }},
		// Request.Write sends an invalid Host as an empty one (an empty
		// Host is valid: RFC 9112 §3.2), as http.Transport does.
		{"CRLF in Host", func(r *http.Request) { r.Host = "app\r\nX-Injected: 1" }},
		{"Host field", func(r *http.Request) { r.Header["Host"] = []string{"evil"} }},
		{"framing fields", func(r *http.Request) {
			r.Header["Transfer-Encoding"] = []string{"chunked"}
			r.Header["Content-Length"] = []string{"5"}
		}},
		{"Connection: close", func(r *http.Request) { r.Header["Connection"] = []string{"close"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			s := newTestH1Sync(t)
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/", nil)
			req.Host = "app.test"
			tc.set(req)
			res, err := s.RoundTrip(req)
			if err == nil {
				res.Body.Close()
			}
			s.CloseIdleConnections()
			mu.Lock()
			defer mu.Unlock()
			want := "app.test||"
			if tc.name == "CRLF in Host" {
				want = "||"
			}
			for _, g := range got {
				if g != want {
					t.Errorf("the backend read %q (err %v), want one request, %q (Host, Transfer-Encoding, Content-Length)", g, err, want)
				}
			}
			if err != nil && len(got) != 0 {
				t.Errorf("refused (%v), but %d connections were opened", err, len(got))
			}
			if err == nil && len(got) != 1 {
				t.Errorf("sent, and the backend read %d requests, want 1", len(got))
			}
		})
	}
}
