package muxtunnel

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// Liveness: an agent whose host died (power lost, a kernel panic) or whose
// network path was cut says nothing, and the keepalive notices only after
// its idle timeout: 30 to 35 s by default over QUIC, 10 to 15 s with a
// keepalive of 5 s. Meanwhile the gateway went on picking the dead
// sessions, and every exchange sent there waited out that timeout (GETs
// were then sent again over another agent, other requests got 502
// tunnel-failed), although the other agent of the group was fine.
//
// A new exchange is the best probe there is: opening its stream and
// sending its request makes a live agent's transport answer within a
// round trip, whatever its backend does (QUIC acknowledges every packet
// that carries data within its max ack delay, 25 ms). So on a connection
// that counts what it receives (LiveConn: QUIC, yamux), a gateway session watches the
// exchanges it opens: when one opened after the last packet from the agent
// has gone unanswered for silentAfter, the session is Silent and the
// registry picks it only when no other session can take the exchange; the
// first packet from the agent clears that, and the agent's other sessions
// are asked at once (see askAgent). When nothing at all arrives
// for longer than a live agent ever stays silent (its keepalive ping
// period, LiveConn.PeerKeepalive, 5 s over QUIC, plus silentAfter), the
// session is closed: the exchanges on it fail at once as they would at
// the idle timeout (a GET is sent again over another agent). Not sooner:
// after a NAT gave an idle agent a new port, the gateway's packets go to
// the old one and are lost until the agent's next ping tells the new one
// (TestQUICSurvivesNATRebinding), and that session is fine.
//
// A session that still receives packets (acknowledgements, other
// exchanges' data, keepalive pings) is never Silent, however long its
// backends take: a long poll, a slow backend or an idle WebSocket
// is judged by the acknowledgement of its request only. Nothing is watched
// while no exchange waits for an answer: the watch is a timer armed by the
// first exchange opened after it stopped, and it stops at its first run
// that finds the agent answered.

// LiveConn is a Conn that counts what it receives from the peer, whose
// transport answers within a round trip whatever is sent to it: a new
// stream, and data on the control stream (the watch's probe), or that is
// a Prober. QUIC does (it acknowledges every packet that carries data).
// yamux needs its own probe (a ping): a live agent's yamux acknowledges a
// new stream, but data on the control stream only at the TCP level, where
// nothing is read; its agent says its keepalive in its first frame. Their
// sessions on the gateway notice a silent agent within about a second (see
// above); gRPC's sessions, which are not muxtunnel's, have a watch of
// their own (NewWatch).
type LiveConn interface {
	Conn
	Peer
}

// Peer is what a liveness watch reads of a connection.
type Peer interface {
	// Received counts what the connection received from the peer so far
	// (packets, or reads): any change is a sign of life. It is called
	// once per watch run and per arming, so it must be cheap (a few
	// atomic loads).
	Received() uint64
	// RTT is the connection's smoothed round-trip time; 0 when unknown.
	RTT() time.Duration
	// PeerKeepalive is the longest a live peer stays silent while it
	// hears nothing: its keepalive ping period (at most). 0 when it
	// sends none.
	PeerKeepalive() time.Duration
}

// Prober is a LiveConn whose transport does not answer data on the
// control stream by itself (yamux: only TCP acknowledges it), with a probe
// of its own that draws an answer (a ping). Probe must not block.
type Prober interface {
	LiveConn
	Probe()
}

// Liveness bounds. silentAfter is far above a round trip plus an
// acknowledgement's delay on any usable path (it grows with slower ones,
// see liveWatch.silentAfter); see liveWatch.deadAfter for the close.
var silentAfter = time.Second // a variable for tests

const (
	// silentRTTs: on a path whose round trip is long, silentAfter is at
	// least this many of them (a lost request is sent again after about
	// two).
	silentRTTs = 8
	// deadFactor: a session that received nothing for this many times
	// its silentAfter after an exchange went out is closed, if that is
	// longer than its peer's keepalive and silentAfter.
	deadFactor = 3
	// watchRuns is how many times per silentAfter the watch runs while an
	// exchange waits for its answer.
	watchRuns = 4
)

