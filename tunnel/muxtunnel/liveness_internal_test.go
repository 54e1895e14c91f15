package muxtunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// liveFake is a LiveConn whose received count the test moves: what came
// from the agent. Its streams take every write and never answer.
type liveFake struct {
	received atomic.Uint64
	done     chan struct{}
	closed   atomic.Bool
}

func (c *liveFake) OpenStream(context.Context) (RawStream, error) {
	return &okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 64)}}, nil
}
func (c *liveFake) AcceptStream(ctx context.Context) (RawStream, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (c *liveFake) Close(string) {
	if c.closed.CompareAndSwap(false, true) {
		close(c.done)
	}
}
func (c *liveFake) Done() <-chan struct{}          { return c.done }
func (c *liveFake) RemoteAddr() string             { return "fake" }
func (c *liveFake) TLSState() *tls.ConnectionState { return nil }
func (c *liveFake) Received() uint64               { return c.received.Load() }
func (c *liveFake) RTT() time.Duration             { return 0 }
func (c *liveFake) PeerKeepalive() time.Duration   { return 0 }

// liveSession is a welcomed gateway session on a liveFake, with
// silentAfter lowered to d for the test.
func liveSession(t *testing.T, d time.Duration) (*session, *liveFake) {
	old := silentAfter
	silentAfter = d
	t.Cleanup(func() { silentAfter = old })
	c := &liveFake{done: make(chan struct{})}
	ctrl := &okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 64)}}
	ss := (&Server{}).newSession(c, ctrl, &tunnelv1.Hello{Name: "agent"}, tunnel.Identity{Group: "g"}, TransportQUIC)
	if ss.live == nil {
		t.Fatal("a session on a LiveConn has no liveness watch")
	}
	ss.welcomed.Store(true)
	t.Cleanup(func() { ss.Close(nil) })
	return ss, c
}

// waitUntil polls cond (the watch has no event to wait on) for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUnansweredExchangeSilencesSession: an exchange sent to an agent that
// answers nothing (its host died, its path was cut without a word) makes
// the session Silent after silentAfter, so that the registry stops picking
// it, and closes it after deadAfter, so that the exchanges on it fail (and
// a GET is sent again over another agent) instead of waiting for the
// keepalive's idle timeout: 30 s by default over QUIC, in which every
// exchange picked there waited as long.
func TestUnansweredExchangeSilencesSession(t *testing.T) {
	ss, c := liveSession(t, 40*time.Millisecond)
	if _, err := ss.OpenStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the session to turn silent", func() bool { return ss.Silent() || isDone(ss) })
	if isDone(ss) {
		t.Fatal("the session was closed before it was ever Silent")
	}
	select {
	case <-ss.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a session silent since an exchange went out was never closed")
	}
	if !errors.Is(ss.reason, errAgentSilent) || !strings.Contains(ss.reason.Error(), "network path is down") {
		t.Fatalf("close reason %v, want one saying the agent went silent", ss.reason)
	}
	select {
	case <-c.done: // Close closes the connection right after Done
	case <-time.After(10 * time.Second):
		t.Fatal("the connection stayed open")
	}
}

// TestAnsweredExchangeNotSilent: an exchange whose request the agent's
// transport acknowledged is not judged by how long its backend takes (a
// long poll, a slow backend, an idle WebSocket): the session neither turns
// Silent nor closes, however long nothing more comes, and the watch stops
// until the next exchange.
func TestAnsweredExchangeNotSilent(t *testing.T) {
	ss, c := liveSession(t, 40*time.Millisecond)
	if _, err := ss.OpenStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.received.Add(1) // the acknowledgement of its request
	waitUntil(t, "the watch to stop", func() bool { return !ss.live.armed.Load() })
	// Nothing comes for ten times deadAfter (3 × 40 ms).
	quiet := time.NewTimer(10 * ss.live.deadAfter())
	defer quiet.Stop()
	select {
	case <-ss.Done():
		t.Fatalf("a session whose agent acknowledged the exchange was closed: %v", ss.reason)
	case <-quiet.C:
	}
	if ss.Silent() {
		t.Fatal("a session whose agent acknowledged the exchange is Silent")
	}
}

