package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestH1SyncHandshakeEnds: a TLS backend that never answers the handshake
// costs an exchange until it is cancelled or the handshake timeout passes,
// and the connection is closed either way (the backend reads its end;
// goleak in TestMain finds any goroutine left behind).
func TestH1SyncHandshakeEnds(t *testing.T) {
	hello := make(chan struct{}, 4)
	closed := make(chan struct{}, 4)
	addr, _ := rawBackend(t, func(c net.Conn) {
		var b [1]byte
		if _, err := c.Read(b[:]); err == nil { // the ClientHello came
			hello <- struct{}{}
		}
		io.Copy(io.Discard, c) // answers nothing
		closed <- struct{}{}
	})
	u := "https://" + addr + "/"

	t.Run("cancelled", func(t *testing.T) {
		s := newTestH1Sync(t)
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		done := make(chan error, 1)
		go func() {
			_, err := s.RoundTrip(req)
			done <- err
		}()
		<-hello // the handshake is under way
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		<-closed
	})
	t.Run("timeout", func(t *testing.T) {
		s := newTestH1Sync(t)
		s.HandshakeTimeout = 10 * time.Millisecond
		_, _, err := roundTripBody(t, s, http.MethodGet, u)
		if err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("err = %v, want the handshake timed out", err)
		}
		<-closed
	})
}
