package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

// maxH1SyncAllocs is the allocation budget of one GET with a 64-byte answer
// through h1Sync on a kept-alive connection, reading the body to its end.
const maxH1SyncAllocs = 6

// TestH1SyncAllocs proves the budget against a backend that allocates
// nothing per request, so that only the client's allocations count.
func TestH1SyncAllocs(t *testing.T) {
	skipWithoutIdleCheck(t)
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./agent/)")
	}
	const answer = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 64\r\n\r\n" +
		"0123456789012345678901234567890123456789012345678901234567890123"
	addr, _ := rawBackend(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		var head []byte
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			head = append(head[:0], buf[:n]...)
			if bytes.HasSuffix(head, []byte("\r\n\r\n")) {
				if _, err := io.WriteString(c, answer); err != nil {
					return
				}
			}
		}
	})
	s := newTestH1Sync(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/bytes/64", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "*/*")
	req.Header.Set("X-Forwarded-For", "192.0.2.1")
	buf := make([]byte, 128)
	get := func() {
		res, err := s.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = res.Body.Read(buf)
		}
		res.Body.Close()
	}
	get() // warm up: the connection, the pools
	got := testing.AllocsPerRun(500, get)
	t.Logf("%.1f allocations per GET", got)
	if got > maxH1SyncAllocs {
		t.Fatalf("a GET through h1Sync allocates %.1f times, want at most %d", got, maxH1SyncAllocs)
	}
	if n := s.idleCount(); n != 1 {
		t.Errorf("%d idle connections, want the one reused", n)
	}
}
