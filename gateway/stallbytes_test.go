package gateway

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"
)

// heldCutPrefix starts the log line of an exchange cut for the bytes held
// for slow clients (see cutMessage).
const heldCutPrefix = "client reads too slowly: the response bytes held"

// TestStallBudgetHeldBytes: exchanges whose writes blocked for behindAfter
// are charged what they may hold (a window, or their response's length),
// not counted as stalled; past max windows, the budget cuts at once the
// heavy clients' first, then of the stalled the largest, the oldest among
// equals, and goes on until the charges are within the bound again or
// nothing more may be cut: an exchange only behind, of a client within its
// share (a download bound by its client's link), is never cut for bytes.
func TestStallBudgetHeldBytes(t *testing.T) {
	b := newStallBudget(4, zap.NewNop())
	b.perClient = 2
	if b.maxHeld != 4*heldPerExchange {
		t.Fatalf("a budget of 4 stalled exchanges bounds held bytes at %d, want 4 windows (%d)", b.maxHeld, 4*heldPerExchange)
	}
	start := int64(0)
	listed := func(remote string, length int64, stalled bool) (*sendGuard, stallCut) {
		start++
		g := &sendGuard{remote: remote}
		g.setBodyLength(length)
		g.since.Store(start) // its write under way since start
		return g, b.list(g, start, stalled)
	}
	behind := func(remote string, length int64) (*sendGuard, stallCut) { return listed(remote, length, false) }
	small, c := behind("a", 20<<10) // 20 KiB: charged 32 KiB
	if c.g != nil || small.held() != 2*heldUnit {
		t.Fatalf("a 20 KiB response is charged %d (cut: %v), want %d", small.held(), c.g != nil, 2*heldUnit)
	}
	var big []*sendGuard
	for i := range 3 {
		g, c := listed(fmt.Sprint("b", i), -1, true)
		if c.g != nil {
			t.Fatalf("the budget cut with %d of %d bytes held", b.held, b.maxHeld)
		}
		big = append(big, g)
	}
	// The fourth window passes the bound: the oldest stalled of the
	// largest goes, not the older small response, nor the window that
	// passed the bound, which is only behind.
	last, c := behind("c", 1<<30)
	if c.g != big[0] || !c.bytes || c.heavy {
		t.Fatalf("past the bound the budget gave up the write that began at %d (for bytes: %v, heavy: %v), "+
			"want the oldest stalled that holds a window (began at %d), for bytes", c.start, c.bytes, c.heavy, big[0].stallStart)
	}
	if b.stalled() != 2 || b.held != 3*heldPerExchange+2*heldUnit {
		t.Fatalf("after the cut the budget counts %d stalled and %d bytes held, want 2 and %d",
			b.stalled(), b.held, 3*heldPerExchange+2*heldUnit)
	}

	// A client over its share (2) goes first, however little it holds;
	// then the budget gives up more until the charges fit again.
	h1, _ := behind("h", 10)
	h2, _ := behind("h", 10)
	behind("h", 10)
	if c := b.next(); c.g != nil {
		t.Fatalf("next gave up the write that began at %d with %d of %d bytes held", c.start, b.held, b.maxHeld)
	}
	_, c = behind("d", -1)
	if c.g != h1 || !c.heavy || !c.bytes {
		t.Fatalf("past the bound with client h over its share, the budget gave up the write that began at %d "+
			"(heavy: %v), want h's oldest (began at %d)", c.start, c.heavy, h1.stallStart)
	}
	c = b.next()
	if c.g != big[1] || c.heavy {
		t.Fatalf("still past the bound (%d of %d bytes), next gave up the write that began at %d (heavy: %v), "+
			"want the oldest stalled window (began at %d)", b.held, b.maxHeld, c.start, c.heavy, big[1].stallStart)
	}
	if c := b.next(); c.g != nil {
		t.Fatalf("within the bound (%d of %d bytes), next gave up the write that began at %d", b.held, b.maxHeld, c.start)
	}

	// Blocked for stallAfter, a listed write counts as stalled, once.
	if c := b.promote(last, last.stallStart); c.g != nil || b.stalled() != 2 {
		t.Fatalf("promoted, the budget counts %d stalled (cut: %v), want 2", b.stalled(), c.g != nil)
	}
	b.promote(last, last.stallStart)
	b.promote(big[0], big[0].stallStart) // cut before: not listed
	if b.stalled() != 2 {
		t.Fatalf("promoted again, and an unlisted write promoted: the budget counts %d stalled, want 2", b.stalled())
	}

	for at := b.head; at != nil; {
		next := at.next
		b.remove(at)
		at = next
	}
	b.remove(h2) // unlisted already: nothing
	if b.stalled() != 0 || b.held != 0 || b.head != nil || len(b.clients) != 0 || b.heavy != 0 {
		t.Fatalf("with every write unlisted the budget still counts %d stalled, %d bytes held, %d clients, %d over their share",
			b.stalled(), b.held, len(b.clients), b.heavy)
	}
}

