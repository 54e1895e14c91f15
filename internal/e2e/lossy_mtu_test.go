package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// lossyQUICRig starts a rig over QUIC, whatever the pass's transport, with
// one app, "lossy" on lossy.test, and an impairment relay (seeded with
// seed) in front of its tunnel port for the agent to dial. The passes of
// make test over one transport leave these TestQUIC tests out (-skip):
// the first pass ran them.
func lossyQUICRig(t *testing.T, seed uint64) (*testrig.Rig, *testrig.ImpairedUDP) {
	t.Helper()
	rig := testrig.New(t, testrig.Options{
		Transport: "quic",
		Routes: []gateway.Route{{App: "lossy", Hosts: []string{"lossy.test"},
			Backend: testrig.MustURL(t, startLossyBackend(t))}},
	})
	return rig, testrig.StartImpairedUDP(t, rig.Tunnel, seed)
}

// lossyBody is n deterministic bytes that do not repeat every few bytes,
// so a lost, doubled or misplaced chunk shows.
func lossyBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

// startLossyBackend serves /dl?n=N (lossyBody(N)), /up (the length and
// SHA-256 of the body it read) and anything else "ok".
func startLossyBackend(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dl":
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Write(lossyBody(n))
		case "/up":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// wantExactTransfers downloads and uploads n bytes through rig's app
// "lossy.test" and fails unless both arrive byte for byte.
func wantExactTransfers(t *testing.T, rig *testrig.Rig, n int) {
	t.Helper()
	if err := exactTransfers(context.Background(), rig.Client(), rig, n); err != nil {
		t.Fatal(err)
	}
}

// exactTransfers downloads and uploads n bytes through rig's app
// "lossy.test" and says what went wrong unless both arrived byte for byte.
func exactTransfers(ctx context.Context, c *http.Client, rig *testrig.Rig, n int) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", rig.URL+"/dl?n="+strconv.Itoa(n), nil)
	req.Host = "lossy.test"
	res, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("download of %d bytes: %w", n, err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 || !bytes.Equal(got, lossyBody(n)) {
		return fmt.Errorf("download of %d bytes: status %d (%s), %d bytes read, equal %v, err %v",
			n, res.StatusCode, res.Header.Get("X-Sallyport-Error"), len(got), bytes.Equal(got, lossyBody(n)), err)
	}
	body := lossyBody(n)
	sum := sha256.Sum256(body)
	req, _ = http.NewRequestWithContext(ctx, "POST", rig.URL+"/up", bytes.NewReader(body))
	req.Host = "lossy.test"
	res, err = c.Do(req)
	if err != nil {
		return fmt.Errorf("upload of %d bytes: %w", n, err)
	}
	echo, err := io.ReadAll(res.Body)
	res.Body.Close()
	if want := fmt.Sprintf("%d %s", n, hex.EncodeToString(sum[:])); err != nil || res.StatusCode != 200 || string(echo) != want {
		return fmt.Errorf("upload of %d bytes: status %d (%s), backend read %q, want %q, err %v",
			n, res.StatusCode, res.Header.Get("X-Sallyport-Error"), echo, want, err)
	}
	return nil
}

// TestQUICPathMTU1280: on a path whose MTU is 1280 bytes (IPv6's minimum,
// common on VPNs and tunnels), which carries at most 1232 bytes of UDP
// payload over IPv6 and 1252 over IPv4, a QUIC session comes up and
// carries bodies larger than a datagram both ways. quic-go's first packets
// were 1280 bytes of payload: every handshake datagram was lost and the
// session never came up.
func TestQUICPathMTU1280(t *testing.T) {
	for _, max := range []int{1252, 1232} {
		t.Run(strconv.Itoa(max), func(t *testing.T) {
			rig, path := lossyQUICRig(t, 1)
			path.Set(testrig.Impairment{MaxDatagram: max})
			rig.StartAgent(func(c *agent.Config) { c.Gateway = path.Addr() }) // fails unless the session comes up
			wantExactTransfers(t, rig, 256<<10)
			if st := path.Stats(); st.Forwarded == 0 {
				t.Fatalf("nothing went through the relay: %+v", st)
			}
		})
	}
}

// TestQUICPathMTUShrinks: when the path of a running QUIC session starts
// to drop datagrams above 1252 bytes (a roaming agent moves from Wi-Fi to
// LTE, a VPN comes up), large bodies still cross both ways. With path MTU
// discovery, quic-go grew its packets to 1452 bytes and never lowered
// them again: the session stayed up (keepalives and small exchanges are
// small) and every large body stalled for ever. The 20 s bound stands for
// that for ever.
func TestQUICPathMTUShrinks(t *testing.T) {
	rig, path := lossyQUICRig(t, 1)
	rig.StartAgent(func(c *agent.Config) { c.Gateway = path.Addr() })
	// Full-size transfers, until path MTU discovery (if any) has grown
	// the packets past what the shrunk path will carry.
	for range 20 {
		wantExactTransfers(t, rig, 256<<10)
		if path.Stats().Largest > 1252 {
			break
		}
	}
	t.Logf("largest datagram before the path shrank: %d bytes", path.Stats().Largest)
	path.Set(testrig.Impairment{MaxDatagram: 1252})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exactTransfers(ctx, rig.Client(), rig, 256<<10); err != nil {
		t.Fatalf("after the path MTU fell to 1280: %v (%+v): the session sends datagrams larger than the path carries", err, path.Stats())
	}
}
