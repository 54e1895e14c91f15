package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestAbortedUploadIsClientClosed: a client that gives up an upload midway
// is gone, over HTTP/1.1 (its connection closed) and HTTP/2 (the stream
// reset, or the connection dropped): the access log says client-closed
// and the gateway logs no failed exchange. Over HTTP/2 the body's error is
// a stream error, not a reset connection, and it was a 400 bad-request
// warning in the log and errors_total.
func TestAbortedUploadIsClientClosed(t *testing.T) {
	for _, proto := range relayProtocols {
		t.Run(proto.name, func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var b [1]byte
				if _, err := io.ReadFull(r.Body, b[:]); err == nil {
					arrived <- struct{}{}
				}
				io.Copy(io.Discard, r.Body)
			}))
			t.Cleanup(backend.Close)
			core, logs := observer.New(zap.InfoLevel)
			rig := testrig.New(t, testrig.Options{
				Routes: []gateway.Route{{App: "up", Hosts: []string{"up.test"}, Backend: testrig.MustURL(t, backend.URL)}},
				Log:    zap.New(core),
			})
			rig.StartAgent(nil)
			pr, pw := io.Pipe()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, rig.URL+"/upload", pr)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "up.test"
			done := make(chan struct{})
			go func() {
				defer close(done)
				if res, err := relayProtocolClient(t, proto.set).Do(req); err == nil {
					res.Body.Close()
				}
			}()
			go pw.Write(make([]byte, 100<<10)) // the rest waits in the pipe
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the upload's first byte did not reach the backend")
			}
			cancel() // the client gives up
			pw.CloseWithError(context.Canceled)
			<-done
			var access []observer.LoggedEntry
			for deadline := time.Now().Add(10 * time.Second); len(access) == 0 && time.Now().Before(deadline); {
				access = logs.FilterMessage("access").All()
				time.Sleep(5 * time.Millisecond)
			}
			if len(access) != 1 {
				t.Fatalf("%d access lines, want 1", len(access))
			}
			if f := access[0].ContextMap(); f["error"] != gateway.CodeClientClosed {
				t.Errorf("access line of the aborted upload: status %v, error %v; want %s", f["status"], f["error"], gateway.CodeClientClosed)
			}
			if l := logs.FilterMessageSnippet("exchange failed").All(); len(l) != 0 {
				t.Errorf("the aborted upload was logged as a failed exchange: %s %v", l[0].Message, l[0].ContextMap())
			}
		})
	}
}