// TestStallBudgetSparesDownloadsBehind: windows whose writes are only
// behind (blocked for behindAfter, not stalled), of clients within their
// share, pass the bound on held bytes without being cut: a download bound
// by its client's link blocks its writes for hundreds of milliseconds even
// at several MiB/s (stallbytes.go), and cutting them had two of four such
// downloads at 4 and 8 MiB/s cut with a budget of 2. Once one stalls, it
// is cut, as the stalled are.
func TestStallBudgetSparesDownloadsBehind(t *testing.T) {
	b := newStallBudget(2, zap.NewNop())
	var fast []*sendGuard
	for i := range 4 {
		g := &sendGuard{remote: fmt.Sprint("f", i)}
		g.setBodyLength(-1)
		g.since.Store(int64(i + 1))
		if c := b.list(g, int64(i+1), false); c.g != nil {
			t.Fatalf("with %d of %d bytes held, listing download %d, only behind, cut the write that began at %d; "+
				"want nothing cut: only stalled exchanges and those of clients over their share are cut for bytes",
				b.held, b.maxHeld, i, c.start)
		}
		fast = append(fast, g)
	}
	if b.held != 4*heldPerExchange || b.stalled() != 0 {
		t.Fatalf("4 downloads behind: %d bytes held and %d stalled, want %d and 0", b.held, b.stalled(), 4*heldPerExchange)
	}
	c := b.promote(fast[2], fast[2].stallStart)
	if c.g != fast[2] || !c.bytes || c.heavy {
		t.Fatalf("a download stalled past the bound: the budget gave up the write that began at %d (for bytes: %v, heavy: %v), "+
			"want the stalled one (began at %d), for bytes", c.start, c.bytes, c.heavy, fast[2].stallStart)
	}
	if c := b.next(); c.g != nil {
		t.Fatalf("no stalled exchange left, next gave up the write that began at %d", c.start)
	}
}

// waitHeldCuts waits for n log lines of exchanges cut by the stall budget
// and fails unless each says that it was cut for the bytes held.
func waitHeldCuts(t *testing.T, logs *observer.ObservedLogs, n int) {
	t.Helper()
	deadline := time.After(sendGuardWait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var cuts []string
		for _, e := range logs.All() {
			if strings.HasPrefix(e.Message, "client ") && strings.Contains(e.Message, "; cutting ") {
				cuts = append(cuts, e.Message)
			}
		}
		for _, m := range cuts {
			if !strings.HasPrefix(m, heldCutPrefix) {
				t.Fatalf("the stall budget cut an exchange for another reason than the bytes held for slow clients: %q; "+
					"want it cut once its write had blocked for %v and the bytes held passed the bound", m, behindAfter)
			}
		}
		if len(cuts) >= n {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the stall budget cut %d exchanges for the bytes held after %v, want %d", len(cuts), sendGuardWait, n)
		}
	}
}

