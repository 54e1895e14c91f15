package grpctunnel

import (
	"bytes"
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"

	"github.com/sallyport/sallyport/tunnel"
)

// TestOwnedDataEncoding: a handed-over chunk encodes as the Frame with that
// data, its bytes are the sender's buffer itself (not a copy), and the
// buffer is released once, when gRPC frees the message.
func TestOwnedDataEncoding(t *testing.T) {
	for _, n := range []int{4 << 10, 127, 128, tunnel.ChunkSize} {
		buf := make([]byte, tunnel.ChunkSize)
		for i := range buf {
			buf[i] = byte(i % 251)
		}
		bp := &buf
		var released int
		d := &ownedData{buf: bp, release: func(b *[]byte) {
			if b != bp {
				t.Errorf("n=%d: released another buffer", n)
			}
			released++
		}}
		*bp = (*bp)[:n]
		out, err := frameCodec{}.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if last := out[len(out)-1].ReadOnlyData(); &last[0] != &buf[0] {
			t.Errorf("n=%d: the data was copied", n)
		}
		var f tunnel.Frame
		if err := tunnel.UnmarshalFrameAliasing(out.Materialize(), &f); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(f.Data, buf[:n]) || f.End || f.Request != nil || f.Response != nil {
			t.Errorf("n=%d: decoded %d bytes of data, end %v", n, len(f.Data), f.End)
		}
		if released != 0 {
			t.Errorf("n=%d: released before gRPC freed the message", n)
		}
		out.Free()
		if released != 1 {
			t.Errorf("n=%d: released %d times after Free, want 1", n, released)
		}
	}
}

// TestLeaseCleanFinishReleasesBuffer: a clean Finish gives the buffer of
// the last frame back to the pool (a small exchange receives only once, so
// it was garbage every time); an unclean one leaves it alone, as the reader
// may still be copying out of it.
func TestLeaseCleanFinishReleasesBuffer(t *testing.T) {
	for _, clean := range []bool{true, false} {
		ss := &session{idle: make(chan *stream, 1), draining: make(chan struct{}), done: make(chan struct{})}
		l := &lease{st: &stream{ss: ss, end: make(chan struct{})}, last: bufferPool.Get(300)}
		l.Finish(clean)
		if released := l.last == nil; released != clean {
			t.Errorf("Finish(%t): buffer released %t", clean, released)
		}
	}
}

// answerStream is the gateway's end of an Exchange stream whose every
// RecvMsg decodes the same encoded frame, as gRPC would.
type answerStream struct {
	grpc.BidiStreamingServer[tunnelv1.Frame, tunnelv1.Frame]
	frame mem.BufferSlice
}

func (s *answerStream) Context() context.Context { return context.Background() }

func (s *answerStream) RecvMsg(m any) error {
	return frameCodec{}.Unmarshal(s.frame, m)
}

// TestLeaseAllocs: leasing a pooled stream, receiving the one frame of a
// small response and finishing cleanly allocates only the lease (its first
// frame lives in it; its buffer goes back to the pool).
func TestLeaseAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./tunnel/...)")
	}
	enc, err := frameCodec{}.Marshal(&tunnel.Frame{End: true, Data: []byte("small")})
	if err != nil {
		t.Fatal(err)
	}
	ss := &session{idle: make(chan *stream, 1), draining: make(chan struct{}), done: make(chan struct{})}
	st := &stream{ss: ss, gs: &answerStream{frame: enc}, end: make(chan struct{})}
	allocs := testing.AllocsPerRun(200, func() {
		l := st.lease()
		if _, err := l.Recv(); err != nil {
			t.Fatal(err)
		}
		l.Finish(true)
		<-ss.idle
	})
	if allocs > 1 {
		t.Fatalf("lease, Recv, Finish: %v allocations, want 1 (the lease)", allocs)
	}
}

// answerClientStream is the agent's end of an Exchange stream whose every
// RecvMsg decodes the same encoded frame, as gRPC would.
type answerClientStream struct {
	grpc.BidiStreamingClient[tunnelv1.Frame, tunnelv1.Frame]
	frame mem.BufferSlice
}

func (s *answerClientStream) RecvMsg(m any) error {
	return frameCodec{}.Unmarshal(s.frame, m)
}

// TestClientStreamRecvAllocs: the agent receives a body frame into the
// stream's own frame and a pooled buffer, without allocating.
func TestClientStreamRecvAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./tunnel/...)")
	}
	enc, err := frameCodec{}.Marshal(&tunnel.Frame{Data: []byte("a chunk of body")})
	if err != nil {
		t.Fatal(err)
	}
	s := &clientStream{c: &ClientSession{}, gs: &answerClientStream{frame: enc}}
	allocs := testing.AllocsPerRun(200, func() {
		f, err := s.Recv()
		if err != nil || string(f.Data) != "a chunk of body" {
			t.Fatalf("Recv = %v, %v", f, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Recv: %v allocations, want 0", allocs)
	}
}
