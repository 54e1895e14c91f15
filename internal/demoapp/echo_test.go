package demoapp

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// postEcho sends body to /echo+query and decodes the answer.
func postEcho(t *testing.T, c *http.Client, req *http.Request) (*http.Response, Echo) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	var e Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("decode echo: %v", err)
	}
	return resp, e
}

func TestEchoDescribesRequest(t *testing.T) {
	srv := newServer(t, New())
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.URL+"/echo/a%2Fb/c?x=1&y=%20z", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "backend.internal"
	req.Header.Set("X-Request-Id", "abc")
	req.Header.Add("X-Multi", "1")
	req.Header.Add("X-Multi", "2")
	resp, e := postEcho(t, srv.Client(), req)

	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}
	want := Echo{
		Method:        "PUT",
		Path:          "/echo/a/b/c",
		URI:           "/echo/a%2Fb/c?x=1&y=%20z",
		Query:         "x=1&y=%20z",
		Host:          "backend.internal",
		Proto:         "HTTP/1.1",
		ContentLength: 5,
		BodyBytes:     5,
		BodySHA256:    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
	}
	got := e
	got.RemoteAddr, got.Headers = "", nil
	if got.Method != want.Method || got.Path != want.Path || got.URI != want.URI || got.Query != want.Query ||
		got.Host != want.Host || got.Proto != want.Proto || got.ContentLength != want.ContentLength ||
		got.BodyBytes != want.BodyBytes || got.BodySHA256 != want.BodySHA256 || got.Trailers != nil {
		t.Errorf("echo = %+v\nwant %+v", got, want)
	}
	if !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") {
		t.Errorf("remote_addr = %q", e.RemoteAddr)
	}
	if e.Headers.Get("X-Request-Id") != "abc" || strings.Join(e.Headers.Values("X-Multi"), ",") != "1,2" {
		t.Errorf("headers = %v", e.Headers)
	}
}

func TestEchoEveryMethod(t *testing.T) {
	srv := newServer(t, New())
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"} {
		req, err := http.NewRequestWithContext(t.Context(), m, srv.URL+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, e := postEcho(t, srv.Client(), req); e.Method != m || e.BodyBytes != 0 {
			t.Errorf("%s /echo: method %q, %d body bytes", m, e.Method, e.BodyBytes)
		}
	}
}

// TestEchoStreamedUpload uploads 64 MiB chunked and checks that the digest matches and that the
// server did not hold the body in memory.
func TestEchoStreamedUpload(t *testing.T) {
	const size = 64 << 20
	srv := newServer(t, New())
	wantSum := BytesSHA256(size)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	// Hiding the reader's type hides its length, so the upload is chunked.
	body := struct{ io.Reader }{NewBytesReader(size)}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/echo", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Trailer = http.Header{"X-Upload-Trailer": {"done"}}
	resp, e := postEcho(t, srv.Client(), req)
	runtime.ReadMemStats(&after)

	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	if e.ContentLength != -1 || e.BodyBytes != size || e.BodySHA256 != hex.EncodeToString(wantSum[:]) {
		t.Errorf("content_length %d, body_bytes %d, body_sha256 %s; want -1, %d, %x",
			e.ContentLength, e.BodyBytes, e.BodySHA256, size, wantSum)
	}
	if got := e.Trailers.Get("X-Upload-Trailer"); got != "done" {
		t.Errorf("trailers = %v, want X-Upload-Trailer: done", e.Trailers)
	}
	// Client and server together; a buffered body alone would be 64 MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("uploading %d bytes allocated %d bytes; is the body buffered?", size, alloc)
	}
}

func TestEchoStatusAndBadQueries(t *testing.T) {
	srv := newServer(t, New())
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/echo?status=418", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	if resp, e := postEcho(t, srv.Client(), req); resp.StatusCode != 418 || e.BodyBytes != 1 {
		t.Errorf("?status=418: got %d with %d body bytes", resp.StatusCode, e.BodyBytes)
	}
	for _, q := range []string{"status=99", "status=600", "status=x", "delay=soon", "delay=-1s", "delay=11m"} {
		resp, body := do(t, srv, http.MethodGet, "/echo?"+q, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/echo?%s = %d %q, want 400", q, resp.StatusCode, body)
		}
	}
}

func TestEchoDelay(t *testing.T) {
	waited := make(chan time.Duration, 2)
	a := &app{wait: func(_ context.Context, d time.Duration) error {
		waited <- d
		return nil
	}}
	srv := newServer(t, a.handler())
	resp, _ := do(t, srv, http.MethodGet, "/echo?delay=100ms&status=202", nil)
	if resp.StatusCode != http.StatusAccepted || len(waited) != 1 {
		t.Fatalf("status %d after %d waits; want 202 after one wait", resp.StatusCode, len(waited))
	}
	if d := <-waited; d != 100*time.Millisecond {
		t.Errorf("waited %v, want 100ms", d)
	}

	// The real timer.
	srv = newServer(t, New())
	start := time.Now()
	resp, _ = do(t, srv, http.MethodGet, "/echo?delay=20ms", nil)
	if elapsed := time.Since(start); resp.StatusCode != http.StatusOK || elapsed < 20*time.Millisecond {
		t.Errorf("delay=20ms: status %d after %v", resp.StatusCode, elapsed)
	}
}

// TestEchoDelayCancelled checks that a client giving up ends a long delay at once.
func TestEchoDelayCancelled(t *testing.T) {
	entered := make(chan struct{})
	a := &app{wait: func(ctx context.Context, d time.Duration) error {
		close(entered)
		return sleepCtx(ctx, d)
	}}
	h, done := finished(a.handler())
	srv := newServer(t, h)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/echo?delay=10m", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; err == nil {
		t.Error("request succeeded although it was cancelled")
	}
	waitFinished(t, done)
}