// TestNeverReadStreamsCutForHeldBytes: with public.max_stalled_exchanges
// at 4 (4 MiB held), an HTTP/2 client that opens 20 streams and reads none
// has 16 of them reset for the bytes they hold, once their writes have
// blocked for behindAfter (100 ms), not once they count as stalled (a
// second): before, each buffered up to its tunnel window meanwhile, so 8
// connections of 128 such streams took a gateway to 248 MiB of RSS within
// 1.5 s, with a budget of 100. A download at full speed on another
// connection goes on.
func TestNeverReadStreamsCutForHeldBytes(t *testing.T) {
	const streams, budget = 20, 4
	log, logs, _ := accessLog()
	s := &pathSession{finished: make(chan string, 64), done: make(chan struct{})}
	addr, _ := serveAppGatewayLog(t, Config{SendTimeout: time.Minute, MaxStalledExchanges: budget}, s, log)
	paths := make([]string, streams)
	for i := range paths {
		paths[i] = fmt.Sprintf("/h2/%d", i)
	}
	resets := stalledHTTP2Streams(t, addr, paths)
	for i := range streams - budget {
		select {
		case <-resets:
		case <-time.After(sendGuardWait):
			t.Fatalf("%d never-read streams with room for %d: %d were reset after %v, want %d", streams, budget, i, sendGuardWait, streams-budget)
		}
	}
	waitHeldCuts(t, logs, streams-budget)
	smallGet(t, addr)
	select {
	case id := <-resets:
		t.Fatalf("stream %d was reset too: %d streams within the bound are left", id, budget)
	default:
	}

	// A client that reads at full speed is not the one cut.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(sendGuardWait))
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
	if _, err := io.CopyN(io.Discard, c, 64<<20); err != nil {
		t.Fatalf("a download read at full speed while never-read streams fill the bound: %v", err)
	}
}

// TestSlowHTTP2ReadersCutForHeldBytes: HTTP/2 streams whose client reads
// about 64 KiB a second hold a full tunnel window each, while their 32 KiB
// writes return within the second, so that they were never counted as
// stalled (200 such streams over 2 connections held about 220 MiB). A
// client that holds 24 of them on one connection, over its share of 16,
// with room for 2 windows, has at least 8 cut for the bytes they hold (its
// streams within its share are cut too once they stall).
func TestSlowHTTP2ReadersCutForHeldBytes(t *testing.T) {
	const streams, budget = 24, 2
	log, logs, _ := accessLog()
	s := &pathSession{finished: make(chan string, 64), done: make(chan struct{})}
	addr, _ := serveAppGatewayLog(t, Config{SendTimeout: time.Minute, MaxStalledExchanges: budget}, s, log)
	paths := make([]string, streams)
	for i := range paths {
		paths[i] = fmt.Sprintf("/slow/%d", i)
	}
	resets := slowHTTP2Streams(t, addr, paths, 64<<10)
	for i := range streams - stallsPerClient {
		select {
		case <-resets:
		case <-time.After(sendGuardWait):
			t.Fatalf("%d HTTP/2 streams on one connection read at 64 KiB/s with room for %d windows: %d were reset after %v, want %d",
				streams, budget, i, sendGuardWait, streams-stallsPerClient)
		}
	}
	waitHeldCuts(t, logs, streams-stallsPerClient)
}

// slowHTTP2Streams opens one h2c connection to addr that asks for each of
// paths and reads each stream at rate bytes a second: it grants a tenth of
// rate of window per stream every 100 ms. It returns the channel of the
// streams the gateway resets.
func slowHTTP2Streams(t *testing.T, addr string, paths []string, rate uint32) <-chan uint32 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fr := askHTTP2Streams(c, paths, rate/10, 1<<30)
	// The reader only reads; the writer goroutine alone writes (the
	// window updates and the SETTINGS acks it is asked for).
	acks := make(chan struct{}, 4)
	done := make(chan struct{})
	readerDone, writerDone := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		close(done)
		c.Close()
		<-readerDone
		<-writerDone
	})
	go func() {
		defer close(writerDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-acks:
				if fr.WriteSettingsAck() != nil {
					return
				}
			case <-tick.C:
				for i := range paths {
					if fr.WriteWindowUpdate(uint32(2*i+1), rate/10) != nil {
						return
					}
				}
				if fr.WriteWindowUpdate(0, uint32(len(paths))*rate/10) != nil {
					return
				}
			}
		}
	}()
	resets := make(chan uint32, len(paths))
	rf := http2.NewFramer(nil, c)
	go func() {
		defer close(readerDone)
		for {
			f, err := rf.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					select {
					case acks <- struct{}{}:
					case <-done:
						return
					}
				}
			case *http2.RSTStreamFrame:
				resets <- f.StreamID
			}
		}
	}()
	return resets
}