// errAgentSilent is the reason of a session closed by its liveness watch.
var errAgentSilent = errors.New("nothing came from the agent since an exchange was sent to it")

// liveWatch is a gateway session's watch over its exchanges' answers (see
// above). Its runs sample two counters, what came from the agent and the
// exchanges opened, so they cannot tell which came first within one run's
// window: an exchange that went out after the window's packets, and then
// nothing came, would be taken for answered. A run that sees both in its
// window leaves those exchanges pending, and when the next run finds that
// nothing came meanwhile it asks the agent for an answer (probe): an
// empty control message, which every agent skips and its transport
// acknowledges. That costs one small packet at the end of a burst; a
// lone exchange, sent after the watch took its count, needs none.
type liveWatch struct {
	c     Peer
	ss    Watched // a muxtunnel session, or another transport's (NewWatch)
	log   *zap.Logger
	timer *time.Timer   // runs run; made stopped, never nil
	floor time.Duration // silentAfter when the watch was made

	armed   atomic.Bool   // timer is set, or run is under way
	opened  atomic.Uint64 // exchange streams opened on the session
	silent  atomic.Bool   // Silent: an exchange went unanswered for silentAfter
	probing atomic.Bool   // a probe is being written
	// probeEach: the transport answers no exchange by itself (gRPC: an
	// exchange on a pooled stream draws nothing until its response), so
	// every exchange that starts a wait is followed by a probe.
	probeEach bool

	// Owned by whoever set armed (opening, then run; each run either
	// re-arms the timer or clears armed last).
	mu       sync.Mutex // orders opening's writes before run's reads
	received uint64     // c.Received() at the last run or arming
	seen     uint64     // opened at the last run or arming
	at       int64      // when (tunnel.MonoNow) the last run or arming was
	// first: the exchange that armed the watch went out after received
	// was taken: what comes from then on answers it.
	first bool
	// waiting: an exchange (or a probe) is unanswered since at least this
	// (MonoNow); 0: none.
	waiting int64
	// pending: exchanges went out in the last run's window, in which
	// something came too, maybe before them; 0: none.
	pending bool
}

var _ Watched = (*session)(nil)

func (ss *session) Exchanges() int { return len(ss.slots) }
func (ss *session) AgentSilent()   { ss.srv.askAgent(ss) }

// newLiveWatch returns the watch of ss, whose connection is c.
func newLiveWatch(ss Watched, c Peer, log *zap.Logger) *liveWatch {
	w := &liveWatch{c: c, ss: ss, log: log, floor: silentAfter}
	w.timer = time.AfterFunc(time.Hour, w.run)
	w.timer.Stop()
	return w
}

// opening notes an exchange stream about to be opened, before anything of
// it is sent, and arms the watch unless it runs already. The fast path (a
// busy session, whose watch is armed) is two atomic operations. A failed
// open calls openFailed.
func (w *liveWatch) opening() {
	w.opened.Add(1)
	if w.armed.Load() || !w.armed.CompareAndSwap(false, true) {
		return
	}
	w.mu.Lock()
	w.received = w.c.Received() // what came before this exchange does not answer it
	w.seen = w.opened.Load()
	w.at = tunnel.MonoNow()
	w.first = true
	w.mu.Unlock()
	if w.probeEach {
		w.probe()
	}
	w.timer.Reset(w.period())
}

// openFailed takes back an opening whose stream was not opened: nothing
// was sent, so nothing is to be answered.
func (w *liveWatch) openFailed() { w.opened.Add(^uint64(0)) }

// Silent reports that an exchange sent on the session went unanswered for
// silentAfter and nothing came from the agent since.
func (w *liveWatch) Silent() bool { return w.silent.Load() }

