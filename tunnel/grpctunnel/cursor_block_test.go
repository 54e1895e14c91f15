package grpctunnel

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
)

// cursorWriter feeds each Write of the framer to a frameCursor and records
// whether the cursor stands "between" frames after it.
type cursorWriter struct {
	c   *frameCursor
	buf bytes.Buffer
}

func (w *cursorWriter) Write(b []byte) (int, error) {
	w.c.advance(b)
	return w.buf.Write(b)
}

// TestFrameCursorHeaderBlock: a HEADERS frame without END_HEADERS must be
// followed at once by its CONTINUATION frames (RFC 9113 section 6.10), so
// frameCursor must not say "between" inside a header block: a ping or a
// lifeline written there makes the peer fail the whole connection
// (PROTOCOL_ERROR). gRPC splits header blocks above 16 KiB, and its write
// buffer may end between the two frames. After the block it is between
// frames again.
func TestFrameCursorHeaderBlock(t *testing.T) {
	c := &frameCursor{}
	w := &cursorWriter{c: c}
	fr := http2.NewFramer(w, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte{0x40}, 100)
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:50], EndHeaders: false}); err != nil {
		t.Fatal(err)
	}
	if c.between() {
		// What the peer reads if a lifeline goes out now.
		w.buf.Write(lifelineFrame[:])
		_ = fr.WriteContinuation(1, true, block[50:])
		rd := http2.NewFramer(nil, bytes.NewReader(w.buf.Bytes()))
		var err error
		for err == nil {
			_, err = rd.ReadFrame()
		}
		t.Fatalf("frameCursor.between() is true between HEADERS without END_HEADERS and its CONTINUATION; "+
			"a lifeline there is a connection error: %v", err)
	}
	if err := fr.WriteContinuation(1, false, block[50:70]); err != nil {
		t.Fatal(err)
	}
	if c.between() {
		t.Fatal("frameCursor.between() is true between two CONTINUATION frames of one header block")
	}
	if err := fr.WriteContinuation(1, true, block[70:]); err != nil {
		t.Fatal(err)
	}
	if !c.between() {
		t.Error("frameCursor.between() is false after the CONTINUATION with END_HEADERS: no ping could go out again")
	}
}
