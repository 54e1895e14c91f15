package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestHalfClosedClientGetsNoFakeAnswer: a client that half-closes its
// connection after its request (shutdown(SHUT_WR), as `nc -N` does) has
// its exchange cancelled by net/http, which takes the end of the client's
// side for the client leaving. The gateway answered such an exchange with
// nothing, so net/http sent an empty 200 OK of its own, which the client
// read as the backend's answer. It now gets no response: the connection
// ends, as nginx does (499 in the access log).
func TestHalfClosedClientGetsNoFakeAnswer(t *testing.T) {
	for _, tr := range testrig.Transports {
		t.Run(tr, func(t *testing.T) {
			release := make(chan struct{})
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
				io.WriteString(w, "the backend's answer")
			}))
			t.Cleanup(backend.Close)
			t.Cleanup(func() { close(release) })
			rig := testrig.New(t, testrig.Options{Transport: tr, Routes: []gateway.Route{
				{App: "half", Hosts: []string{"half.test"}, Backend: testrig.MustURL(t, backend.URL)}}})
			rig.StartAgent(nil)
			c, err := net.Dial("tcp", rig.G.PublicAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.SetDeadline(time.Now().Add(upgradeWait))
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: half.test\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if isTimeout(err) {
				t.Fatalf("no answer and no end of the connection by the test's bound: %v", err)
			}
			if err == nil {
				body, _ := io.ReadAll(res.Body)
				t.Fatalf("a half-closed client got %s with body %q; want the connection ended without a "+
					"response (the backend never answered)", res.Status, body)
			}
		})
	}
}
