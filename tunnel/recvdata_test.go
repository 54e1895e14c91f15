package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// piecesStream is a Stream that hands data-only frames over as pieces
// (DataReceiver), as the gRPC transport does: each piece in memory of its
// own, poisoned when its owner is released, so that a reader that used a
// piece after giving it back reads garbage. The ledger counts the owners.
type piecesStream struct {
	Stream
	l *ledger
}

var _ DataReceiver = (*piecesStream)(nil)

func (s *piecesStream) RecvData() (*Frame, Data, error) {
	f, err := s.Recv()
	if err != nil || len(f.Data) == 0 || f.End || f.Request != nil || f.Response != nil ||
		f.Error != nil || len(f.Trailers) > 0 {
		return f, Data{}, err
	}
	// Three uneven pieces (or fewer for a short frame).
	var pieces [][]byte
	rest := f.Data
	for _, n := range []int{len(rest) / 3, len(rest) / 5} {
		if n > 0 {
			pieces = append(pieces, bytes.Clone(rest[:n]))
			rest = rest[n:]
		}
	}
	pieces = append(pieces, bytes.Clone(rest))
	return nil, Data{Pieces: pieces, Owner: s.l.owner(pieces)}, nil
}

// ledger counts the pieces handed out and given back.
type ledger struct {
	mu       sync.Mutex
	lent     int
	released int
	twice    int // owners released more than once
}

func (l *ledger) owner(pieces [][]byte) *pieceOwner {
	l.mu.Lock()
	l.lent++
	l.mu.Unlock()
	return &pieceOwner{l: l, pieces: pieces}
}

// check fails t unless every owner was released exactly once.
func (l *ledger) check(t testing.TB, side string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lent == 0 {
		t.Errorf("%s: no data came in pieces", side)
	}
	if l.released != l.lent || l.twice != 0 {
		t.Errorf("%s: %d data frames in pieces, %d released, %d released twice", side, l.lent, l.released, l.twice)
	}
}

type pieceOwner struct {
	l      *ledger
	pieces [][]byte
	done   bool
}

func (o *pieceOwner) Release() {
	o.l.mu.Lock()
	defer o.l.mu.Unlock()
	if o.done {
		o.l.twice++
		return
	}
	o.done = true
	o.l.released++
	for _, p := range o.pieces {
		for i := range p {
			p[i] ^= 0xFF
		}
	}
}

// servePieces serves ag with ServeStream through a piecesStream on l, with
// rt as every request's backend, until the test ends.
func servePieces(t testing.TB, ag *pipeEnd, l *ledger, rt http.RoundTripper) {
	srv := &Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) {
		return rt, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeStream(ctx, &piecesStream{Stream: ag, l: l}) }()
	t.Cleanup(func() {
		cancel()
		ag.p.close()
		<-done
	})
}

// TestBodiesInPieces: request and response bodies that arrive in pieces
// (DataReceiver) reach the backend and the client intact and in order, and
// every piece is given back exactly once, after it was read.
func TestBodiesInPieces(t *testing.T) {
	for _, size := range []int{CoalesceLimit + 1, 9*ChunkSize + 7} {
		t.Run(sizeName(size), func(t *testing.T) {
			gw, ag := newPipe(4)
			var agentLedger, gatewayLedger ledger
			servePieces(t, ag, &agentLedger, &testBackend{}) // echoes the body
			body := pattern(size)
			req := newRequest(t, "POST", "http://backend:80/", bytes.NewReader(body))
			res, err := RoundTrip(&piecesStream{Stream: gw.lease(), l: &gatewayLedger}, req, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); !bytes.Equal(got, body) {
				t.Fatalf("echo: %d bytes that differ from the %d sent", len(got), len(body))
			}
			ag.wantFinish(t, true) // the agent read every frame
			agentLedger.check(t, "agent")
			gatewayLedger.check(t, "gateway")
		})
	}
}

