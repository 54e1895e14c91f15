package demoapp

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// dialWS opens srv's /ws with the given handshake headers; the connection is closed when the test
// ends.
func dialWS(ctx context.Context, t *testing.T, srv *httptest.Server, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: srv.Client(), HTTPHeader: hdr})
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, resp, nil
}

func TestWSEcho(t *testing.T) {
	h, done := finished(New())
	srv := newServer(t, h)
	ctx := t.Context()
	c, _, err := dialWS(ctx, t, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(2 * maxWSMessage)

	big := make([]byte, maxWSMessage)
	if _, err := io.ReadFull(NewBytesReader(maxWSMessage), big); err != nil {
		t.Fatal(err)
	}
	msgs := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello, backend")},
		{websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe}},
		{websocket.MessageText, []byte("")},
		{websocket.MessageBinary, big}, // exactly the read limit
	}
	for i, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: read: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Fatalf("message %d: echo is %v of %d bytes, want %v of %d bytes", i, typ, len(got), m.typ, len(m.data))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
	waitFinished(t, done)
}

// TestWSCloseCode checks that the server answers a close frame with the same code. Conn.Close
// returns nil only when the peer's close frame carries the code it sent.
func TestWSCloseCode(t *testing.T) {
	srv := newServer(t, New())
	for _, code := range []websocket.StatusCode{
		websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusPolicyViolation, 4000, 4999,
	} {
		c, _, err := dialWS(t.Context(), t, srv, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Write(t.Context(), websocket.MessageText, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(code, "test done"); err != nil {
			t.Errorf("close with %v: %v", code, err)
		}
	}
}

func TestWSMessageTooBig(t *testing.T) {
	srv := newServer(t, New())
	c, _, err := dialWS(t.Context(), t, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The write may or may not finish before the server gives up on it; either way the read below
	// must report the server's close code.
	_ = c.Write(t.Context(), websocket.MessageBinary, make([]byte, maxWSMessage+1))
	_, _, err = c.Read(t.Context())
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Fatalf("read after an oversized message: %v (close status %v), want %v", err, got, websocket.StatusMessageTooBig)
	}
}

func TestWSOrigin(t *testing.T) {
	srv := newServer(t, New())
	selfHost := strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		name           string
		origin, fwHost string
		ok             bool
	}{
		{"no origin (not a browser)", "", "", true},
		{"same host", "http://" + selfHost, "", true},
		{"other site", "http://evil.example", "", false},
		{"other port", "http://127.0.0.1:1", "", false},
		{"external host via X-Forwarded-Host", "https://hello.example.com", "hello.example.com", true},
		{"external host later in the list", "https://hello.example.com:8443", "edge.example, hello.example.com:8443", true},
		{"other site behind a proxy", "https://evil.example", "hello.example.com", false},
		{"wildcard in X-Forwarded-Host", "https://evil.example", "*", false},
		{"pattern in X-Forwarded-Host", "https://evil.example", "*.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{}
			if tt.origin != "" {
				hdr.Set("Origin", tt.origin)
			}
			if tt.fwHost != "" {
				hdr.Set("X-Forwarded-Host", tt.fwHost)
			}
			c, resp, err := dialWS(t.Context(), t, srv, hdr)
			if !tt.ok {
				if err == nil {
					t.Fatal("handshake accepted, want 403")
				}
				if resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("handshake failed with %v, want 403", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestWSPlainGET(t *testing.T) {
	srv := newServer(t, New())
	if resp, _ := do(t, srv, http.MethodGet, "/ws", nil); resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET /ws = %d, want 426", resp.StatusCode)
	}
}
