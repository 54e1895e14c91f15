package yamuxtunnel

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const hangGuard = 10 * time.Second

// gateConn is a net.Conn whose Writes wait for the test: each Write reports
// its size on calls, then waits for one result on results (or Close).
type gateConn struct {
	net.Conn // nil: only Write and Close are used
	calls    chan int
	results  chan error

	mu      sync.Mutex
	started int // bytes of every Write begun so far
	closed  chan struct{}
	once    sync.Once
}

func newGateConn() *gateConn {
	return &gateConn{calls: make(chan int, 1), results: make(chan error), closed: make(chan struct{})}
}

func (g *gateConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.started += len(p)
	g.mu.Unlock()
	g.calls <- len(p)
	select {
	case err := <-g.results:
		if err != nil {
			return 0, err
		}
		return len(p), nil
	case <-g.closed:
		return 0, net.ErrClosed
	}
}

func (g *gateConn) startedBytes() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started
}

func (g *gateConn) Close() error { g.once.Do(func() { close(g.closed) }); return nil }

// release lets the flusher's Writes through until stop is closed.
func (g *gateConn) release(stop <-chan struct{}) {
	for {
		select {
		case <-g.calls:
			select {
			case g.results <- nil:
			case <-stop:
				return
			}
		case <-stop:
			return
		}
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// TestCoalescingOrder: bytes come out in order and each Write's bytes stay
// together, with several writers and Writes larger than the buffer.
func TestCoalescingOrder(t *testing.T) {
	a, b := net.Pipe()
	w := newCoalescingConn(a)
	defer w.Close()
	defer b.Close()

	const writers, records = 4, 50
	var wg sync.WaitGroup
	for id := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range records {
				// A record: writer id, sequence, length, then the body; every
				// 10th is larger than the whole buffer.
				n := 1 + (seq*7919)%4000
				if seq%10 == 9 {
					n = maxPending + 12345
				}
				rec := make([]byte, 12+n)
				binary.BigEndian.PutUint32(rec[0:], uint32(id))
				binary.BigEndian.PutUint32(rec[4:], uint32(seq))
				binary.BigEndian.PutUint32(rec[8:], uint32(n))
				for i := range n {
					rec[12+i] = byte(id*31 + seq + i)
				}
				if _, err := w.Write(rec); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	got := make(chan error, 1)
	go func() {
		next := make([]int, writers)
		for range writers * records {
			var hdr [12]byte
			if _, err := io.ReadFull(b, hdr[:]); err != nil {
				got <- err
				return
			}
			id, seq, n := binary.BigEndian.Uint32(hdr[0:]), int(binary.BigEndian.Uint32(hdr[4:])), int(binary.BigEndian.Uint32(hdr[8:]))
			if id >= writers || seq != next[id] {
				got <- errors.New("record out of order or interleaved")
				return
			}
			next[id]++
			body := make([]byte, n)
			if _, err := io.ReadFull(b, body); err != nil {
				got <- err
				return
			}
			for i := range n {
				if body[i] != byte(int(id)*31+seq+i) {
					got <- errors.New("record body corrupted or interleaved")
					return
				}
			}
		}
		got <- nil
	}()
	wg.Wait()
	if err := recv(t, got, "the reader"); err != nil {
		t.Fatal(err)
	}
}

// TestCoalescingBackPressure: while the connection does not take bytes,
// Write accepts at most maxPending of them and then waits.
func TestCoalescingBackPressure(t *testing.T) {
	g := newGateConn()
	stop := make(chan struct{})
	defer close(stop) // after Close, which flushes through release
	w := newCoalescingConn(g)
	defer w.Close()
	const total = 3*maxPending + 100
	done := make(chan int, 1)
	go func() {
		_, err := w.Write(make([]byte, total))
		if err != nil {
			t.Errorf("write: %v", err)
		}
		// Everything beyond maxPending must have reached the connection
		// (or be on its way) before Write could return.
		done <- g.startedBytes()
	}()
	go g.release(stop)
	started := recv(t, done, "Write")
	if started < total-maxPending {
		t.Fatalf("Write returned with %d of %d bytes handed on: more than %d were buffered", started, total, maxPending)
	}
}

// TestCoalescingBatches: what is written while the connection is busy goes
// out in one underlying Write.
func TestCoalescingBatches(t *testing.T) {
	g := newGateConn()
	w := newCoalescingConn(g)
	defer w.Close()
	if _, err := w.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if n := recv(t, g.calls, "the first write"); n != 5 {
		t.Fatalf("first write of %d bytes, want 5", n)
	}
	for range 100 { // yamux: a header, then a body
		w.Write(make([]byte, 12))
		w.Write(make([]byte, 100))
	}
	g.results <- nil
	if n := recv(t, g.calls, "the second write"); n != 100*112 {
		t.Fatalf("second write of %d bytes, want all %d written meanwhile", n, 100*112)
	}
	g.results <- nil
}

// stall gets the flusher stuck in g's first Write, fills the buffer, and
// starts one more Write, which waits for room; its result comes on the
// channel returned.
func stall(t *testing.T, w *coalescingConn, g *gateConn) <-chan error {
	t.Helper()
	w.Write([]byte("x"))
	recv(t, g.calls, "the first write")
	if _, err := w.Write(make([]byte, maxPending)); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() {
		_, err := w.Write([]byte("y"))
		waiting <- err
	}()
	return waiting
}

// TestCoalescingError: the connection's write error reaches a Write that
// waits for room and every later Write.
func TestCoalescingError(t *testing.T) {
	g := newGateConn()
	w := newCoalescingConn(g)
	defer w.Close()
	waiting := stall(t, w, g)
	boom := errors.New("connection reset")
	g.results <- boom
	if err := recv(t, waiting, "the waiting Write"); !errors.Is(err, boom) {
		t.Fatalf("waiting Write: %v, want %v", err, boom)
	}
	if _, err := w.Write([]byte("z")); !errors.Is(err, boom) {
		t.Fatalf("later Write: %v, want %v", err, boom)
	}
}

// TestCoalescingCloseFlushes: Close writes what is pending before it
// closes the connection.
func TestCoalescingCloseFlushes(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := newCoalescingConn(a)
	want := bytes.Repeat([]byte("sallyport"), 50000) // more than the buffer
	read := make(chan []byte, 1)
	go func() {
		got, _ := io.ReadAll(b)
		read <- got
	}()
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, read, "the reader"); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes after Close, want the %d written", len(got), len(want))
	}
	if _, err := w.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestCoalescingCloseStuck: when the connection takes nothing, Close gives
// up after its bound, a Write waiting for room fails, and the flusher ends.
func TestCoalescingCloseStuck(t *testing.T) {
	g := newGateConn() // never lets a Write through
	w := newCoalescingConn(g)
	w.closeFlush = 10 * time.Millisecond
	waiting := stall(t, w, g)
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	if err := recv(t, waiting, "the waiting Write"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("waiting Write: %v, want net.ErrClosed", err)
	}
	recv(t, closed, "Close")
	recv(t, w.flushed, "the flusher")
}

// TestCoalescingCloseStuckTLS: over TLS to a peer that reads nothing, Close
// still returns: the TLS connection, closed while the flusher's Write is in
// flight, closes its socket at once.
func TestCoalescingCloseStuckTLS(t *testing.T) {
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer b.Close()
	server := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}})
	client := tls.Client(a, &tls.Config{InsecureSkipVerify: true})
	shook := make(chan error, 1)
	go func() { shook <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, shook, "the server handshake"); err != nil {
		t.Fatal(err)
	}
	// From here on nobody reads b: the pipe takes nothing.
	w := newCoalescingConn(client)
	w.closeFlush = 10 * time.Millisecond
	if _, err := w.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	recv(t, closed, "Close")
	recv(t, w.flushed, "the flusher")
}
