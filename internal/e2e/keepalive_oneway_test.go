package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestKeepaliveOneWayLink: one transfer alone on a slow link, nothing else
// on the session, keepalive 5 s on both sides; the transfer completes and
// the session stays up. The side that sends reads almost nothing: the
// peer gives stream credit back only every 256 KiB (gRPC) or 512 KiB
// (yamux) it took, 16 s or more apart at 128 kbit/s, and the answer to the
// sender's own ping waits behind its queued data. Before lifelines (the
// receiver's sign of life, see grpctunnel's ping.go and yamuxtunnel's
// keepalive.go) the sender declared the path dead 10 s after its last
// read and ended the session with the transfer. The agent's socket must
// not end it either: gRPC set its TCP_USER_TIMEOUT to the keepalive
// timeout, 5 s, and the relay's full receive buffer holds data back for
// longer (a download ended after 6.5 s with "read: connection timed out").
//
// gRPC and yamux only (the relay's rate limit is TCP's). Each case moves
// 256 KiB at 16,000 B/s: 17 s.
func TestKeepaliveOneWayLink(t *testing.T) {
	testrig.SkipShort(t, "moves 256 KiB each way over 128 kbit/s links: 17 s a case")
	t.Parallel()
	for _, transport := range []string{"grpc", "yamux"} {
		if !slices.Contains(testrig.Transports, transport) {
			continue
		}
		for _, upload := range []bool{false, true} {
			name := transport + "/download"
			if upload {
				name = transport + "/upload"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				keepaliveOneWay(t, transport, upload, oneWayRate, oneWaySize)
			})
		}
	}
}

// oneWayRate and oneWaySize are TestKeepaliveOneWayLink's link and
// transfer: the receiver gives credit back only after the whole transfer
// (256 KiB on gRPC, 512 KiB on yamux), further than the 10 s a keepalive
// of 5 s allows without a read from its start.
const (
	oneWayRate = 16_000
	oneWaySize = 256 << 10
)

// keepaliveOneWay is one case of TestKeepaliveOneWayLink: a download
// (the agent sends) or an upload (the gateway sends) of size bytes at rate
// bytes per second.
func keepaliveOneWay(t *testing.T, transport string, upload bool, rate, size int) {
	big := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			io.WriteString(w, strconv.FormatInt(n, 10))
			return
		}
		w.Write(big)
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes: []gateway.Route{
			{App: "slow", Hosts: []string{"slow.test"}, Backend: testrig.MustURL(t, backend.URL)},
		},
		Gateway: func(c *gateway.Config) { c.Keepalive = shortKeepalive },
	})
	relay := testrig.StartImpairedTCP(t, rig.Tunnel)
	a := rig.StartAgent(func(c *agent.Config) {
		c.Gateway = relay.Addr()
		c.Keepalive = shortKeepalive
		c.Connections = 1
	})
	var before []string
	waitFor(t, "the agent's session", func() bool { before = a.A.Sessions(); return len(before) == 1 })
	relay.Set(testrig.Impairment{Rate: rate})

	what, want := "download", string(big)
	req, _ := http.NewRequest("GET", rig.URL+"/big", nil)
	if upload {
		what, want = "upload", strconv.Itoa(len(big))
		req, _ = http.NewRequest("POST", rig.URL+"/up", bytes.NewReader(big))
	}
	req.Host = "slow.test"
	code, body, err := func() (int, string, error) {
		res, err := rig.Client().Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, string(b), err
	}()
	after := a.A.Sessions()
	if err != nil || code != 200 || body != want {
		got := fmt.Sprintf("%d of %d bytes", len(body), len(big))
		if upload {
			got = fmt.Sprintf("%q", briefly(body))
		}
		t.Errorf("%s, keepalive %v, %d B/s: the %s of %d bytes got status %d, %s, %v (the agent's session %v, then %v): "+
			"did a keepalive end the session while the transfer was moving?", transport, shortKeepalive, rate,
			what, len(big), code, got, err, before, after)
	}
	if len(after) != 1 || after[0] != before[0] {
		t.Errorf("%s: the agent's session was %v and is %v after the %s: the slow link ended it", transport, before, after, what)
	}
}
