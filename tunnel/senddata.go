package tunnel

// DataSender is implemented by a Stream that can send body bytes without
// copying them (the gRPC transport: its codec hands the buffer itself to
// the connection's writer). RoundTrip and ServeStream use it for body
// chunks of at least minOwnedSend bytes; other transports get Send.
type DataSender interface {
	// SendData sends Frame{Data: (*buf)[:n]} and takes buf: the caller
	// must not touch it again. The stream calls release(buf) once it no
	// longer needs the bytes, possibly after SendData returned and from
	// another goroutine, or never (the collector then frees buf).
	SendData(buf *[]byte, n int, release func(*[]byte)) error
}

// DataKeeper is implemented by a Stream that can leave the memory of
// received data to the receiver (the gRPC transport, whose frames arrive in
// pooled buffers). ServeStream keeps request body chunks in its queue that
// way instead of copying them.
type DataKeeper interface {
	// KeepData hands over the memory of the data of the frame that Recv
	// returned last: the stream will not reuse it, and the caller calls
	// release(buf) once it is done with the data (or never; the collector
	// then frees it). ok is false when the stream cannot hand it over; the
	// data is then the stream's, as Stream says.
	KeepData() (buf *[]byte, release func(*[]byte), ok bool)
}

// minOwnedSend is the smallest chunk handed over by SendData: below it, a
// copy costs less than the buffer that changes hands.
const minOwnedSend = 4 << 10

// chunkSender sends body chunks read into bufPool buffers: over SendData
// when the stream has it (a new buffer for the next read each time), by
// Send otherwise. One goroutine uses it.
type chunkSender struct {
	st    Stream
	ds    DataSender // st as a DataSender, or nil
	buf   *[]byte    // the buffer to read the next chunk into; nil after close
	frame Frame      // reused for Send: the stream does not keep it
}

func newChunkSender(st Stream) *chunkSender {
	c := &chunkSender{st: st, buf: bufPool.Get().(*[]byte)}
	c.ds, _ = st.(DataSender)
	return c
}

// next returns the buffer to read the next chunk into (ChunkSize bytes).
func (c *chunkSender) next() []byte { return *c.buf }

// send sends the first n bytes of the buffer that next returned.
func (c *chunkSender) send(n int) error {
	if c.ds != nil && n >= minOwnedSend {
		bp := c.buf
		c.buf = bufPool.Get().(*[]byte)
		return c.ds.SendData(bp, n, releaseChunk)
	}
	c.frame = Frame{Data: (*c.buf)[:n]}
	return c.st.Send(&c.frame)
}

// close returns the read buffer to the pool.
func (c *chunkSender) close() {
	bufPool.Put(c.buf)
	c.buf = nil
}

// releaseChunk takes back a buffer that SendData handed to a stream.
func releaseChunk(bp *[]byte) {
	if cap(*bp) == ChunkSize {
		*bp = (*bp)[:ChunkSize]
		bufPool.Put(bp)
	}
}
