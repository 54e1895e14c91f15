package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// answerWait bounds how long these tests wait for a response head that
// should come at once; only a failing run waits it out.
const answerWait = 10 * time.Second

// startUpload sends a POST of unknown length whose body the test writes
// through the returned pipe, and delivers the response (or the error) on
// the channel as soon as its head arrives.
func startUpload(t *testing.T, c *http.Client, url string) (*io.PipeWriter, <-chan *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	req := appRequest(t, ctx, "POST", url, pr)
	got := make(chan *http.Response, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err := c.Do(req)
		if err != nil {
			pr.CloseWithError(err)
			got <- nil
			return
		}
		got <- res
	}()
	t.Cleanup(func() {
		cancel()
		pw.CloseWithError(io.ErrClosedPipe)
		<-done
		select {
		case res := <-got: // not taken by waitHead
			if res != nil {
				res.Body.Close()
			}
		default:
		}
	})
	return pw, got
}

func waitHead(t *testing.T, got <-chan *http.Response, what string) *http.Response {
	t.Helper()
	select {
	case res := <-got:
		if res == nil {
			t.Fatalf("%s: the request failed", what)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	case <-time.After(answerWait):
		t.Fatalf("%s: no response head within %s while the client's body is unfinished", what, answerWait)
	}
	return nil
}

// TestEarlyAnswerDuringUpload: a backend that answers before it has read
// the request body (a 403 to an upload) reaches the client at once, while
// the client is still sending. The gateway's net/http server used to read
// up to 256 KiB more of the client's body before it wrote any response head
// (its default for a handler that answers with the body unread), so a
// slow uploader waited for 256 KiB at its own pace (13 s at 20 KiB/s);
// errors the gateway answers itself (504 after the app's timeout, the
// second case) waited too, and the access log showed a duration far
// shorter than the client's.
func TestEarlyAnswerDuringUpload(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			// Reading the body is how net/http's server notices that the
			// agent gave up: it fails once the connection closes.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		// Connection: close, or net/http would itself read up to 256 KiB
		// of the unread body before it answers.
		w.Header().Set("Connection", "close")
		http.Error(w, "uploads are closed", http.StatusForbidden)
	}))
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "early", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL), Timeout: 300 * time.Millisecond},
	}})
	rig.StartAgent(nil)
	for path, want := range map[string]int{"/upload": http.StatusForbidden, "/hang": http.StatusGatewayTimeout} {
		t.Run(path, func(t *testing.T) {
			pw, got := startUpload(t, rig.Client(), rig.URL+path)
			if _, err := pw.Write(make([]byte, 1024)); err != nil {
				t.Fatal(err)
			}
			res := waitHead(t, got, fmt.Sprintf("the %d", want))
			if res.StatusCode != want {
				t.Fatalf("status %d (%s), want %d", res.StatusCode, res.Header.Get("X-Sallyport-Error"), want)
			}
		})
	}
}

// TestFullDuplexUpload: a backend that answers while it still reads the
// request body (it sends its head after the first KiB, then the body's
// length and hash once it has all of it) gets every byte the client sends
// after the response head arrived. The gateway's net/http server used to
// consume the rest of the client's body itself when the relay wrote the
// head (up to 256 KiB, concurrently with the relay reading it for the
// backend), so the head never came while the client waited for it, and a
// client that kept sending lost bytes to it.
func TestFullDuplexUpload(t *testing.T) {
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("backend: %v", err)
		}
		h := sha256.New()
		first, err := io.CopyN(h, r.Body, 1024)
		if err != nil {
			t.Errorf("backend: first KiB: %v", err)
			return
		}
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			t.Errorf("backend: flush: %v", err)
		}
		rest, err := io.Copy(h, r.Body)
		if err != nil {
			t.Errorf("backend: rest of the body: %v", err)
		}
		fmt.Fprintf(w, "%d %x", first+rest, h.Sum(nil))
	}))
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "duplex", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	pw, got := startUpload(t, rig.Client(), rig.URL+"/echo-hash")
	body := []byte(strings.Repeat("0123456789abcdef", 300<<10/16)) // 300 KiB: more than net/http's 256 KiB
	if _, err := pw.Write(body[:1024]); err != nil {
		t.Fatal(err)
	}
	res := waitHead(t, got, "backend's early head")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	for off := 1024; off < len(body); off += 16 << 10 {
		if _, err := pw.Write(body[off:min(off+16<<10, len(body))]); err != nil {
			t.Fatalf("client: write at %d: %v", off, err)
		}
	}
	pw.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("client: read answer: %v", err)
	}
	sum := sha256.Sum256(body)
	if want := fmt.Sprintf("%d %s", len(body), hex.EncodeToString(sum[:])); string(b) != want {
		t.Fatalf("backend got %q, want %q (all the client's bytes)", b, want)
	}
}
