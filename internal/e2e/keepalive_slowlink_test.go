package e2e

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestKeepaliveSaturatedLink: a session whose link is slow and full stays
// up, with its exchanges, whatever the keepalive; only a dead one ends.
// Downloads fill the agent's side of the link, so whatever the agent sends
// after them (a keepalive's answer, a stream's acknowledgement, a small
// response) waits seconds in the queues before the link, while small
// requests come every half second.
//
//   - 1 Mbit/s, three downloads of 512 KiB (13 s), keepalive 5 s on both
//     sides: yamux's own keepalive waited for the answer to its ping for
//     min(keepalive, 10s) (and any frame that long to be written), and
//     ended the session after 10 s with every exchange on it (a probe with
//     two 3 MiB downloads: 10 of 10 small requests failed, both downloads
//     were cut at 0.4 and 0.6 MiB; with the default 15 s after 25 s).
//   - 192 kbit/s, one download of 1 MiB (44 s), the default keepalive:
//     yamux ended the session when a stream the gateway opened was not
//     acknowledged within 30 s (StreamOpenTimeout), and the agent's
//     acknowledgement of the first small request's stream waited behind
//     the download for longer (a probe at 256 kbit/s: 32 of 32 small
//     requests failed, the download was cut at 896 KiB). The small
//     requests start once the download's head came, when its body fills
//     the queues; they also keep the agent reading (a side that only
//     sends reads the receiver's lifelines: TestKeepaliveOneWayLink).
//   - 192 kbit/s, one download of 1 MiB, keepalive 5 s, gRPC: the agent
//     declared the path dead 10 s after its last read (the gateway gives
//     stream credit back every 256 KiB, 11 s apart, and the answers to the
//     agent's pings waited behind the download) and ended the session
//     (the download was cut at 512 KiB, 30 of 50 small requests failed),
//     until the gateway sent lifelines (grpctunnel's ping.go). Then 51 of
//     88 small requests still got 503 overloaded: the replacement idle
//     streams the gateway waits for (stream_wait, 10 s) queued behind the
//     whole download in the agent's socket buffer (43 s), until the
//     agent's socket held at most 64 KiB unsent (grpctunnel's
//     sockopt_linux.go): none failed, the slowest took 17.5 s.
//   - The same with gRPC's write buffer at 256 KiB (session 26): 15 of
//     89 failed alone, 24 of 88 in a loaded CI run; what the agent sends
//     next waits behind two such buffers (grpctunnel's writeBuffer, back
//     at 32 KiB). The tolerance below lets 15 of 89 pass, so
//     TestBulkWritesBounded (grpctunnel) holds the buffer's size itself.
//
// gRPC and yamux only (the relay's rate limit is TCP's).
func TestKeepaliveSaturatedLink(t *testing.T) {
	testrig.SkipShort(t, "moves downloads over 1 Mbit/s and 192 kbit/s links: 13 and 44 s")
	t.Parallel()
	for _, tc := range []saturatedLink{
		{"grpc", "grpc", 125_000, 3, 512 << 10, shortKeepalive, 0},
		{"yamux", "yamux", 125_000, 3, 512 << 10, shortKeepalive, 0},
		{"yamux/192kbit", "yamux", 24_000, 1, 1 << 20, 0, 0},
		// Small requests here wait 11-18 s in the link's own queue,
		// against the gateway's stream_wait of 10 s for a fresh stream:
		// on a loaded machine a few get 503 (4 of 105 in one make test,
		// 6 of 88 in another, 10 of 89 in a third; it passes alone); the
		// regression was over half (51 of 88), so a quarter still tells.
		{"grpc/192kbit", "grpc", 24_000, 1, 1 << 20, shortKeepalive, 25},
	} {
		parallelOn(t, tc.transport, tc.name, func(t *testing.T) { keepaliveSaturatedLink(t, tc) })
	}
}

