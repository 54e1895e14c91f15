package grpctunnel

import (
	"bytes"
	"testing"

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
