package grpctunnel_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/shortskip"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// stalledSession is a gRPC session (grpctunnel.WatchedSession) on a
// gateway that stalls for stall (a paused VM or container, swapping, a
// machine so loaded that nothing runs) just as its liveness watch's first
// run after an exchange begins; the agent's answer to the probe is then
// read before the next run, as the connection's reader catches up.
type stalledSession struct {
	stall  time.Duration
	peer   *stalledPeer
	runs   atomic.Int32
	second chan struct{} // closed when the watch's second run begins
	done   chan struct{}
	once   sync.Once
	closed chan error // the reason, when the watch closed the session
}

func (s *stalledSession) Done() <-chan struct{} {
	// The watch's run asks Done first, before it takes the time.
	switch s.runs.Add(1) {
	case 1:
		time.Sleep(s.stall) // the gateway stalls
	case 2:
		s.peer.received.Add(17) // the PING ACK, read once the reader ran again
		close(s.second)
	}
	return s.done
}

func (s *stalledSession) Close(reason error) {
	s.once.Do(func() {
		s.closed <- reason
		close(s.done)
	})
}

func (s *stalledSession) AgentSilent()   {}
func (s *stalledSession) Exchanges() int { return 1 }

// stalledPeer is the session's connection (grpctunnel.ProbingPeer).
type stalledPeer struct{ received atomic.Uint64 }

func (p *stalledPeer) Received() uint64             { return p.received.Load() }
func (p *stalledPeer) RTT() time.Duration           { return 0 }
func (p *stalledPeer) PeerKeepalive() time.Duration { return 0 } // the watch's floor: closed after 3 s
func (p *stalledPeer) Probe()                       {}

// TestLateFirstWatchRunDoesNotJudge: when the gateway itself stalls right
// after an exchange armed the liveness watch of a gRPC session (the one
// muxtunnel gives, as the gateway does), the watch's first run comes late,
// while the agent's answer to the probe still waits unread in the socket;
// that run must not judge the agent (a late run never does), and the next
// one finds the answer. Before, only later runs were spared: a stall of
// more than the watch's close delay (the agent's keepalive and a second: 6
// s with 5 s, 16 s by default; 3 s here) closed every session whose
// watch had just armed, with its exchanges, and a stall of more than a
// second set them aside.
func TestLateFirstWatchRunDoesNotJudge(t *testing.T) {
	shortskip.Long(t, "simulates a gateway that stalls for 3.5 s")
	peer := &stalledPeer{}
	s := &stalledSession{stall: 3500 * time.Millisecond, peer: peer,
		second: make(chan struct{}), done: make(chan struct{}), closed: make(chan error, 1)}
	var w grpctunnel.Watch = muxtunnel.NewWatch(s, peer, zap.NewNop())
	t.Cleanup(w.Stop)
	w.Opening() // an exchange is sent; the agent's answer comes after the stall
	select {
	case err := <-s.closed:
		t.Fatalf("the watch's first run, %v late because the gateway stalled, closed a live agent's session (%v); "+
			"a late run must not judge: the agent's answer may wait unread", s.stall, err)
	case <-s.second:
	case <-time.After(s.stall + hangGuard):
		t.Fatal("the watch did not run a second time after its late first run")
	}
	if w.Silent() {
		t.Fatalf("the watch's first run, %v late because the gateway stalled, set a live agent's session aside", s.stall)
	}
}