// TestResponseBodyClosedEarlyGivesPiecesBack: a response body closed in
// the middle of a frame in pieces gives that frame back.
func TestResponseBodyClosedEarlyGivesPiecesBack(t *testing.T) {
	gw, ag := newPipe(4)
	body := pattern(3 * ChunkSize)
	startAgent(t, ag, &testBackend{respond: func(req *http.Request, _ []byte) (*http.Response, error) {
		return bodyResponse(req, 200, body, -1), nil
	}})
	var l ledger
	res, err := RoundTrip(&piecesStream{Stream: gw.lease(), l: &l}, newRequest(t, "GET", "http://backend:80/", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1000)
	if _, err := io.ReadFull(res.Body, got); err != nil || !bytes.Equal(got, body[:1000]) {
		t.Fatalf("first bytes: %v", err)
	}
	res.Body.Close()
	gw.wantFinish(t, false)
	l.check(t, "gateway")
}

// writeLog is an io.Writer that keeps what is written and counts writes.
type writeLog struct {
	bytes.Buffer
	writes int
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestWriteBodyTo: the request body writes itself out of the pieces it
// arrived in, never past the limit it is given, and the rest of it is
// still there for Read; every piece is given back once written.
func TestWriteBodyTo(t *testing.T) {
	body := pattern(9*ChunkSize + 7)
	for _, first := range []int64{1, 1000, ChunkSize, int64(len(body)), int64(len(body)) + 10} {
		t.Run(fmt.Sprint(first), func(t *testing.T) {
			gw, ag := newPipe(4)
			var l ledger
			type result struct {
				written []byte
				n       int64
				err     error
				rest    []byte
			}
			results := make(chan result, 1)
			servePieces(t, ag, &l, rtFunc(func(req *http.Request) (*http.Response, error) {
				bw, ok := req.Body.(interface {
					WriteBodyTo(io.Writer, int64) (int64, error)
				})
				if !ok {
					t.Error("the request body has no WriteBodyTo")
					return nil, io.ErrUnexpectedEOF
				}
				var w writeLog
				n, err := bw.WriteBodyTo(&w, first)
				rest, _ := io.ReadAll(req.Body)
				results <- result{w.Bytes(), n, err, rest}
				return bodyResponse(req, 204, nil, 0), nil
			}))
			req := newRequest(t, "POST", "http://backend:80/", bytes.NewReader(body))
			res, err := RoundTrip(gw.lease(), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, res)
			r := <-results
			want := min(first, int64(len(body)))
			if r.err != nil || r.n != want || !bytes.Equal(r.written, body[:want]) {
				t.Fatalf("WriteBodyTo(%d) = %d, %v; wrote %d bytes, want %d intact", first, r.n, r.err, len(r.written), want)
			}
			if !bytes.Equal(r.rest, body[want:]) {
				t.Fatalf("Read after WriteBodyTo: %d bytes, want the other %d", len(r.rest), len(body)-int(want))
			}
			ag.wantFinish(t, true)
			l.check(t, "agent")
		})
	}
}

// failingWriter takes ok bytes, then fails every write.
type failingWriter struct{ ok int }

var errWriteFailed = errors.New("backend connection broke")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= w.ok {
		w.ok -= len(p)
		return len(p), nil
	}
	n := w.ok
	w.ok = 0
	return n, errWriteFailed
}

// TestWriteBodyToWriteFails: when the backend connection breaks midway,
// WriteBodyTo returns the error and the bytes that made it, and every
// piece is still given back exactly once.
func TestWriteBodyToWriteFails(t *testing.T) {
	body := pattern(9*ChunkSize + 7)
	gw, ag := newPipe(4)
	var l ledger
	// Registered before servePieces, so it runs after ServeStream returned
	// (cleanups run last first): what the backend left unread is given back
	// when the exchange is over.
	t.Cleanup(func() { l.check(t, "agent") })
	type result struct {
		n   int64
		err error
	}
	results := make(chan result, 1)
	servePieces(t, ag, &l, rtFunc(func(req *http.Request) (*http.Response, error) {
		bw := req.Body.(interface {
			WriteBodyTo(io.Writer, int64) (int64, error)
		})
		n, err := bw.WriteBodyTo(&failingWriter{ok: 3*ChunkSize + 5}, int64(len(body)))
		results <- result{n, err}
		return nil, err
	}))
	req := newRequest(t, "POST", "http://backend:80/", bytes.NewReader(body))
	if res, err := RoundTrip(gw.lease(), req, nil); err == nil {
		readAll(t, res) // the agent answers with an error; the relay may surface it either way
	}
	r := <-results
	if !errors.Is(r.err, errWriteFailed) || r.n != 3*ChunkSize+5 {
		t.Fatalf("WriteBodyTo = %d, %v; want %d and the write error", r.n, r.err, 3*ChunkSize+5)
	}
	ag.wantFinish(t, false)
}

// TestBodyPipeDiscard: a request body the backend left partly read (it
// answered early or its connection broke) gives back the chunk it was
// reading and every queued one once its exchange is over.
func TestBodyPipeDiscard(t *testing.T) {
	var l ledger
	p := newBodyPipe(context.Background(), nil, nil)
	for range 3 {
		pieces := [][]byte{pattern(100), pattern(50)}
		p.send(chunkOf(Data{Pieces: pieces, Owner: l.owner(pieces)}))
	}
	if n, err := p.Read(make([]byte, 120)); n != 120 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	p.discard()
	l.check(t, "pipe")
	p.discard() // nothing is given back twice
	l.check(t, "pipe")
}