// saturatedLink is one case of TestKeepaliveSaturatedLink.
type saturatedLink struct {
	name, transport string
	rate            int           // bytes per second, each way
	downloads, size int           // at once, each of size bytes (within a stream's window: all queue at once)
	keepalive       time.Duration // both sides; 0: the default
	// tolerated is how many small requests in a hundred may fail (0:
	// none), where the link's queue alone takes about as long as the
	// gateway waits.
	tolerated int
}

func keepaliveSaturatedLink(t *testing.T, tc saturatedLink) {
	big := bytes.Repeat([]byte("0123456789abcdef"), tc.size/16)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		io.WriteString(w, "small")
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{
		Transport: tc.transport,
		Routes: []gateway.Route{
			{App: "slow", Hosts: []string{"slow.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
		Gateway: func(c *gateway.Config) { c.Keepalive = tc.keepalive },
	})
	relay := testrig.StartImpairedTCP(t, rig.Tunnel)
	a := rig.StartAgent(func(c *agent.Config) {
		c.Gateway = relay.Addr()
		c.Keepalive = tc.keepalive
	})
	var before []string
	waitFor(t, "the agent's session", func() bool { before = a.A.Sessions(); return len(before) == 1 })
	relay.Set(testrig.Impairment{Rate: tc.rate})
	c := rig.Client()

	type result struct {
		code int
		body string
		err  error
	}
	downloaded := make(chan result, tc.downloads)
	begun := make(chan struct{}, tc.downloads) // a download's head came: its body fills the queues
	for range tc.downloads {
		go func() {
			req, _ := http.NewRequest("GET", rig.URL+"/big", nil)
			req.Host = "slow.test"
			res, err := c.Do(req)
			begun <- struct{}{}
			if err != nil {
				downloaded <- result{err: err}
				return
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			downloaded <- result{res.StatusCode, string(b), err}
		}()
	}
	for range tc.downloads {
		<-begun
	}
	// A small request every half second until the downloads are over, as
	// users of the app's other pages would send them.
	var (
		mu    sync.Mutex
		small []result
		wg    sync.WaitGroup
	)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var dls []result
	for len(dls) < tc.downloads {
		select {
		case dl := <-downloaded:
			dls = append(dls, dl)
			continue
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := get(t, c, rig.URL, "slow.test", "/small")
			mu.Lock()
			small = append(small, result{code, body, err})
			mu.Unlock()
		}()
	}
	wg.Wait()
	after := a.A.Sessions()
	for i, dl := range dls {
		if dl.err != nil || dl.code != 200 || dl.body != string(big) {
			t.Errorf("%s, keepalive %v (0s: the default), %d B/s: download %d of %d got status %d, %d of %d bytes, %v "+
				"(the agent's session %v, then %v): did the session end while it was moving?", tc.transport, tc.keepalive,
				tc.rate, i+1, tc.downloads, dl.code, len(dl.body), len(big), dl.err, before, after)
		}
	}
	failed, first := 0, -1
	for i, r := range small {
		if r.err != nil || r.code != 200 || r.body != "small" {
			failed++
			if first < 0 {
				first = i
			}
		}
	}
	if failed*100 > tc.tolerated*len(small) {
		r := small[first]
		t.Errorf("%s: %d of %d small requests during the downloads failed (at most %d%% may); the first, request %d: status %d %q, %v",
			tc.transport, failed, len(small), tc.tolerated, first+1, r.code, briefly(r.body), r.err)
	}
	if len(after) != 1 || after[0] != before[0] {
		t.Errorf("%s: the agent's session was %v and is %v after the downloads: the slow link ended it", tc.transport, before, after)
	}
}

// briefly is an answer's body for a failure message: the gateway's error
// code when it is one of its error pages, else its start.
func briefly(body string) string {
	if _, rest, ok := strings.Cut(body, "Sallyport error <code>"); ok {
		if code, _, ok := strings.Cut(rest, "</code>"); ok {
			return "Sallyport error " + code
		}
	}
	if len(body) > 80 {
		body = body[:80] + "…"
	}
	return body
}
