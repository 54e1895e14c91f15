package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel"
)

// The app's timeout and request bodies: it bounds the wait for the
// response head after the request body's last piece, and a body that stops
// moving, but not an upload that moves at a steady pace, however long it
// takes. It used to count from the request head, so every upload that took
// longer than the app's timeout (85 s by default: 100 MB at 1 MB/s) got
// 504 backend-timeout while the backend was still reading it.

// uploadTimeout is the app's timeout in these tests; uploadPace is the gap
// between two pieces of the steady upload, well under it.
const (
	uploadTimeout = time.Second
	uploadPace    = uploadTimeout / 10
)

func uploadTimeoutRig(t *testing.T, transport string, h http.HandlerFunc) string {
	t.Helper()
	backend := httptest.NewServer(h)
	t.Cleanup(backend.Close)
	rig := testrig.New(t, testrig.Options{Transport: transport, Routes: []gateway.Route{
		{App: "upload", Hosts: []string{"upload.test"}, Backend: testrig.MustURL(t, backend.URL), Timeout: uploadTimeout}}})
	rig.StartAgent(nil)
	return rig.G.PublicAddr().String()
}

// readRawResponse reads one response from c and its whole body.
func readRawResponse(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the response: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

// TestUploadTimeout checks the three cases above on every transport. They
// run in parallel (each has its own rig): each waits on the app's timeout
// or the steady upload's pace, not on the CPU.
func TestUploadTimeout(t *testing.T) {
	for _, tr := range testrig.Transports {
		t.Run(tr+"/steady upload longer than the timeout", func(t *testing.T) {
			t.Parallel()
			steadyUpload(t, tr, 25, 4000) // 2.5 times the timeout at uploadPace
		})
		t.Run(tr+"/backend stops reading", func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			addr := uploadTimeoutRig(t, tr, func(w http.ResponseWriter, r *http.Request) {
				io.CopyN(io.Discard, r.Body, 1000)
				<-release // never reads more, never answers
			})
			t.Cleanup(func() { close(release) }) // before the backend's Close, which waits for it
			c := dialRaw(t, addr)
			go func() {
				fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: upload.test\r\nContent-Length: 1000000000\r\n\r\n")
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
			res, _ := readRawResponse(t, c)
			if res.StatusCode != http.StatusGatewayTimeout || res.Header.Get(gateway.ErrorHeader) != gateway.CodeBackendTimeout {
				t.Fatalf("an upload to a backend that stopped reading got %s %s; want 504 %s",
					res.Status, res.Header.Get(gateway.ErrorHeader), gateway.CodeBackendTimeout)
			}
		})
		t.Run(tr+"/client stops sending", func(t *testing.T) {
			t.Parallel()
			addr := uploadTimeoutRig(t, tr, func(w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				fmt.Fprintf(w, "read %d, %v", n, err)
			})
			c := dialRaw(t, addr)
			// A body over tunnel.CoalesceLimit, which streams: a smaller one
			// is read whole before the request is relayed and ends with
			// 408 bad-request instead (TestSlowSmallBodies).
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: upload.test\r\nContent-Length: %d\r\n\r\n0123456789", 2*tunnel.CoalesceLimit)
			res, _ := readRawResponse(t, c)
			if res.StatusCode != http.StatusGatewayTimeout || res.Header.Get(gateway.ErrorHeader) != gateway.CodeBackendTimeout {
				t.Fatalf("a request whose body stopped coming got %s %s; want 504 %s",
					res.Status, res.Header.Get(gateway.ErrorHeader), gateway.CodeBackendTimeout)
			}
		})
	}
}

// steadyUpload sends a POST of pieces×size bytes through a rig of
// transport tr, one piece every uploadPace, and wants 200 with the
// backend's count of what it read, however long that takes beyond the
// app's timeout.
func steadyUpload(t *testing.T, tr string, pieces, size int) {
	t.Helper()
	addr := uploadTimeoutRig(t, tr, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "read %d, %v", n, err)
	})
	c := dialRaw(t, addr)
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: upload.test\r\nContent-Length: %d\r\n\r\n", pieces*size)
	piece := strings.Repeat("x", size)
	sent := make(chan error, 1)
	go func() {
		tick := time.NewTicker(uploadPace)
		defer tick.Stop()
		for range pieces {
			if _, err := io.WriteString(c, piece); err != nil {
				sent <- err
				return
			}
			<-tick.C
		}
		sent <- nil
	}()
	res, body := readRawResponse(t, c)
	if res.StatusCode != http.StatusOK || body != fmt.Sprintf("read %d, <nil>", pieces*size) {
		t.Fatalf("a %d-byte upload that kept moving for longer than the app's timeout (%s) got %s %s %q; want 200 "+
			"with the backend's count", pieces*size, uploadTimeout, res.Status, res.Header.Get(gateway.ErrorHeader), body[:min(len(body), 80)])
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}
