package yamuxtunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// TestLifeConnReadsOnly: what is read from the peer is what shows the
// keepalive that the path works; what is written is not (on a dead path
// writes go into the socket's buffer until it is full), so the keepalive's
// own pings cannot keep a dead session alive.
func TestLifeConnReadsOnly(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newLifeConn(a)
	c.last.Store(-1)
	go func() { _, _ = b.Read(make([]byte, 16)) }()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got := c.last.Load(); got != -1 {
		t.Fatalf("a write was taken as a sign of life (at %d ns)", got)
	}
	go func() { _, _ = b.Write([]byte("x")) }()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if got := c.last.Load(); got < 0 {
		t.Fatalf("a read was not noted (last %d)", got)
	}
}

// yamuxFrame is a yamux frame of type typ with a body of n bytes (data) or
// length n and no body (other types).
func yamuxFrame(typ byte, n int) []byte {
	f := make([]byte, yamuxHeaderLen)
	f[1] = typ
	binary.BigEndian.PutUint32(f[8:], uint32(n))
	if typ == yamuxTypeData {
		f = append(f, bytes.Repeat([]byte{'d'}, n)...)
	}
	return f
}

// TestFrameCursor: the cursor finds the boundaries of yamux's frames written
// in any pieces: a data frame's body follows its header, a window
// update's or a ping's does not.
func TestFrameCursor(t *testing.T) {
	var stream []byte
	between := map[int]bool{0: true}
	for _, f := range [][]byte{yamuxFrame(1, 1<<20), yamuxFrame(yamuxTypeData, 5), yamuxFrame(2, 7),
		yamuxFrame(yamuxTypeData, 0), yamuxFrame(yamuxTypeData, 70000)} {
		stream = append(stream, f...)
		between[len(stream)] = true
	}
	for _, piece := range []int{1, 5, 12, 13, 4096, len(stream)} {
		var c frameCursor
		for off := 0; off < len(stream); {
			n := min(piece, len(stream)-off)
			c.advance(stream[off : off+n])
			off += n
			if got := c.between(); got != between[off] {
				t.Fatalf("pieces of %d bytes: after %d bytes between() = %v, want %v", piece, off, got, between[off])
			}
		}
	}
}

// recordConn keeps what is written to it.
type recordConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *recordConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// TestLifeConnLifeline: a connection that read data and wrote nothing for
// lifelineEvery writes one lifeline, between yamux's frames; none while
// yamux wrote lately or stands inside a frame, and none for a mere
// lifeline read (two idle ends would keep answering each other's).
func TestLifeConnLifeline(t *testing.T) {
	rc := &recordConn{}
	c := newLifeConn(rc)
	quiet := func() { c.wroteAt = c.now() - int64(lifelineEvery) } // nothing written for lifelineEvery

	c.got.Add(lifelineMinRead) // data came
	c.lifeline()
	if n := rc.out.Len(); n != 0 {
		t.Fatalf("a lifeline went out (%d bytes) right after the handshake wrote", n)
	}
	quiet()
	c.lifeline()
	if got := rc.out.Bytes(); !bytes.Equal(got, lifelineFrame[:]) {
		t.Fatalf("data read, nothing written for %v: wrote %x, want one lifeline %x", lifelineEvery, got, lifelineFrame[:])
	}
	quiet()
	c.lifeline()
	c.got.Add(int64(len(lifelineFrame))) // the peer's lifeline
	quiet()
	c.lifeline()
	if n := rc.out.Len(); n != len(lifelineFrame) {
		t.Fatalf("nothing or only a lifeline read since the last: %d more bytes written, want none", n-len(lifelineFrame))
	}
	f := yamuxFrame(yamuxTypeData, 100)
	c.Write(f[:yamuxHeaderLen+50]) // yamux stands inside a frame
	c.got.Add(lifelineMinRead)
	quiet()
	c.lifeline()
	if got := rc.out.Bytes()[len(lifelineFrame):]; !bytes.Equal(got, f[:yamuxHeaderLen+50]) {
		t.Fatalf("a lifeline went into yamux's frame: %x", got)
	}
}

// TestLifelineFrameIsAPingAnswer: the lifeline is a yamux ping answer (type
// 2, flag ACK) on stream 0, which the peer answers nothing (a ping with SYN
// gets an answer).
func TestLifelineFrameIsAPingAnswer(t *testing.T) {
	f := lifelineFrame
	if f[0] != 0 || f[1] != 2 || binary.BigEndian.Uint16(f[2:4]) != 2 || binary.BigEndian.Uint32(f[4:8]) != 0 {
		t.Fatalf("lifelineFrame %x is not a yamux ping answer on stream 0", f)
	}
}
