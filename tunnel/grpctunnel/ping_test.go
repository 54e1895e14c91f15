package grpctunnel

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// frame is one HTTP/2 frame of a payload of n bytes (type DATA).
func frame(n int) []byte {
	f := make([]byte, 9+n)
	f[0], f[1], f[2] = byte(n>>16), byte(n>>8), byte(n)
	for i := range n {
		f[9+i] = byte(i)
	}
	return f
}

// TestFrameCursor: the cursor finds the boundaries of frames written in
// any pieces: after the preface, between frames, never inside a header or
// a payload.
func TestFrameCursor(t *testing.T) {
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	stream := append(append(append(append([]byte{}, preface...), frame(0)...), frame(5)...), frame(70000)...)
	// The offsets where a frame may go: after the preface and after each frame.
	between := map[int]bool{24 + 9: true, 24 + 9 + 14: true, len(stream): true}
	for _, piece := range []int{1, 2, 7, 9, 10, 4096, len(stream)} {
		c := frameCursor{preface: http2PrefaceLen}
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
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

// TestPingConnPingBetweenFrames: a ping that falls due while gRPC's frame
// is half written goes right after the frame, not into it; one that falls
// due between frames goes at once.
func TestPingConnPingBetweenFrames(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc, cursor: frameCursor{preface: http2PrefaceLen}}
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	f := frame(100)
	p.Write(preface)
	p.Write(f[:50])
	p.ask() // what pinger does when a ping falls due
	p.Write(f[50:])
	p.ask()
	want := bytes.Join([][]byte{preface, f, pingFrame[:], pingFrame[:]}, nil)
	if got := rc.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("wrote\n%q\nwant the frame whole, then the two pings\n%q", got, want)
	}
}

// TestPingConnReadsOnly: what is read from the gateway is what shows the
// keepalive that the path works; what is written is not (on a dead path
// writes go into the socket's buffer until it is full), so the pings
// themselves cannot keep a dead session alive.
func TestPingConnReadsOnly(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p := &pingConn{Conn: a}
	p.last.Store(-1)
	go func() { _, _ = b.Read(make([]byte, 64)) }()
	if _, err := p.Write(pingFrame[:]); err != nil {
		t.Fatal(err)
	}
	if got := p.last.Load(); got != -1 {
		t.Fatalf("a write was taken as a sign of life (at %d ns)", got)
	}
	go func() { _, _ = b.Write([]byte("x")) }()
	if _, err := p.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if got := p.last.Load(); got < 0 {
		t.Fatalf("a read was not noted (last %d)", got)
	}
}

// TestPingConnNotBeforeSettings: no ping goes between the preface and the
// client's first frame, SETTINGS, which must come first (RFC 9113 3.4;
// gRPC's server refuses anything else); a ping asked for then waits for it.
func TestPingConnNotBeforeSettings(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc, cursor: frameCursor{preface: http2PrefaceLen}}
	p.last.Store(-1)
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	settings := frame(6)
	p.Write(preface)
	p.ask()
	p.Write(settings)
	want := bytes.Join([][]byte{preface, settings, pingFrame[:]}, nil)
	if got := rc.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("wrote\n%q\nwant the preface, the SETTINGS frame, then the ping\n%q", got, want)
	}
}

// TestPingConnNoBackToBackPings: a ping left pending behind a half-written
// frame is dropped when something was read meanwhile, and no two pings go
// out less than the keepalive apart: the gateway's gRPC counts a strike for
// each ping within 5 s of the previous one and ends the connection after
// three (a reviewer's probe wrote two back to back).
func TestPingConnNoBackToBackPings(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc, every: time.Hour, cursor: frameCursor{preface: http2PrefaceLen}}
	p.last.Store(-1)
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	f := frame(100)
	p.Write(preface)
	p.Write(frame(6)) // SETTINGS
	p.Write(f[:50])
	p.ask()               // due while the frame is half written: pending
	p.last.Store(p.now()) // a window update is read: no longer needed
	p.Write(f[50:])       // completes the frame: the pending ping is dropped
	p.ask()               // due again, between frames: written
	p.ask()               // and again at once: too soon after the last
	want := bytes.Join([][]byte{preface, frame(6), f, pingFrame[:]}, nil)
	if got := rc.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("wrote %d bytes after the frame, want one ping (%d bytes): %q",
			len(got)-len(preface)-9-6-len(f), len(pingFrame), got[len(preface)+9+6+len(f):])
	}
}

// TestPingConnLifeline: a connection that read data and wrote nothing for
// lifelineEvery writes one unsolicited PING ACK, between gRPC's frames;
// none while gRPC wrote lately or stands inside a frame, and none for a
// mere lifeline read (two idle ends would keep answering each other's).
func TestPingConnLifeline(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc} // the gateway's end: no preface
	settings := frame(6)
	p.Write(settings)
	quiet := func() { p.wroteAt = p.now() - int64(lifelineEvery) } // nothing written for lifelineEvery
	sent := func() int { return rc.out.Len() - len(settings) }

	p.got.Add(lifelineMinRead) // data came
	p.lifeline()
	if n := sent(); n != 0 {
		t.Fatalf("a lifeline went out %d bytes' worth right after gRPC wrote", n)
	}
	quiet()
	p.lifeline()
	want := append(append([]byte{}, settings...), lifelineFrame[:]...)
	if got := rc.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("data read, nothing written for %v: wrote %q after SETTINGS, want one lifeline %q",
			lifelineEvery, got[len(settings):], lifelineFrame[:])
	}
	quiet()
	p.lifeline()
	p.got.Add(int64(len(lifelineFrame))) // the peer's lifeline
	quiet()
	p.lifeline()
	if n := sent(); n != len(lifelineFrame) {
		t.Fatalf("nothing or only a lifeline read since the last: %d more bytes written, want none", n-len(lifelineFrame))
	}
	f := frame(100)
	p.Write(f[:50]) // gRPC stands inside a frame
	p.got.Add(lifelineMinRead)
	quiet()
	p.lifeline()
	if got := rc.out.Bytes()[len(want):]; !bytes.Equal(got, f[:50]) {
		t.Fatalf("a lifeline went into gRPC's frame: %q", got)
	}
}

// TestLifelineFrameIsAPingAck: the lifeline is an HTTP/2 PING with the ACK
// flag, which the peer answers nothing (a PING without it gets an answer
// and counts toward the gateway's ping strikes).
func TestLifelineFrameIsAPingAck(t *testing.T) {
	f := lifelineFrame
	if length := int(f[0])<<16 | int(f[1])<<8 | int(f[2]); length != 8 || len(f) != 9+8 || f[3] != 6 || f[4] != 1 ||
		f[5]|f[6]|f[7]|f[8] != 0 {
		t.Fatalf("lifelineFrame %x is not a PING ACK on stream 0 with 8 bytes of data", f)
	}
}
