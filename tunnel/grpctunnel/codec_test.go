package grpctunnel

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

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

// countingPool is a mem.BufferPool that tracks its buffers: those handed
// out and not yet back, and returns of buffers that were not out (a
// double free).
type countingPool struct {
	out     map[*[]byte]bool
	badPuts int
}

func newCountingPool() *countingPool { return &countingPool{out: make(map[*[]byte]bool)} }

func (p *countingPool) Get(n int) *[]byte {
	b := make([]byte, n)
	p.out[&b] = true
	return &b
}

func (p *countingPool) Put(b *[]byte) {
	if !p.out[b] {
		p.badPuts++
		return
	}
	delete(p.out, b)
}

// split encodes f and cuts the encoding into buffers of p's at the given
// offsets, as gRPC hands a message that arrived in several DATA frames to
// the codec.
func split(t *testing.T, f *tunnel.Frame, p *countingPool, cuts ...int) mem.BufferSlice {
	t.Helper()
	enc, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var bs mem.BufferSlice
	rest := enc
	for _, c := range append(cuts, len(enc)) {
		c = min(c, len(enc)) - (len(enc) - len(rest))
		if mem.IsBelowBufferPoolingThreshold(c) {
			// gRPC does not pool small buffers either.
			bs = append(bs, mem.SliceBuffer(bytes.Clone(rest[:c])))
		} else {
			b := p.Get(c)
			copy(*b, rest[:c])
			bs = append(bs, mem.NewBuffer(b, p))
		}
		rest = rest[c:]
	}
	return bs
}

// TestPieceFrame: a Frame with only data, of at least minPieceData bytes,
// stays in the buffers it arrived in, which go back to their pool once
// the message is freed (as gRPC does after Unmarshal) and the frame is
// released, exactly once; any other Frame decodes as before; malformed
// ones are errors.
func TestPieceFrame(t *testing.T) {
	data := make([]byte, 3*minPieceData+5)
	for i := range data {
		data[i] = byte(i % 251)
	}
	cases := []struct {
		name   string
		f      *tunnel.Frame
		cuts   []int // where the encoding is cut into buffers
		pieces bool  // kept in pieces
	}{
		{"data", &tunnel.Frame{Data: data}, []int{1500, 3000, 9000}, true},
		{"data in one buffer", &tunnel.Frame{Data: data}, nil, true},
		{"data, header split", &tunnel.Frame{Data: data}, []int{2, 2000}, false},
		{"small data", &tunnel.Frame{Data: data[:minPieceData-10]}, []int{1200}, false},
		{"data and end", &tunnel.Frame{Data: data, End: true}, []int{2000, 5000}, false},
		{"head and data", &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: 200}, Data: data}, []int{3000}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newCountingPool()
			bs := split(t, tc.f, p, tc.cuts...)
			n := len(p.out)
			pf := new(pieceFrame)
			if err := (frameCodec{}).Unmarshal(bs, pf); err != nil {
				t.Fatal(err)
			}
			bs.Free() // gRPC's reference
			if got := pf.kept != nil; got != tc.pieces {
				t.Fatalf("kept in pieces: %v, want %v", got, tc.pieces)
			}
			if !tc.pieces {
				if !proto.Equal(&pf.Frame, tc.f) {
					t.Fatalf("decoded %v", &pf.Frame)
				}
				if len(p.out) != 0 {
					t.Fatalf("%d buffers not back after the message was freed", len(p.out))
				}
				return
			}
			if got := bytes.Join(pf.kept.pieces, nil); !bytes.Equal(got, data) {
				t.Fatalf("pieces hold %d bytes that differ from the %d sent", len(got), len(data))
			}
			if len(p.out) != n {
				t.Fatalf("%d of %d buffers back before the release", n-len(p.out), n)
			}
			d := pf.kept.data()
			d.Owner.Release()
			d.Owner.Release() // a second release does nothing
			if len(p.out) != 0 || p.badPuts != 0 {
				t.Fatalf("after release: %d buffers out, %d returned twice", len(p.out), p.badPuts)
			}
		})
	}
}

// TestPieceFrameMalformed: a message that looks like data but is not a
// valid Frame is an error, never a panic, and keeps nothing.
func TestPieceFrameMalformed(t *testing.T) {
	long := protowire.AppendVarint([]byte{dataTag}, 2*minPieceData) // says more than follows
	long = append(long, make([]byte, minPieceData)...)
	short := protowire.AppendVarint([]byte{dataTag}, minPieceData) // then a stray byte
	short = append(short, make([]byte, minPieceData)...)
	short = append(short, 0xFF)
	huge := append([]byte{dataTag, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, make([]byte, minPieceData)...)
	badTag := append([]byte{3<<3 | 7}, make([]byte, minPieceData)...)
	for name, msg := range map[string][]byte{"length past the end": long, "stray byte": short, "huge length": huge, "bad tag": badTag} {
		t.Run(name, func(t *testing.T) {
			p := newCountingPool()
			b := p.Get(len(msg))
			copy(*b, msg)
			bs := mem.BufferSlice{mem.NewBuffer(b, p)}
			pf := new(pieceFrame)
			err := (frameCodec{}).Unmarshal(bs, pf)
			bs.Free()
			if !errors.Is(err, tunnel.ErrMalformed) {
				t.Fatalf("Unmarshal: %v, want ErrMalformed", err)
			}
			if pf.kept != nil || len(p.out) != 0 || p.badPuts != 0 {
				t.Fatalf("kept %v; %d buffers out, %d returned twice", pf.kept != nil, len(p.out), p.badPuts)
			}
		})
	}
}
