package demoapp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newServer starts h on a loopback httptest server that is closed when the test ends.
func newServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// do sends a request to srv and returns the response with its whole body read.
func do(t *testing.T, srv *httptest.Server, method, target string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+target, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return resp, string(b)
}

func TestHealthz(t *testing.T) {
	srv := newServer(t, New())
	resp, body := do(t, srv, http.MethodGet, "/healthz", nil)
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("GET /healthz = %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
}

func TestStatus(t *testing.T) {
	srv := newServer(t, New())
	tests := []struct {
		method, path string
		wantCode     int
		wantBody     string // prefix
	}{
		{"GET", "/status/418", 418, "418 I'm a teapot\n"},
		{"POST", "/status/503", 503, "503 Service Unavailable\n"},
		{"GET", "/status/200", 200, "200 OK\n"},
		{"GET", "/status/599", 599, "599 \n"},
		{"GET", "/status/204", 204, ""},
		{"GET", "/status/101", 400, "status \"101\""},
		{"GET", "/status/600", 400, "status \"600\""},
		{"GET", "/status/teapot", 400, "status \"teapot\""},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			resp, body := do(t, srv, tt.method, tt.path, nil)
			if resp.StatusCode != tt.wantCode || !strings.HasPrefix(body, tt.wantBody) {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
			if tt.wantCode == 418 && body != tt.wantBody {
				t.Errorf("body = %q, want exactly %q", body, tt.wantBody)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	srv := newServer(t, New())
	for _, path := range []string{"/nope", "/index.html", "/bytes", "/status"} {
		resp, body := do(t, srv, http.MethodGet, path, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("GET %s: Content-Type = %q, want text/plain", path, ct)
		}
		if !strings.Contains(body, "not found") {
			t.Errorf("GET %s: body = %q", path, body)
		}
	}
}

// finished wraps h so that the returned channel receives each request's path once its handler has
// returned.
func finished(h http.Handler) (http.Handler, <-chan string) {
	done := make(chan string, 16)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		done <- r.URL.Path
	}), done
}

// waitFinished fails the test unless a handler finishes within a few seconds.
func waitFinished(t *testing.T, done <-chan string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still running 5s after the client went away")
	}
}