// TestSilentSessionAnswersAgain: a Silent session whose agent answers
// again (a path that came back) is picked again and not closed.
func TestSilentSessionAnswersAgain(t *testing.T) {
	ss, c := liveSession(t, 40*time.Millisecond)
	// A long deadAfter: only the answer may end the silence.
	ss.live.c = &slowPeer{c}
	if _, err := ss.OpenStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the session to turn silent", ss.Silent)
	c.received.Add(1)
	waitUntil(t, "the silence to end", func() bool { return !ss.Silent() })
	if isDone(ss) {
		t.Fatalf("the session was closed: %v", ss.reason)
	}
}

// TestProberProbes: a LiveConn with a probe of its own (yamux's ping)
// gets that probe instead of a control message.
func TestProberProbes(t *testing.T) {
	ss, c := liveSession(t, 40*time.Millisecond)
	p := &proberFake{liveFake: c, probes: make(chan struct{}, 8)}
	ss.live.c = p
	ctrl := ss.ctrl.(*okStream)
	ss.greeted = true
	ss.live.ask()
	select {
	case <-p.probes:
	case <-time.After(10 * time.Second):
		t.Fatal("the Prober was not probed")
	}
	select {
	case <-ctrl.writes:
		t.Fatal("a control message was written to a Prober's agent")
	default:
	}
	waitUntil(t, "the unanswered probe to silence the session", ss.Silent)
}

type proberFake struct {
	*liveFake
	probes chan struct{}
}

func (p *proberFake) Probe() { p.probes <- struct{}{} }

// slowPeer is a liveFake whose agent pings only every hour.
type slowPeer struct{ *liveFake }

func (slowPeer) PeerKeepalive() time.Duration { return time.Hour }

func isDone(ss *session) bool {
	select {
	case <-ss.done:
		return true
	default:
		return false
	}
}

// TestBurstEndProbed: exchanges that went out in the same watch window as
// packets came in may have been sent after them; when nothing comes next,
// the watch asks the agent (an empty control message, which agents skip)
// rather than take them for answered, which a dead agent's session would
// have been, or for unanswered, which would silence a live agent's idle
// session after every burst. The answer clears them; no answer silences
// the session.
func TestBurstEndProbed(t *testing.T) {
	for _, answer := range []bool{true, false} {
		ss, c := liveSession(t, 40*time.Millisecond)
		ctrl := ss.ctrl.(*okStream)
		ss.greeted = true
		if _, err := ss.OpenStream(context.Background()); err != nil { // arms the watch
			t.Fatal(err)
		}
		c.received.Add(1)                                              // its answer
		if _, err := ss.OpenStream(context.Background()); err != nil { // same window, after it or not
			t.Fatal(err)
		}
		select {
		case <-ctrl.writes:
		case <-time.After(10 * time.Second):
			t.Fatal("no probe was written after a window with exchanges and packets, and then nothing")
		}
		if answer {
			c.received.Add(1)
			waitUntil(t, "the watch to stop after the probe's answer", func() bool { return !ss.live.armed.Load() })
			if ss.Silent() || isDone(ss) {
				t.Fatalf("answered probe: silent %v, closed %v (%v)", ss.Silent(), isDone(ss), ss.reason)
			}
			continue
		}
		waitUntil(t, "the session to turn silent without the probe's answer", ss.Silent)
	}
}

