package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestStallBudgetHeavyClientFirst: beyond the budget, the exchange cut is
// the one stalled longest of the clients that hold more than perClient,
// not the one stalled longest of all; with no such client it is the one
// stalled longest of all; and the per-client counts go when their
// exchanges do.
func TestStallBudgetHeavyClientFirst(t *testing.T) {
	b := newStallBudget(3, zap.NewNop())
	b.perClient = 2
	guard := func(remote string) *sendGuard { return &sendGuard{remote: remote} }
	a1, b1, b2, b3, a2 := guard("a"), guard("b"), guard("b"), guard("b"), guard("a")
	for i, g := range []*sendGuard{a1, b1, b2} {
		if v, _, _ := b.add(g, int64(i+1)); v != nil {
			t.Fatalf("add %d gave up a write with %d of 3 listed", i, i+1)
		}
	}
	// b now holds 3, one more than its share: its oldest goes, not a's
	// older one.
	if v, start, heavy := b.add(b3, 4); v != b1 || start != 2 || !heavy {
		t.Fatalf("over the budget with client b holding 3 (its share: 2), add gave up the write that began at %d "+
			"(of a client over its share: %v), want b's oldest, which began at 2", start, heavy)
	}
	// Each client holds 2: the oldest of all goes.
	if v, start, heavy := b.add(a2, 5); v != a1 || start != 1 || heavy {
		t.Fatalf("over the budget with no client over its share, add gave up the write that began at %d "+
			"(of a client over its share: %v), want the oldest of all, which began at 1", start, heavy)
	}
	for _, g := range []*sendGuard{b2, b3, a2, a1, b1} {
		b.remove(g)
	}
	if b.stalled() != 0 || len(b.clients) != 0 || b.heavy != 0 {
		t.Fatalf("with every write unlisted the budget still counts %d stalled, %d clients, %d over their share; want none",
			b.stalled(), len(b.clients), b.heavy)
	}
}

// stalledHTTP2Streams opens one h2c connection to addr that asks for each
// of paths and grants no window: every stream stalls. It returns the
// channel of the streams the gateway resets.
func stalledHTTP2Streams(t *testing.T, addr string, paths []string) <-chan uint32 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(3 * sendGuardWait))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for i, path := range paths {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "app.test"}, {":path", path}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
	}
	resets := make(chan uint32, len(paths))
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.RSTStreamFrame:
				resets <- f.StreamID
			}
		}
	}()
	return resets
}

// TestStalledStreamsOfOneConnectionCutFirst: when the budget is full, the
// exchange cut is one of the HTTP/2 connection that holds more than its
// share of stalled streams (16), not the download of another client that
// stalled before it. Before, the budget cut the one stalled longest, so a
// client that opened many streams and read none had the downloads of
// users on slow links cut for its own (a probe: budget 300, 200 users'
// stalled downloads, then 4 connections of 128 streams that never read:
// all 200 users were cut, and 212 of the attacker's streams).
func TestStalledStreamsOfOneConnectionCutFirst(t *testing.T) {
	const share = stallsPerClient
	budget := share + 2
	addr, g, s := stallGateway(t, budget)
	stalledDownload(t, addr, "/big/0")
	stalledDownload(t, addr, "/big/1")
	waitStalled(t, g, 2)
	paths := make([]string, share+1)
	for i := range paths {
		paths[i] = fmt.Sprintf("/h2/%d", i)
	}
	resets := stalledHTTP2Streams(t, addr, paths)
	select {
	case got := <-s.finished:
		if !strings.HasPrefix(got, "/h2/") {
			t.Fatalf("with %d stalled exchanges allowed, one HTTP/2 connection holding %d stalled streams and two other "+
				"clients one stalled download each, the gateway cut %s, another client's download; want one of that connection's streams",
				budget, share+1, got)
		}
	case <-time.After(sendGuardWait):
		t.Fatalf("%d exchanges are stalled with %d allowed, and none was cut after %v", budget+1, budget, sendGuardWait)
	}
	select {
	case <-resets: // the connection's stream is reset; the connection stays
	case <-time.After(sendGuardWait):
		t.Fatalf("the cut stream was not reset after %v", sendGuardWait)
	}
	waitStalled(t, g, budget)
	select {
	case got := <-s.finished:
		t.Fatalf("the gateway cut %s too: only one exchange was over the budget", got)
	default:
	}
}

// TestStalledWebSocketCounted: a WebSocket whose client stopped reading
// while the backend sends counts against the budget of stalled exchanges,
// and is cut, its connection closed, when it is the one stalled longest
// beyond the budget. Before, upgraded connections did not count, and held
// their tunnel stream, the data buffered behind it and the agent's backend
// connection until the send timeout (5 minutes by default), however many:
// 100 such WebSockets held 114 MiB of the gateway's RSS and 56 MiB of the
// agent's (a probe, gRPC).
func TestStalledWebSocketCounted(t *testing.T) {
	addr, g, s := stallGateway(t, 1)
	ws, err := smallReceiveBuffer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(3 * sendGuardWait))
	io.WriteString(ws, "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReaderSize(ws, 128), nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("the upgrade's answer: %v %v, want 101", res, err)
	}
	// And never read again.
	waitStalled(t, g, 1)
	stalledDownload(t, addr, "/big/0")
	waitCut(t, s, "/ws")
	waitStalled(t, g, 1)
	if _, err := io.Copy(io.Discard, ws); err != nil && !isConnReset(err) {
		t.Fatalf("reading the cut WebSocket: %v, want its connection closed", err)
	}
}
