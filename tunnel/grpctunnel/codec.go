package grpctunnel

import (
	"encoding/binary"
	"math/bits"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sallyport/sallyport/tunnel"
)

// frameCodec is the gRPC codec of both ends. It encodes exactly what the
// standard proto codec encodes (its name is "proto", so the content type on
// the wire is unchanged and old peers interoperate), but it is cheaper for
// Frames, which carry every exchange:
//
//   - an outgoing Frame is encoded by tunnel.AppendFrame (the same bytes as
//     proto.Marshal, without its generic size and marshal passes) into a
//     buffer of bufferPool, which does not clear buffers (grpc's default
//     pool clears the whole buffer on every Get: 1 MiB for each 128 KiB
//     body frame);
//   - an incoming Frame is copied out of grpc's buffers once and decoded by
//     tunnel.UnmarshalFrameAliasing, so its data aliases that copy (the standard
//     codec copies into a pooled buffer, then proto.Unmarshal copies the
//     data again), and its heads take a handful of allocations.
//
// Other messages (the Control stream) use the standard codec.
type frameCodec struct{}

var protoCodec = encoding.GetCodecV2("proto")

func (frameCodec) Name() string { return "proto" }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if d, ok := v.(*ownedData); ok {
		return d.marshal(), nil
	}
	f, ok := v.(*tunnel.Frame)
	if !ok {
		return protoCodec.Marshal(v)
	}
	size := tunnel.FrameSize(f)
	if mem.IsBelowBufferPoolingThreshold(size) {
		return mem.BufferSlice{mem.SliceBuffer(tunnel.AppendFrame(make([]byte, 0, size), f))}, nil
	}
	buf := bufferPool.Get(size)
	*buf = tunnel.AppendFrame((*buf)[:0], f)
	return mem.BufferSlice{mem.NewBuffer(buf, bufferPool)}, nil
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch f := v.(type) {
	case *tunnel.Frame:
		// grpc hands a new message to every Recv. Materialize copies into
		// a fresh slice that the frame may keep.
		return tunnel.UnmarshalFrameAliasing(data.Materialize(), f)
	case *pieceFrame:
		if f.keep(data) {
			return nil
		}
		return f.pooledFrame.unmarshal(data)
	case *pooledFrame:
		return f.unmarshal(data)
	}
	return protoCodec.Unmarshal(data, v)
}

// ownedData is a Frame with only data, sent without copying the data: its
// encoding is the field's tag and length, then buf itself, which the
// connection's writer frees (and so release takes back) once written.
type ownedData struct {
	buf     *[]byte // len(*buf) is the data; set to it by the sender
	release func(*[]byte)
	head    [1 + binary.MaxVarintLen64]byte
}

// dataTag is the tag of Frame.data (field 3, length-delimited).
const dataTag = 3<<3 | 2

func (d *ownedData) marshal() mem.BufferSlice {
	d.head[0] = dataTag
	k := 1 + binary.PutUvarint(d.head[1:], uint64(len(*d.buf)))
	return mem.BufferSlice{mem.SliceBuffer(d.head[:k]), mem.NewBuffer(d.buf, releasePool(d.release))}
}

// releasePool is the mem.BufferPool of one handed-over buffer: Put
// releases it, and nothing is ever taken from it.
type releasePool func(*[]byte)

func (p releasePool) Put(b *[]byte) { p(b) }

func (releasePool) Get(length int) *[]byte {
	b := make([]byte, length)
	return &b
}

// sendData sends buf's first n bytes as a data Frame over s without copying
// them (see tunnel.DataSender).
func sendData(s grpc.Stream, buf *[]byte, n int, release func(*[]byte)) error {
	*buf = (*buf)[:n]
	return s.SendMsg(&ownedData{buf: buf, release: release})
}

// pooledFrame is a Frame received into a buffer of bufferPool: its data
// aliases buf, which the receiver returns to the pool once the frame is no
// longer used (see lease.Recv and clientStream.Recv). Fresh memory for every 128 KiB body frame
// cost page faults, zeroing and GC work: about a sixth of the CPU of a
// download in BenchmarkExchange.
type pooledFrame struct {
	tunnel.Frame
	buf *[]byte
}

// unmarshal copies data into a pooled buffer and decodes it into f.
func (f *pooledFrame) unmarshal(data mem.BufferSlice) error {
	buf := bufferPool.Get(data.Len())
	data.CopyTo(*buf)
	if err := tunnel.UnmarshalFrameAliasing(*buf, &f.Frame); err != nil {
		bufferPool.Put(buf)
		return err
	}
	f.buf = buf
	return nil
}

