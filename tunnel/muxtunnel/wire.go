package muxtunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/sallyport/sallyport/tunnel"
)

// Every message is a 4-byte big-endian length and then the protobuf
// encoding (see tunnel.proto). The length is checked against the limit
// before anything is allocated, so a peer cannot make us buffer more than
// one bounded message per stream.
const lenSize = 4

// bufPool holds message buffers. Buffers grown past poolMax (a whole
// 1 MiB frame) are left to the garbage collector.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const poolMax = tunnel.ChunkSize + 16<<10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= poolMax {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// writeMsg writes m with its length prefix in one Write.
func writeMsg(w io.Writer, m proto.Message, limit int) error {
	bp := getBuf()
	defer putBuf(bp)
	b := append((*bp)[:0], 0, 0, 0, 0)
	if f, ok := m.(*tunnel.Frame); ok {
		b = tunnel.AppendFrame(b, f) // the bytes proto.Marshal writes, sooner
	} else {
		var err error
		if b, err = (proto.MarshalOptions{}).MarshalAppend(b, m); err != nil {
			*bp = b
			return fmt.Errorf("encode tunnel message: %w", err)
		}
	}
	*bp = b
	n := len(b) - lenSize
	if n > limit {
		return fmt.Errorf("tunnel message of %d bytes exceeds %d", n, limit)
	}
	binary.BigEndian.PutUint32(b, uint32(n))
	_, err := w.Write(b)
	return err
}

// readMsg reads one length-prefixed message into m. A clean end of the
// stream before the length is io.EOF; an end inside a message is
// io.ErrUnexpectedEOF. A length over limit or an undecodable message
// wraps tunnel.ErrMalformed.
func readMsg(r io.Reader, m proto.Message, limit int) error {
	return readBody(r, limit, func(b []byte) error {
		// Unmarshal copies bytes fields, so the buffer can go back to the pool.
		if err := proto.Unmarshal(b, m); err != nil {
			return fmt.Errorf("%w: %v", tunnel.ErrMalformed, err)
		}
		return nil
	})
}

// readFrame is readMsg for a Frame, with the tunnel's own decoder: it
// allocates far less than generic protobuf decoding (a request head in a
// few blocks instead of one object per header). The frame's data aliases
// the pooled read buffer, returned as buf (nil for a small frame, which has
// a buffer of its own): the caller hands buf back with putBuf once it is
// done with the data (tunnel.Stream.Recv's contract: at the next Recv).
// Heads and trailers are copied and outlive buf.
func readFrame(r io.Reader) (f *tunnel.Frame, buf *[]byte, err error) {
	var hdr [lenSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(tunnel.MaxFrameSize) {
		return nil, nil, fmt.Errorf("%w: message of %d bytes exceeds %d", tunnel.ErrMalformed, n, tunnel.MaxFrameSize)
	}
	var b []byte
	if n <= smallFrame {
		// Fast path: a small frame (a whole small exchange, a head) gets
		// its own exact allocation. Its buffer would often not come back
		// to the pool: the last frame of an exchange is left to the
		// garbage collector (see stream.Recv), and a pooled 16 KiB buffer
		// lost per exchange was over half of the gateway's allocated bytes.
		b = make([]byte, n)
	} else {
		// Slow path: body chunks read into pooled buffers.
		buf = getBuf()
		if cap(*buf) < int(n) {
			*buf = make([]byte, n)
		}
		b = (*buf)[:n]
	}
	fail := func(err error) (*tunnel.Frame, *[]byte, error) {
		if buf != nil {
			putBuf(buf)
		}
		return nil, nil, err
	}
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fail(err)
	}
	f = new(tunnel.Frame)
	if err := tunnel.UnmarshalFrameAliasing(b, f); err != nil { // its errors wrap tunnel.ErrMalformed
		return fail(err)
	}
	return f, buf, nil
}

// smallFrame is the largest frame readFrame reads into a buffer of its own
// rather than a pooled one.
const smallFrame = 4 << 10

// readBody reads one length prefix and the message after it into a pooled
// buffer, and hands that to decode; the buffer is reused once decode
// returns.
func readBody(r io.Reader, limit int, decode func([]byte) error) error {
	var hdr [lenSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return fmt.Errorf("%w: message of %d bytes exceeds %d", tunnel.ErrMalformed, n, limit)
	}
	bp := getBuf()
	defer putBuf(bp)
	if cap(*bp) < int(n) {
		*bp = make([]byte, n)
	}
	b := (*bp)[:n]
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return decode(b)
}