// TestSilentSessionAsksItsAgentsOthers: when one session of an agent goes
// silent, the agent's other sessions are asked at once (the registry
// picks none of them meanwhile, so no exchange would): unanswered, they
// go silent too and are closed, instead of each costing the next
// exchange sent there its own wait (TestDeadAgentNoticedBeforeIdleTimeout
// took 12 s for an agent of two sessions). Another agent's session is
// left alone.
func TestSilentSessionAsksItsAgentsOthers(t *testing.T) {
	old := silentAfter
	silentAfter = 40 * time.Millisecond
	t.Cleanup(func() { silentAfter = old })
	srv := &Server{}
	open := func(agentID string) (*session, *okStream) {
		c := &liveFake{done: make(chan struct{})}
		ctrl := &okStream{stuckStream{closed: make(chan struct{}), writes: make(chan struct{}, 64)}}
		ss := srv.newSession(c, ctrl, &tunnelv1.Hello{AgentId: agentID}, tunnel.Identity{Group: "g"}, TransportQUIC)
		ss.welcomed.Store(true)
		ss.greeted = true
		t.Cleanup(func() { ss.Close(nil) })
		return ss, ctrl
	}
	first, _ := open("agent-1")
	sibling, siblingCtrl := open("agent-1")
	_, otherCtrl := open("agent-2")
	if _, err := first.OpenStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-siblingCtrl.writes:
	case <-time.After(10 * time.Second):
		t.Fatal("the silent agent's other session was not asked")
	}
	waitUntil(t, "the unanswering sibling to turn silent", sibling.Silent)
	select {
	case <-otherCtrl.writes:
		t.Fatal("another agent's session was asked")
	default:
	}
}

// TestLateRunDoesNotJudge: a watch run that comes long after the previous
// one (the gateway itself stalled: a loaded machine, a long pause) does not
// mark the session silent, since packets from the agent may still wait
// unread in the gateway's socket; the next run on time does (a reviewer's
// note on 3ac8c89).
func TestLateRunDoesNotJudge(t *testing.T) {
	ss, _ := liveSession(t, time.Hour) // the timer stays out of the way
	w := ss.live
	now := tunnel.MonoNow()
	w.mu.Lock()
	w.first = false
	w.waiting = now - int64(2*time.Hour) // an exchange unanswered for longer than silentAfter
	w.at = now - int64(40*time.Minute)   // the last run: more than two periods (15 min) ago
	w.mu.Unlock()
	w.run()
	if ss.Silent() {
		t.Fatal("a late run marked the session silent")
	}
	w.run() // on time now
	if !ss.Silent() {
		t.Fatal("the run on time after a late one did not mark the session silent")
	}
}

// foreignFake is another transport's session (Watched).
type foreignFake struct {
	done   chan struct{}
	reason chan error
	asked  chan struct{}
}

func (f *foreignFake) Done() <-chan struct{} { return f.done }
func (f *foreignFake) Close(reason error) {
	select {
	case <-f.done:
	default:
		f.reason <- reason
		close(f.done)
	}
}
func (f *foreignFake) AgentSilent()   { f.asked <- struct{}{} }
func (f *foreignFake) Exchanges() int { return 1 }

// TestWatchProbesEachWait: another transport's watch (NewWatch: gRPC,
// whose agent answers no exchange by itself) probes the agent when an
// exchange starts a wait, not only in the ambiguous cases: an answered
// probe leaves the session alone; an exchange after the watch stopped is
// probed again, and unanswered it silences the session (the agent's
// other sessions are asked) and closes it.
func TestWatchProbesEachWait(t *testing.T) {
	old := silentAfter
	silentAfter = 40 * time.Millisecond
	t.Cleanup(func() { silentAfter = old })
	peer := &proberFake{liveFake: &liveFake{done: make(chan struct{})}, probes: make(chan struct{}, 64)}
	s := &foreignFake{done: make(chan struct{}), reason: make(chan error, 1), asked: make(chan struct{}, 8)}
	w := NewWatch(s, peer, zap.NewNop())
	t.Cleanup(w.Stop)
	probedNow := func(what string) {
		t.Helper()
		select {
		case <-peer.probes:
		case <-time.After(10 * time.Second):
			t.Fatalf("no probe after %s", what)
		}
	}

	w.Opening()
	probedNow("the first exchange")
	peer.received.Add(1) // the agent's answer
	waitUntil(t, "the watch to stop", func() bool { return !w.w.armed.Load() })
	if w.Silent() {
		t.Fatal("a session whose agent answered the probe is Silent")
	}

	w.Opening()
	probedNow("an exchange after the watch stopped")
	waitUntil(t, "the unanswered session to turn silent", w.Silent)
	select {
	case <-s.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's other sessions were not asked")
	}
	select {
	case err := <-s.reason:
		if !errors.Is(err, errAgentSilent) {
			t.Fatalf("closed for %v, want the agent's silence", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the silent session was not closed")
	}
}
