package tunnel

import "net"

// DataReceiver is implemented by a Stream that can hand received body data
// over in the transport's own memory, in one or more pieces, so that
// nothing copies the pieces into one slice first (the gRPC transport: the
// pieces are the HTTP/2 DATA frames the bytes arrived in). ServeStream and
// RoundTrip's response body receive with it when the stream has it; other
// transports get Recv.
type DataReceiver interface {
	// RecvData is Recv, except that a frame that carries nothing but data
	// may come back as d, with f nil: d's pieces are the data, in order,
	// and belong to the caller, who gives them back with d.Owner.Release.
	// When f is not nil, d is the zero Data and f is as Recv returns it.
	RecvData() (f *Frame, d Data, err error)
}

// Data is body bytes that a DataReceiver received into its own memory.
type Data struct {
	// Pieces hold the bytes, in order. None is empty.
	Pieces [][]byte
	// Owner takes the memory of Pieces back. The receiver calls Release
	// once, when it no longer reads the pieces (or never: the collector
	// then frees them). Nil when there is nothing to give back.
	Owner Releaser
}

// Releaser gives memory back to whoever lent it.
type Releaser interface {
	Release()
}

// receive receives the next frame of st: through dr (st as a
// DataReceiver, or nil) when it has one, so that data may come as d.
func receive(st Stream, dr DataReceiver) (*Frame, Data, error) {
	if dr != nil {
		return dr.RecvData()
	}
	f, err := st.Recv()
	return f, Data{}, err
}

// chunk is received body bytes on their way to a reader, and the memory
// they live in: data, then the pieces of more. free gives the memory back
// once the bytes are read (or dropped). The zero chunk is empty.
type chunk struct {
	data    []byte   // the unread bytes of the current piece
	more    [][]byte // the pieces after data (from a DataReceiver)
	buf     *[]byte  // memory of data that release takes back, or nil
	release func(*[]byte)
	owner   Releaser // memory of data and more (from a DataReceiver), or nil
}

// chunkOf is the chunk of d's pieces.
func chunkOf(d Data) chunk {
	c := chunk{more: d.Pieces, owner: d.Owner}
	c.advance()
	return c
}

// empty reports whether every byte of c was read.
func (c *chunk) empty() bool { return len(c.data) == 0 && len(c.more) == 0 }

// advance moves to the next piece when the current one is read.
func (c *chunk) advance() {
	for len(c.data) == 0 && len(c.more) > 0 {
		c.data, c.more = c.more[0], c.more[1:]
	}
}

// read copies unread bytes into b, across pieces, as many as fit.
func (c *chunk) read(b []byte) int {
	n := 0
	for n < len(b) && !c.empty() {
		m := copy(b[n:], c.data)
		c.data = c.data[m:]
		n += m
		c.advance()
	}
	return n
}

// take appends unread bytes, at most max of them, to bufs and counts them
// as read; the memory stays c's (free it once bufs are written).
func (c *chunk) take(max int64, bufs *net.Buffers) int64 {
	var n int64
	for n < max && !c.empty() {
		p := c.data
		if int64(len(p)) > max-n {
			p = p[:max-n]
		}
		*bufs = append(*bufs, p)
		c.data = c.data[len(p):]
		n += int64(len(p))
		c.advance()
	}
	return n
}

// free gives c's memory back and empties c.
func (c *chunk) free() {
	if c.release != nil {
		c.release(c.buf)
	}
	if c.owner != nil {
		c.owner.Release()
	}
	*c = chunk{}
}
