package tunnel

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// handOverStream is a Stream with SendData. It keeps every buffer handed to
// it, with a copy of the bytes it carried, until release: a sender that
// wrote into a buffer it gave away would change them.
type handOverStream struct {
	Stream
	mu     sync.Mutex
	handed []handedBuf // guarded by mu
}

type handedBuf struct {
	buf     *[]byte
	want    []byte
	release func(*[]byte)
}

func (s *handOverStream) SendData(buf *[]byte, n int, release func(*[]byte)) error {
	data := (*buf)[:n]
	s.mu.Lock()
	s.handed = append(s.handed, handedBuf{buf, bytes.Clone(data), release})
	s.mu.Unlock()
	return s.Send(&Frame{Data: data}) // the pipe copies, as a transport would write
}

// check fails t unless chunks were handed over and none was written to
// afterwards; then it releases them.
func (s *handOverStream) check(t *testing.T, side string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.handed) < 2 {
		t.Errorf("%s: %d chunks handed over by SendData; want the body's chunks", side, len(s.handed))
	}
	seen := map[*[]byte]bool{}
	for i, h := range s.handed {
		if seen[h.buf] {
			t.Errorf("%s: chunk %d reuses a buffer handed over before its release", side, i)
		}
		seen[h.buf] = true
		if !bytes.Equal((*h.buf)[:len(h.want)], h.want) {
			t.Errorf("%s: chunk %d was changed after it was handed over", side, i)
		}
		h.release(h.buf)
	}
	s.handed = nil
}

// TestLargeBodiesHandedOver: with a DataSender stream, both bodies of an
// exchange (the request's from RoundTrip, the response's from ServeStream)
// travel in buffers handed to the stream, never touched again by the
// sender, and arrive intact.
func TestLargeBodiesHandedOver(t *testing.T) {
	gw, ag := newPipe(2)
	gws := &handOverStream{Stream: gw.lease()}
	ags := &handOverStream{Stream: ag}
	body := pattern(5*ChunkSize + 7)
	be := &testBackend{respond: func(req *http.Request, b []byte) (*http.Response, error) {
		return bodyResponse(req, 200, b, -1), nil
	}}
	srv := &Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return be, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeStream(ctx, ags) }()
	t.Cleanup(func() {
		cancel()
		ag.p.close()
		<-served
	})

	req := newRequest(t, "PUT", "http://backend:80/", bytes.NewReader(body))
	req.ContentLength = -1
	res, err := RoundTrip(gws, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); !bytes.Equal(got, body) {
		t.Fatalf("echo: %d bytes, want %d", len(got), len(body))
	}
	gw.wantFinish(t, true)
	ag.wantFinish(t, true)
	gws.check(t, "gateway")
	ags.check(t, "agent")
	checkChunked(t, "gateway", gw.frames(), body)
	checkChunked(t, "agent", ag.frames(), body)
}
