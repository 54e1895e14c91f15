package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/tunnel"
)

// upgradeHeaders are the heads of requests that ask for an upgrade, which
// take the ReverseProxy path, and that pathSession answers with a 200 for
// any path but "/ws…": the backend does not switch protocols.
var upgradeHeaders = []string{
	"Connection: Upgrade\r\n",
	"Connection: Upgrade\r\nUpgrade: websocket\r\n",
}

// accessLog returns a logger for a gateway, its access lines, and a
// channel that receives one value per access line written (after it is
// in the observer).
func accessLog() (*zap.Logger, *observer.ObservedLogs, <-chan struct{}) {
	core, logs := observer.New(zapcore.InfoLevel)
	written := make(chan struct{}, 64)
	log := zap.New(zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
		if e.Message == "access" {
			select {
			case written <- struct{}{}:
			default:
			}
		}
		return nil
	}))
	return log, logs, written
}

// waitAccess waits for the access line of path and returns its fields.
func waitAccess(t *testing.T, logs *observer.ObservedLogs, written <-chan struct{}, path string) map[string]any {
	t.Helper()
	deadline := time.After(sendGuardWait)
	for {
		for _, e := range logs.FilterMessage("access").All() {
			if f := e.ContextMap(); f["path"] == path {
				return f
			}
		}
		select {
		case <-written:
		case <-deadline:
			t.Fatalf("no access line for %s after %v: %v", path, sendGuardWait, logs.All())
		}
	}
}

// upgradeRequest sends a GET of path with the upgrade headers hdr on a
// connection with a small receive buffer, which the test never reads.
func upgradeRequest(t *testing.T, addr, path, hdr string) net.Conn {
	t.Helper()
	c, err := smallReceiveBuffer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: app.test\r\n%s\r\n", path, hdr); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestUpgradeNotSwitchedCountsAsStalled: a download asked with
// "Connection: Upgrade" whose backend answers 200, not 101, and whose
// client never reads, counts against public.max_stalled_exchanges and is
// cut beyond it (the access log: 200, client-closed), as a download asked
// without the header is. Before, the ReverseProxy wrote its response
// straight to the client, with no sendGuard: a client that added the
// header to any GET was never counted nor cut, and held its tunnel stream,
// a window of body and the agent's backend connection for as long as it
// liked.
func TestUpgradeNotSwitchedCountsAsStalled(t *testing.T) {
	for _, hdr := range upgradeHeaders {
		t.Run(fmt.Sprintf("%q", hdr), func(t *testing.T) {
			log, logs, written := accessLog()
			s := &pathSession{finished: make(chan string, 64), done: make(chan struct{})}
			addr, g := serveAppGatewayLog(t, Config{SendTimeout: time.Minute, MaxStalledExchanges: 1}, s, log)
			c := upgradeRequest(t, addr, "/big/u", hdr)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			deadline := time.After(sendGuardWait)
			for g.handler.stalls.stalled() != 1 {
				select {
				case <-tick.C:
				case <-deadline:
					t.Fatalf("a download asked with %q, answered 200, whose client never reads is not counted as stalled "+
						"after %v (the gateway counts %d): its writes to the client are not guarded",
						hdr, sendGuardWait, g.handler.stalls.stalled())
				}
			}
			// The kernel may take more of /big/u's response although its
			// client reads nothing (seen under load, 1 run in 40: a write
			// that had blocked 1.5 s returned; another socket's bytes_acked
			// stayed at 4096, snd_wnd at 0). Its next write then blocks from
			// later than /big/1's, and the budget rightly cuts /big/1, stalled
			// longest by then: another download goes over the budget again.
			for i := 1; ; i++ {
				path := fmt.Sprintf("/big/%d", i)
				sent := tunnel.MonoNow()
				stalledDownload(t, addr, path)
				var got string
				select {
				case got = <-s.finished:
				case <-time.After(sendGuardWait):
					t.Fatalf("more exchanges are stalled than public.max_stalled_exchanges allows, and /big/u, stalled "+
						"longest, still holds its tunnel stream after %v", sendGuardWait)
				}
				if got == "/big/u" {
					break
				}
				if got != path || i == 3 || !stalledSince(g, c, sent) {
					t.Fatalf("the gateway cut the exchange of %s, want the one stalled longest, /big/u", got)
				}
			}
			f := waitAccess(t, logs, written, "/big/u")
			if f["status"] != int64(http.StatusOK) || f["error"] != CodeClientClosed {
				t.Errorf("access line of the cut download: status %v, error %v; want 200 and %s (the client's doing, "+
					"not the tunnel's)", f["status"], f["error"], CodeClientClosed)
			}
			c.SetDeadline(time.Now().Add(sendGuardWait))
			if _, err := io.Copy(io.Discard, c); err != nil && !isConnReset(err) {
				t.Fatalf("reading the cut download: %v, want its connection closed", err)
			}
		})
	}
}

// stalledSince reports whether the budget lists the exchange of client c
// for a write that began after since (tunnel.MonoNow): its earlier write
// returned, so it is not stalled longest any more.
func stalledSince(g *Gateway, c net.Conn, since int64) bool {
	b := g.handler.stalls
	b.mu.Lock()
	defer b.mu.Unlock()
	for at := b.head; at != nil; at = at.next {
		if at.remote == c.LocalAddr().String() {
			return at.stallStart > since
		}
	}
	return false
}

// TestUpgradeNotSwitchedSendTimeout: such a download is cut at the send
// timeout. Before, it was not (see TestUpgradeNotSwitchedCountsAsStalled).
func TestUpgradeNotSwitchedSendTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, s := endlessGateway(t, timeout, 0)
	upgradeRequest(t, addr, "/x", upgradeHeaders[1])
	select {
	case <-s.finished:
	case <-time.After(sendGuardWait):
		t.Fatalf("send timeout %v: a download asked with Connection: Upgrade, answered 200, whose client never reads "+
			"still holds its tunnel stream after %v: its writes to the client are not guarded", timeout, sendGuardWait)
	}
}

// TestUpgradeNotSwitchedAnswered: a client that reads gets the response of
// a backend that does not switch protocols whole, and the access log
// says 200 without an error, through the guard.
func TestUpgradeNotSwitchedAnswered(t *testing.T) {
	log, logs, written := accessLog()
	s := &pathSession{finished: make(chan string, 64), done: make(chan struct{})}
	addr, _ := serveAppGatewayLog(t, Config{SendTimeout: time.Minute}, s, log)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(sendGuardWait))
	fmt.Fprintf(c, "GET /small HTTP/1.1\r\nHost: app.test\r\n%s\r\n", upgradeHeaders[1])
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET /small with Connection: Upgrade: %d %q %v, want 200 \"ok\"", res.StatusCode, body, err)
	}
	f := waitAccess(t, logs, written, "/small")
	if f["status"] != int64(http.StatusOK) || f["error"] != nil || f["bytes_out"] != int64(2) {
		t.Errorf("access line: status %v, error %v, bytes_out %v; want 200, none, 2", f["status"], f["error"], f["bytes_out"])
	}
}