// pieceFrame is what RecvData receives into (see tunnel.DataReceiver): a
// Frame that carries only data, and at least minPieceData bytes of it,
// stays in gRPC's own buffers (the DATA frames it arrived in), which kept
// holds references to; any other Frame is a pooledFrame. After a kept
// frame nothing of the pieceFrame is in use, and the stream receives the
// next frame into it.
//
// Why: copying every body frame into one contiguous buffer was about a
// twentieth of the CPU of a bulk transfer on the receiving end.
type pieceFrame struct {
	pooledFrame
	kept *keptData // the data, when the codec kept it in pieces; nil otherwise
}

// keptData is the data of a Frame with only data, left in the gRPC
// buffers it arrived in: it holds a reference to each, which Release
// drops. One allocation: a 128 KiB chunk arrives in 9 DATA frames.
type keptData struct {
	bufs     []mem.Buffer // references to the buffers of pieces
	pieces   [][]byte     // the data, in order
	bufArr   [10]mem.Buffer
	pieceArr [10][]byte
}

// minPieceData is the least data kept in pieces; a smaller frame is
// copied, which costs less than the references.
const minPieceData = 4 << 10

// keep keeps data in pieces when it is the encoding of a Frame with only
// data (its tag, its length, then exactly that many bytes), and reports
// whether it did. Anything else is left to the full decoder, which
// reports malformed frames.
func (f *pieceFrame) keep(data mem.BufferSlice) bool {
	total := data.Len()
	if total < minPieceData || total > tunnel.MaxFrameSize {
		return false
	}
	first := data[0].ReadOnlyData()
	// The tag and length fit in the first piece but for a frame split by
	// the sender right after gRPC's message header (rare): decode it then.
	if len(first) < 1+binary.MaxVarintLen32 || first[0] != dataTag {
		return false
	}
	n, k := protowire.ConsumeVarint(first[1:])
	if k < 0 || n != uint64(total-1-k) {
		return false
	}
	d := new(keptData)
	d.bufs, d.pieces = d.bufArr[:0], d.pieceArr[:0]
	for i, b := range data {
		b.Ref()
		d.bufs = append(d.bufs, b)
		p := b.ReadOnlyData()
		if i == 0 {
			p = p[1+k:]
		}
		if len(p) > 0 {
			d.pieces = append(d.pieces, p)
		}
	}
	f.kept = d
	return true
}

// Release implements tunnel.Releaser: it drops the references to the
// buffers of the pieces (once; later calls do nothing).
func (d *keptData) Release() {
	for _, b := range d.bufs {
		b.Free()
	}
	clear(d.bufArr[:])
	clear(d.pieceArr[:])
	d.bufs, d.pieces = nil, nil
}

// data returns the kept data as a tunnel.Data.
func (d *keptData) data() tunnel.Data {
	return tunnel.Data{Pieces: d.pieces, Owner: d}
}

// bufferPool is the buffer pool of both ends' gRPC transports and of
// frameCodec: buffers of power-of-two sizes from 256 B to 2 MiB that are
// handed out without being cleared. Every user overwrites what it asks for
// (the transport reads into it, the codec marshals into it), so clearing is
// wasted work.
var bufferPool mem.BufferPool = newDirtyPool(8, 21)

// putBuffer returns a buffer to bufferPool (one func value for all).
var putBuffer = func(b *[]byte) { bufferPool.Put(b) }

// dirtyPool is a mem.BufferPool with one sync.Pool per power of two.
type dirtyPool struct {
	minExp, maxExp int
	pools          []sync.Pool // pools[i] holds buffers of cap 1<<(minExp+i)
}

func newDirtyPool(minExp, maxExp int) *dirtyPool {
	return &dirtyPool{minExp: minExp, maxExp: maxExp, pools: make([]sync.Pool, maxExp-minExp+1)}
}

// Get returns a buffer of length size. Sizes above the largest class are
// allocated and not pooled.
func (p *dirtyPool) Get(size int) *[]byte {
	exp := max(bits.Len(uint(size-1)), p.minExp)
	if size <= 0 {
		exp = p.minExp
	}
	if exp > p.maxExp {
		b := make([]byte, size)
		return &b
	}
	if v, ok := p.pools[exp-p.minExp].Get().(*[]byte); ok {
		*v = (*v)[:size]
		return v
	}
	b := make([]byte, size, 1<<exp)
	return &b
}

// Put pools buf when its capacity is one of the classes.
func (p *dirtyPool) Put(buf *[]byte) {
	c := cap(*buf)
	exp := bits.Len(uint(c)) - 1
	if c == 0 || c != 1<<exp || exp < p.minExp || exp > p.maxExp {
		return
	}
	p.pools[exp-p.minExp].Put(buf)
}
