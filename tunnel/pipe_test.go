package tunnel

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// hangGuard bounds every wait of a test so that a broken exchange fails the
// test instead of hanging it. No assertion depends on it.
const hangGuard = 10 * time.Second

// errPipeReset is what Send and Recv return once either end reset the pipe.
var errPipeReset = errors.New("pipe: stream reset")

// pipe is an in-memory Stream pair: two bounded queues of frames, one per
// direction, and a reset shared by both ends, like a transport stream.
type pipe struct {
	reset     chan struct{} // closed by the first Finish(false); never reopened
	resetOnce sync.Once
}

// close resets the pipe without recording a Finish (test cleanup).
func (p *pipe) close() { p.resetOnce.Do(func() { close(p.reset) }) }

// newPipe returns the gateway end and the agent end of a new stream; each
// direction holds at most depth frames, so a sender blocks while its peer
// does not read (flow control).
func newPipe(depth int) (gw, ag *pipeEnd) {
	p := &pipe{reset: make(chan struct{})}
	toAgent := make(chan *Frame, depth)
	toGateway := make(chan *Frame, depth)
	gw = &pipeEnd{name: "gateway", p: p, in: toGateway, out: toAgent, finishes: make(chan bool, 64)}
	ag = &pipeEnd{name: "agent", p: p, in: toAgent, out: toGateway, finishes: make(chan bool, 64)}
	return gw, ag
}

// pipeEnd is one end of a pipe. Like a transport stream, it copies a frame
// on Send (so senders may reuse their buffers) and refuses frames larger
// than MaxFrameSize.
type pipeEnd struct {
	name string
	p    *pipe
	in   <-chan *Frame
	out  chan<- *Frame
	eof  bool // the peer closed its side; owned by the receiver

	mu   sync.Mutex
	sent []*Frame // copies of the frames sent; guarded by mu

	// finishes receives the argument of every Finish call, in order.
	finishes chan bool
}

var _ Stream = (*pipeEnd)(nil)

func (e *pipeEnd) isReset() bool {
	select {
	case <-e.p.reset:
		return true
	default:
		return false
	}
}

func (e *pipeEnd) Send(f *Frame) error {
	if f == nil {
		return errors.New("pipe: nil frame")
	}
	if n := proto.Size(f); n > MaxFrameSize {
		return fmt.Errorf("pipe: frame of %d bytes exceeds %d", n, MaxFrameSize)
	}
	if e.isReset() {
		return errPipeReset
	}
	c := proto.Clone(f).(*Frame)
	select {
	case e.out <- c:
	case <-e.p.reset:
		return errPipeReset
	}
	e.mu.Lock()
	e.sent = append(e.sent, c)
	e.mu.Unlock()
	return nil
}

func (e *pipeEnd) Recv() (*Frame, error) {
	if e.eof {
		return nil, io.EOF
	}
	if e.isReset() {
		return nil, errPipeReset
	}
	select {
	case f := <-e.in:
		if f == nil {
			e.eof = true
			return nil, io.EOF
		}
		return f, nil
	case <-e.p.reset:
		return nil, errPipeReset
	}
}

// Finish records clean; an unclean finish resets the stream for both ends.
func (e *pipeEnd) Finish(clean bool) {
	select {
	case e.finishes <- clean:
	default:
	}
	if !clean {
		e.p.close()
	}
}

// closeSend ends this side cleanly: the peer's Recv returns io.EOF once it
// has read everything sent before. Call it from the sending goroutine only.
func (e *pipeEnd) closeSend() error {
	select {
	case e.out <- nil:
		return nil
	case <-e.p.reset:
		return errPipeReset
	}
}

// frames returns the frames this end sent so far.
func (e *pipeEnd) frames() []*Frame {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Frame(nil), e.sent...)
}

// lease returns a view of the end for one exchange whose first Finish
// decides, as the gateway's transports hand out pooled streams.
func (e *pipeEnd) lease() Stream { return &pipeLease{e: e} }

type pipeLease struct {
	e    *pipeEnd
	once sync.Once
}

func (l *pipeLease) Send(f *Frame) error   { return l.e.Send(f) }
func (l *pipeLease) Recv() (*Frame, error) { return l.e.Recv() }
func (l *pipeLease) Finish(clean bool)     { l.once.Do(func() { l.e.Finish(clean) }) }

// nextFinish waits for the next Finish call on e and returns its argument.
func (e *pipeEnd) nextFinish(t testing.TB) bool {
	t.Helper()
	select {
	case clean := <-e.finishes:
		return clean
	case <-time.After(hangGuard):
		t.Fatalf("%s end: Finish was not called", e.name)
		return false
	}
}

// wantFinish fails t unless the next Finish call on e has clean == want.
func (e *pipeEnd) wantFinish(t testing.TB, want bool) {
	t.Helper()
	if got := e.nextFinish(t); got != want {
		t.Fatalf("%s end: Finish(%v), want Finish(%v)", e.name, got, want)
	}
}

// noCleanFinish fails t if e was ever finished cleanly so far.
func (e *pipeEnd) noCleanFinish(t testing.TB) {
	t.Helper()
	for {
		select {
		case clean := <-e.finishes:
			if clean {
				t.Fatalf("%s end: Finish(true) after a failed exchange", e.name)
			}
		default:
			return
		}
	}
}

// recvFrame reads one frame or fails t. A Recv still blocked when t fails
// returns when the test's cleanup closes the stream.
func recvFrame(t testing.TB, st Stream) *Frame {
	t.Helper()
	type result struct {
		f   *Frame
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := st.Recv()
		ch <- result{f, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("recv: %v", r.err)
		}
		return r.f
	case <-time.After(hangGuard):
		t.Fatal("recv: no frame")
		return nil
	}
}

// TestPipe checks the test stream itself: copies, order, EOF, reset, size.
func TestPipe(t *testing.T) {
	gw, ag := newPipe(2)
	buf := []byte("abc")
	if err := gw.Send(&Frame{Data: buf}); err != nil {
		t.Fatal(err)
	}
	buf[0] = 'X' // the pipe must not keep the sender's buffer
	if err := gw.closeSend(); err != nil {
		t.Fatal(err)
	}
	if f := recvFrame(t, ag); string(f.Data) != "abc" {
		t.Fatalf("got %q", f.Data)
	}
	if _, err := ag.Recv(); err != io.EOF {
		t.Fatalf("after closeSend: %v, want io.EOF", err)
	}
	if err := ag.Send(&Frame{Data: make([]byte, MaxFrameSize)}); err == nil {
		t.Fatal("a frame over MaxFrameSize was sent")
	}
	blocked := make(chan error, 1)
	go func() {
		_, err := gw.Recv()
		blocked <- err
	}()
	ag.Finish(false)
	if err := <-blocked; !errors.Is(err, errPipeReset) {
		t.Fatalf("blocked Recv after reset: %v", err)
	}
	if err := gw.Send(&Frame{}); !errors.Is(err, errPipeReset) {
		t.Fatalf("Send after reset: %v", err)
	}
	ag.wantFinish(t, false)
}