// silentAfter is silentAfter, or silentRTTs round trips on a slow path.
func (w *liveWatch) silentAfter() time.Duration {
	return max(w.floor, silentRTTs*w.c.RTT())
}

// deadAfter is how long after an exchange went out with nothing from the
// agent the session is closed: longer than the agent's keepalive pings
// leave it silent, by silentAfter, and at least deadFactor silentAfters.
func (w *liveWatch) deadAfter() time.Duration {
	d := w.silentAfter()
	return max(deadFactor*d, w.c.PeerKeepalive()+d)
}

func (w *liveWatch) period() time.Duration { return w.silentAfter() / watchRuns }

// run is the watch's timer.
func (w *liveWatch) run() {
	select {
	case <-w.ss.Done():
		return
	default:
	}
	now := tunnel.MonoNow()
	received, opened := w.c.Received(), w.opened.Load()
	probe := false
	w.mu.Lock()
	later := opened != w.seen // exchanges went out in this window
	switch {
	case received != w.received:
		// The agent answered (or said anything at all): alive. The
		// exchanges of this window may have gone out after what came.
		w.waiting, w.pending = 0, later
		if w.silent.Swap(false) {
			w.log.Info("the silent agent answered again; picking its session again")
		}
	case w.waiting != 0:
	case later || w.first:
		// Exchanges went out after the last run (or the arming), and
		// nothing came since. A transport that answers no exchange by
		// itself is asked (the arming asked already).
		w.waiting, w.pending = w.at, false
		probe = w.probeEach && !w.first
	case w.pending:
		// Exchanges of the last window, after which nothing came: ask.
		w.waiting, w.pending, probe = now, false, true
	}
	// A run long after the last one, or after the arming, means the
	// gateway itself stalled (a loaded machine, a long pause): packets may
	// wait in its socket that its transport has not read yet, so this run
	// does not judge. The first run too: a stall right after an exchange
	// armed the watch would otherwise set the session aside, or close it.
	late := time.Duration(now-w.at) > 2*w.period()
	w.received, w.seen, w.at, w.first = received, opened, now, false
	waiting, pending := w.waiting, w.pending
	w.mu.Unlock()
	if probe {
		w.probe()
	}

	if waiting != 0 && late {
		w.timer.Reset(w.period())
		return
	}
	if waiting != 0 {
		silent, d := time.Duration(now-waiting), w.silentAfter()
		switch {
		case silent >= w.deadAfter():
			w.log.Warn("no packet from the agent since an exchange was sent to it; closing its session: "+
				"the agent's host or its network path is down (its other exchanges fail, and are sent again "+
				"over another agent where that is safe)", zap.Duration("silent_for", silent))
			w.ss.Close(fmt.Errorf("%w %s ago: its host or its network path is down", errAgentSilent, silent.Round(time.Millisecond)))
			return
		case silent >= d && !w.silent.Load():
			w.silent.Store(true)
			w.log.Info("an exchange sent to the agent has gone unanswered; its session is picked only when no other can be",
				zap.Duration("silent_for", silent), zap.Int("exchanges", w.ss.Exchanges()))
			w.ss.AgentSilent()
		}
		w.timer.Reset(w.period())
		return
	}
	if pending {
		w.timer.Reset(w.period())
		return
	}
	// Every exchange sent so far was answered: stop until the next one.
	w.armed.Store(false)
	if w.opened.Load() != opened && w.armed.CompareAndSwap(false, true) {
		// One was opened as the watch stopped, and found it still armed:
		// judge it from now on. What came since this run began may
		// predate it: pending, as in a run's window.
		w.mu.Lock()
		w.pending = true
		w.mu.Unlock()
		w.timer.Reset(w.period())
	}
}

