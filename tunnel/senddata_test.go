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

// serveOn runs ServeStream on st, a wrapper of ag, with backend be until
// the test ends.
func serveOn(t *testing.T, st Stream, ag *pipeEnd, be http.RoundTripper) {
	srv := &Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return be, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeStream(ctx, st) }()
	t.Cleanup(func() {
		cancel()
		ag.p.close()
		<-served
	})
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
	serveOn(t, ags, ag, be)

	req := newRequest(t, "PUT", "http://backend:80/", bytes.NewReader(body))
	req.ContentLength = -1
	wantEcho(t, gws, req, body)
	gw.wantFinish(t, true)
	ag.wantFinish(t, true)
	gws.check(t, "gateway")
	ags.check(t, "agent")
	checkChunked(t, "gateway", gw.frames(), body)
	checkChunked(t, "agent", ag.frames(), body)
}

// keepingStream is a Stream with KeepData: every frame it receives is
// copied into a buffer of its own, which KeepData hands over; it counts the
// releases of each buffer.
type keepingStream struct {
	Stream
	last *[]byte // buffer of the frame Recv returned last; owned by the receiver

	mu       sync.Mutex
	kept     int             // buffers handed over; guarded by mu
	released map[*[]byte]int // releases per buffer; guarded by mu
}

func (s *keepingStream) Recv() (*Frame, error) {
	f, err := s.Stream.Recv()
	if err != nil || len(f.Data) == 0 {
		s.last = nil
		return f, err
	}
	b := bytes.Clone(f.Data)
	s.last = &b
	f.Data = b
	return f, nil
}

func (s *keepingStream) KeepData() (*[]byte, func(*[]byte), bool) {
	b := s.last
	s.last = nil
	if b == nil {
		return nil, nil, false
	}
	s.mu.Lock()
	s.kept++
	s.mu.Unlock()
	return b, s.release, true
}

func (s *keepingStream) release(b *[]byte) {
	s.mu.Lock()
	s.released[b]++
	s.mu.Unlock()
}

// TestRequestBodyKeptNotCopied: with a DataKeeper stream, ServeStream's
// body pipe queues the frames' own memory (the first chunk, in the head's
// frame, too) and releases every buffer once, after the backend read it.
func TestRequestBodyKeptNotCopied(t *testing.T) {
	gw, ag := newPipe(2)
	ks := &keepingStream{Stream: ag, released: map[*[]byte]int{}}
	body := pattern(3*ChunkSize + 7)
	be := &testBackend{respond: func(req *http.Request, b []byte) (*http.Response, error) {
		return bodyResponse(req, 200, []byte("ok"), 2), nil
	}}
	serveOn(t, ks, ag, be)
	for _, size := range []int{100, len(body)} { // coalesced with the head; chunked
		req := newRequest(t, "PUT", "http://backend:80/", bytes.NewReader(body[:size]))
		res, err := RoundTrip(gw.lease(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, res); string(got) != "ok" {
			t.Fatalf("size %d: response %q", size, got)
		}
		gw.wantFinish(t, true)
		ag.wantFinish(t, true)
	}
	if be.complete.Load() != 2 {
		t.Fatalf("backend read %d bodies to their end, want 2", be.complete.Load())
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.kept < 5 {
		t.Errorf("%d buffers kept; want every body frame's", ks.kept)
	}
	if len(ks.released) != ks.kept {
		t.Errorf("%d of %d kept buffers released", len(ks.released), ks.kept)
	}
	for b, n := range ks.released {
		if n != 1 {
			t.Errorf("buffer of %d bytes released %d times", len(*b), n)
		}
	}
}
