package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"testing"
	"time"
)

// TestWriteInformational: a 103 goes to the client with its own headers
// but the hop-by-hop ones, and without the headers the gateway set for
// the final response (a session cookie), which the final response still
// has, without the 103's; the status recorded for the access log is the
// final one.
func TestWriteInformational(t *testing.T) {
	status := make(chan int, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		rec.Header().Set("Set-Cookie", "session=refreshed")
		rec.WriteInformational(http.StatusEarlyHints, http.Header{
			"Link":       {"</a.css>; rel=preload"},
			"Connection": {"X-Hop, Keep-Alive"},
			"X-Hop":      {"1"},
			"Keep-Alive": {"timeout=5"},
		})
		rec.Header().Set("Content-Type", "text/plain")
		io.WriteString(rec, "final")
		status <- rec.Status()
	}))
	defer srv.Close()
	var hints []textproto.MIMEHeader
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		if code == http.StatusEarlyHints {
			hints = append(hints, h)
		}
		return nil
	}})
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if len(hints) != 1 {
		t.Fatalf("%d 103s, want 1", len(hints))
	}
	h := hints[0]
	if h.Get("Link") != "</a.css>; rel=preload" || h.Get("Set-Cookie") != "" || h.Get("X-Hop") != "" ||
		h.Get("Connection") != "" || h.Get("Keep-Alive") != "" {
		t.Fatalf("103 headers %v: want the Link alone", h)
	}
	if res.Header.Get("Set-Cookie") != "session=refreshed" || res.Header.Get("Link") != "" {
		t.Fatalf("final headers %v: want the cookie and no Link", res.Header)
	}
	if s := <-status; s != http.StatusOK {
		t.Fatalf("recorded status %d, want 200", s)
	}
}