// askAgent asks the other sessions of ss's agent (its agent id) for an
// answer: they share its host, and often its path, and the registry picks
// none of them while ss is silent, so no exchange would judge them. Their
// watches close them in turn if the agent is dead.
func (s *Server) askAgent(ss *session) {
	if ss.info.AgentID == "" {
		return
	}
	for _, o := range s.list() {
		if o != ss && o.live != nil && o.info.AgentID == ss.info.AgentID {
			o.live.ask()
		}
	}
}

// ask probes the agent and judges its answer as an exchange's (the
// session's agent went silent on another session).
func (w *liveWatch) ask() {
	if !w.armed.CompareAndSwap(false, true) {
		// Armed: the runs judge the exchanges under way; have them ask
		// if nothing comes.
		w.mu.Lock()
		if w.waiting == 0 {
			w.pending = true
		}
		w.mu.Unlock()
		return
	}
	w.mu.Lock()
	w.received = w.c.Received()
	w.seen = w.opened.Load()
	w.at = tunnel.MonoNow()
	w.first = true // the probe, sent now
	w.mu.Unlock()
	w.probe()
	w.timer.Reset(w.period())
}

// probe asks the agent for an answer: an empty control message, which
// agents skip (unknown messages are, by the protocol's rule) and which its
// transport acknowledges. Written aside, so that a control stream that
// does not take it (a drain message stuck on a full window) holds up no
// run; one at a time.
func (w *liveWatch) probe() {
	if p, ok := w.c.(ProbingPeer); ok {
		p.Probe()
		return
	}
	ss, ok := w.ss.(*session) // another transport's Peer probes (ProbingPeer)
	if !ok || !w.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer w.probing.Store(false)
		ss.sendProbe()
	}()
}

// sendProbe writes an empty control message, once the agent has its
// welcome (the first message it takes) and while the session is up.
func (ss *session) sendProbe() {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	select {
	case <-ss.done:
		return
	default:
	}
	if ss.greeted {
		_ = writeMsg(ss.ctrl, &tunnelv1.ControlResponse{}, maxControlSize)
	}
}

// stop ends the watch for good (the session ended).
func (w *liveWatch) stop() { w.timer.Stop() }

// Watch is the liveness watch (see above) of a session of another
// transport, whose agent's transport answers no exchange by itself: gRPC,
// where an exchange on a pooled stream draws nothing from the agent until
// its response. Each exchange that starts a wait is followed by the
// Peer's Probe (gRPC: an HTTP/2 PING, which a live agent's gRPC answers at
// once), and the watch judges the answer as above.
type Watch struct{ w *liveWatch }

// Watched is the session a liveness watch watches: a muxtunnel session,
// or another transport's (a Watch's).
type Watched interface {
	Done() <-chan struct{}
	// Close ends the session: the agent is silent for longer than a live
	// one ever is; reason says so.
	Close(reason error)
	// AgentSilent is called when the session turned Silent: the agent's
	// other sessions are asked (Watch.Ask), as muxtunnel's are.
	AgentSilent()
	// Exchanges is how many exchanges the session carries (for the log).
	Exchanges() int
}

// ProbingPeer is a Peer with a probe that draws an answer from a live
// peer. Probe must not block; one probe unanswered at a time is enough.
type ProbingPeer interface {
	Peer
	Probe()
}

// NewWatch returns the watch of s, whose connection is c; Stop ends it.
func NewWatch(s Watched, c ProbingPeer, log *zap.Logger) *Watch {
	w := newLiveWatch(s, c, log)
	w.probeEach = true
	return &Watch{w}
}

// Opening notes an exchange about to be sent, before anything of it is.
func (w *Watch) Opening() { w.w.opening() }

// Silent reports that an exchange sent on the session went unanswered for
// about a second and nothing came from the agent since.
func (w *Watch) Silent() bool { return w.w.Silent() }

// Ask probes the agent and judges its answer as an exchange's: another
// session of the same agent went silent.
func (w *Watch) Ask() { w.w.ask() }

// Stop ends the watch for good (the session ended).
func (w *Watch) Stop() { w.w.stop() }
