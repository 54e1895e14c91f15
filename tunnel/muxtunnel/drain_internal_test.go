package muxtunnel

import (
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// stuckStream is a control stream whose writes block until it is closed,
// as a QUIC stream's do when the agent gives no flow-control credit.
type stuckStream struct {
	closed chan struct{}
	once   sync.Once
	writes chan struct{} // gets a value when a write starts
}

func (s *stuckStream) Read([]byte) (int, error) { <-s.closed; return 0, io.EOF }
func (s *stuckStream) Write(p []byte) (int, error) {
	s.writes <- struct{}{}
	<-s.closed
	return 0, errors.New("stream closed")
}
func (s *stuckStream) CloseWrite() error               { s.close(); return nil }
func (s *stuckStream) CloseRead()                      {}
func (s *stuckStream) Reset()                          { s.close() }
func (s *stuckStream) SetReadDeadline(time.Time) error { return nil }
func (s *stuckStream) close()                          { s.once.Do(func() { close(s.closed) }) }

// okStream takes every write.
type okStream struct{ stuckStream }

func (s *okStream) Write(p []byte) (int, error) { s.writes <- struct{}{}; return len(p), nil }

// TestDrainAllDoesNotWaitForAStuckAgent: one agent that takes no data
// neither keeps the others from getting the message nor holds DrainAll
// past DrainWait.
func TestDrainAllDoesNotWaitForAStuckAgent(t *testing.T) {
	stuck := &stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}
	ok := &okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 4)}}
	s := &Server{DrainWait: 50 * time.Millisecond, sessions: map[*session]struct{}{}}
	for _, c := range []RawStream{stuck, ok} {
		ss := &session{srv: s, ctrl: c, done: make(chan struct{})}
		ss.greeted = true
		s.sessions[ss] = struct{}{}
	}
	returned := make(chan struct{})
	go func() {
		s.DrainAll("test")
		close(returned)
	}()
	for _, w := range []struct {
		ch   chan struct{}
		what string
	}{{ok.writes, "the other agent's message"}, {stuck.writes, "the stuck agent's message"}} {
		select {
		case <-w.ch:
		case <-time.After(10 * time.Second):
			stuck.close()
			t.Fatalf("%s was never sent", w.what)
		}
	}
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		stuck.close()
		t.Fatal("DrainAll still waits for an agent that takes no data")
	}
	stuck.close() // as CloseAll would: the blocked send ends
}
