package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// pathSession is a tunnel.Session whose streams answer "/small" with "ok",
// "/ws…" with a 101 followed by data that never ends, and any other path
// with a body that never ends; finished receives the path of every stream
// the gateway finishes.
type pathSession struct {
	finished chan string
	done     chan struct{}
}

func (s *pathSession) OpenStream(context.Context) (tunnel.Stream, error) {
	return &pathStream{s: s, path: make(chan string, 1), stop: make(chan struct{})}, nil
}
func (s *pathSession) Info() tunnel.SessionInfo {
	return tunnel.SessionInfo{ID: "p", AgentName: "agent", Group: "g"}
}
func (s *pathSession) Draining() <-chan struct{} { return s.done }
func (s *pathSession) Done() <-chan struct{}     { return s.done }
func (s *pathSession) Close(error)               {}

type pathStream struct {
	s      *pathSession
	path   chan string // the request's, from Send to the first Recv
	asked  string      // set by the first Recv
	answer bool        // the response head went
	stop   chan struct{}
	once   sync.Once
}

func (st *pathStream) Send(f *tunnel.Frame) error {
	if f.Request != nil {
		select {
		case st.path <- f.Request.Path:
		default:
		}
	}
	return nil
}

func (st *pathStream) Recv() (*tunnel.Frame, error) {
	if !st.answer {
		select {
		case st.asked = <-st.path:
		case <-st.stop:
			return nil, io.ErrClosedPipe
		}
		st.answer = true
		if strings.HasPrefix(st.asked, "/ws") {
			// An upgrade: a backend that sends for ever.
			return &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: 101, Headers: []*tunnelv1.Header{
				{Name: "Upgrade", Values: []string{"raw"}}, {Name: "Connection", Values: []string{"Upgrade"}}}}}, nil
		}
		if st.asked == "/small" {
			return &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: 2}, Data: []byte("ok"), End: true}, nil
		}
		return &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: 1 << 40,
			Headers: []*tunnelv1.Header{{Name: "Content-Type", Values: []string{"application/octet-stream"}}}}}, nil
	}
	select {
	case <-st.stop:
		return nil, io.ErrClosedPipe
	default:
		return &tunnel.Frame{Data: endlessChunk}, nil
	}
}

func (st *pathStream) Finish(bool) {
	st.once.Do(func() {
		close(st.stop)
		st.s.finished <- st.asked
	})
}

// stallGateway serves app.test over a pathSession on a loopback HTTP/1.1
// and h2c listener, with a send timeout of a minute (longer than any test
// waits) and the given budget of stalled exchanges.
func stallGateway(t *testing.T, maxStalled int) (addr string, g *Gateway, s *pathSession) {
	t.Helper()
	s = &pathSession{finished: make(chan string, 64), done: make(chan struct{})}
	addr, g = serveAppGateway(t, Config{SendTimeout: time.Minute, MaxStalledExchanges: maxStalled}, s)
	return addr, g, s
}

// stalledDownload starts a download of path that the client never reads
// (a 4 KiB receive buffer fills at once).
func stalledDownload(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := smallReceiveBuffer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: app.test\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitStalled waits until the gateway counts n stalled exchanges.
func waitStalled(t *testing.T, g *Gateway, n int) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(sendGuardWait)
	for g.handler.stalls.stalled() != n {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the gateway counts %d stalled exchanges after %v, want %d", g.handler.stalls.stalled(), sendGuardWait, n)
		}
	}
}

// waitCut waits for the gateway to finish the stream of the exchange for
// path, and for no other.
func waitCut(t *testing.T, s *pathSession, path string) {
	t.Helper()
	select {
	case got := <-s.finished:
		if got != path {
			t.Fatalf("the gateway cut the exchange of %s, want the one stalled longest, %s", got, path)
		}
	case <-time.After(sendGuardWait):
		t.Fatalf("more exchanges are stalled than public.max_stalled_exchanges allows, and %s, stalled longest, still holds its tunnel stream after %v", path, sendGuardWait)
	}
}

// smallGet asks for /small on a fresh connection and checks the answer.
func smallGet(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(sendGuardWait))
	io.WriteString(c, "GET /small HTTP/1.1\r\nHost: app.test\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a normal request while clients stall: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("a normal request while clients stall: %d %q %v, want 200 \"ok\"", res.StatusCode, body, err)
	}
}

// TestStalledExchangesBeyondBudgetCut: with public.max_stalled_exchanges
// at 2, the downloads of four clients that stopped reading leave two: the
// ones stalled longest are cut (their connections closed, their tunnel
// streams finished) long before the send timeout, the others stay, and a
// normal request is answered. Before, each held its tunnel stream, up to
// a window of body and the agent's backend connection until the send
// timeout (5 minutes by default), however many there were: one HTTP/2
// client connection with 250 such streams pinned 386 MiB of gateway and
// agent (gRPC tunnel), and four such connections 1.3 GiB and rising.
func TestStalledExchangesBeyondBudgetCut(t *testing.T) {
	addr, g, s := stallGateway(t, 2)
	c0 := stalledDownload(t, addr, "/big/0")
	waitStalled(t, g, 1)
	stalledDownload(t, addr, "/big/1")
	waitStalled(t, g, 2)
	stalledDownload(t, addr, "/big/2")
	waitCut(t, s, "/big/0")
	stalledDownload(t, addr, "/big/3")
	waitCut(t, s, "/big/1")
	waitStalled(t, g, 2)
	smallGet(t, addr)
	select {
	case got := <-s.finished:
		if got != "/small" {
			t.Fatalf("the gateway cut the exchange of %s, which stalled after two others", got)
		}
	case <-time.After(sendGuardWait):
		t.Fatalf("the exchange of /small still holds its tunnel stream after %v", sendGuardWait)
	}

	// The client of a cut exchange finds its connection closed after
	// what was sent to it.
	c0.SetDeadline(time.Now().Add(sendGuardWait))
	if _, err := io.Copy(io.Discard, c0); err != nil && !isConnReset(err) {
		t.Fatalf("reading the cut download: %v, want its connection closed", err)
	}
}

func isConnReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// TestStallCountedAgainAfterReading: a client that reads a little and
// stops again is stalled again a second later, not after the send
// timeout, and one that reads is no longer counted.
func TestStallCountedAgainAfterReading(t *testing.T) {
	addr, g, _ := stallGateway(t, 10)
	c := stalledDownload(t, addr, "/big/0")
	waitStalled(t, g, 1)
	c.SetReadDeadline(time.Now().Add(sendGuardWait))
	if _, err := io.CopyN(io.Discard, c, 8<<20); err != nil {
		t.Fatalf("reading the download: %v", err)
	}
	waitStalled(t, g, 0) // its write returned
	waitStalled(t, g, 1) // and the next one blocked
}

// TestStalledHTTP2StreamsBeyondBudgetReset: over one HTTP/2 connection
// whose client grants no window, the streams beyond the budget are reset,
// the connection and the other streams stay.
func TestStalledHTTP2StreamsBeyondBudgetReset(t *testing.T) {
	const streams, budget = 5, 3
	addr, g, s := stallGateway(t, budget)
	paths := make([]string, streams)
	for i := range paths {
		paths[i] = fmt.Sprintf("/big/%d", i)
	}
	resets := stalledHTTP2Streams(t, addr, paths)
	for range streams - budget {
		select {
		case <-resets:
		case <-time.After(sendGuardWait):
			t.Fatalf("%d streams stalled over one connection with a budget of %d, and no stream was reset after %v", streams, budget, sendGuardWait)
		}
	}
	waitStalled(t, g, budget)
	select {
	case id := <-resets:
		t.Fatalf("stream %d was reset too: only %d stalled streams were over the budget", id, streams-budget)
	default:
	}
	for range streams - budget {
		<-s.finished
	}
	smallGet(t, addr)
}

// TestStallBudgetList: the list keeps stalled writes oldest first, even
// when one is found late, and gives up the oldest beyond max.
func TestStallBudgetList(t *testing.T) {
	b := newStallBudget(3, zap.NewNop())
	gs := make([]*sendGuard, 5)
	for i := range gs {
		gs[i] = new(sendGuard)
	}
	for i, start := range []int64{10, 30, 20} {
		if v, _, _ := b.add(gs[i], start); v != nil {
			t.Fatalf("add %d gave up a write with %d of 3 listed", i, i+1)
		}
	}
	b.remove(gs[1]) // its write returned
	b.remove(gs[1]) // a second time: nothing
	if n := b.stalled(); n != 2 {
		t.Fatalf("stalled = %d after a removal, want 2", n)
	}
	if v, _, _ := b.add(gs[3], 5); v != nil {
		t.Fatal("add gave up a write with 3 of 3 listed")
	}
	v, start, _ := b.add(gs[4], 40)
	if v != gs[3] || start != 5 {
		t.Fatalf("over the budget, add gave up the write that began at %d, want the oldest (5)", start)
	}
	var order []int64
	for at := b.head; at != nil; at = at.next {
		order = append(order, at.stallStart)
	}
	if fmt.Sprint(order) != "[10 20 40]" || b.tail != gs[4] || b.stalled() != 3 {
		t.Fatalf("listed %v (tail %d), want [10 20 40]", order, b.tail.stallStart)
	}
	if newStallBudget(-1, zap.NewNop()) != nil {
		t.Fatal("a negative max made a budget; it means no limit")
	}
	if b := newStallBudget(0, zap.NewNop()); b.max != DefaultMaxStalledExchanges {
		t.Fatalf("max 0 made a budget of %d, want the default %d", b.max, DefaultMaxStalledExchanges)
	}
}

// TestPublicHTTP2StreamLimit: the public listener lets an HTTP/2
// connection run at most 128 streams at once (nginx's default), not
// net/http's 250: each stream whose client stops reading holds about
// 1 MiB on the gateway and half as much on the agent, and one client
// connection of 250 such streams pinned 267 MiB and 119 MiB.
func TestPublicHTTP2StreamLimit(t *testing.T) {
	g, err := New(Config{TunnelTLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.public.Serve(ln) }()
	defer func() {
		g.public.Close()
		<-served
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(sendGuardWait))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatalf("reading the server's SETTINGS: %v", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("the server's first frame is %v, want SETTINGS", f.Header().Type)
	}
	if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); !ok || v > 128 {
		t.Fatalf("the public listener allows %d streams per HTTP/2 connection (announced: %v), want at most 128", v, ok)
	}
}
