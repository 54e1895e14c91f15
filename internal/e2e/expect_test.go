package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// The Expect: 100-continue tests: a client that waits for 100 Continue
// before its body gets one only once the backend asked for the body, so
// a body the backend refuses never leaves the client.

const (
	refuseHost = "refuse.test" // answered by a refusingBackend
	acceptHost = "accept.test" // answered by acceptBackend
	// expectGuard bounds every wait of these tests; no assertion depends
	// on it.
	expectGuard = 20 * time.Second
)

// refusingBackend answers every request at once with its status and
// "Connection: close", without reading the body, as a backend refusing an
// upload does, then counts the bytes that still arrive on the connection
// until the agent closes it: the body bytes the agent sent anyway.
type refusingBackend struct {
	ln     net.Listener
	status int
	got    chan int64 // body bytes received per connection, once it closed
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // open connections; guarded by mu
	closed bool                  // guarded by mu
}

func startRefusingBackend(t *testing.T, status int) *refusingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &refusingBackend{ln: ln, status: status, got: make(chan int64, 16), conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *refusingBackend) URL() string { return "http://" + b.ln.Addr().String() }

func (b *refusingBackend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go b.serve(c)
	}
}

func (b *refusingBackend) serve(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	if _, err := http.ReadRequest(br); err != nil {
		return
	}
	extra := ""
	if b.status == http.StatusUnauthorized {
		extra = "WWW-Authenticate: Basic realm=\"uploads\"\r\n"
	}
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n",
		b.status, http.StatusText(b.status), extra)
	n, _ := io.Copy(io.Discard, br) // until the agent closes the connection
	b.got <- n
}

func (b *refusingBackend) close() {
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.ln.Close()
	b.wg.Wait()
}

// bodyBytes waits for the next connection to close and returns the body
// bytes the backend received on it.
func (b *refusingBackend) bodyBytes(t *testing.T) int64 {
	t.Helper()
	select {
	case n := <-b.got:
		return n
	case <-time.After(expectGuard):
		t.Fatal("the agent kept its connection to the refusing backend open")
		return 0
	}
}

// acceptBackend reads the whole body (so Go's server sends the agent its
// 100 Continue) and answers with its length and SHA-256.
var acceptBackend = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
})

// expectRig publishes a refusingBackend with status as refuseHost and an
// acceptBackend as acceptHost, through one agent; editGateway and
// editAgent (may be nil) edit the configs.
func expectRig(t *testing.T, status int, editGateway func(*gateway.Config), editAgent func(*agent.Config)) (*testrig.Rig, *refusingBackend) {
	t.Helper()
	refuse := startRefusingBackend(t, status)
	accept := startLoopbackBackend(t, acceptBackend)
	rig := testrig.New(t, testrig.Options{
		Routes: []gateway.Route{
			{App: "refuse", Hosts: []string{refuseHost}, Backend: testrig.MustURL(t, refuse.URL())},
			{App: "accept", Hosts: []string{acceptHost}, Backend: testrig.MustURL(t, accept.URL)},
		},
		Gateway: editGateway,
	})
	rig.StartAgent(editAgent)
	return rig, refuse
}

// expectClient waits as long as it takes for 100 Continue before it sends
// a body (a strict client), so a body it sends was asked for.
func expectClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableCompression: true, ExpectContinueTimeout: time.Hour}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// upload is one PUT with "Expect: 100-continue" and what the client saw.
type upload struct {
	status  int
	close   bool   // the gateway said Connection: close
	body    string // the response body
	got100  bool   // the client received 100 Continue
	bodyRds int32  // reads of the request body
}

// putExpecting PUTs size bytes to host through the rig with "Expect:
// 100-continue"; a negative size sends them chunked.
func putExpecting(t *testing.T, c *http.Client, rig *testrig.Rig, host string, size int64) upload {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), expectGuard)
	defer cancel()
	var got100 atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got100Continue: func() { got100.Store(true) }})
	body := &tunneltest.CountingReader{R: demoapp.NewBytesReader(max(size, -size))}
	req, err := http.NewRequestWithContext(ctx, "PUT", rig.URL+"/upload", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.ContentLength = size
	if size < 0 {
		req.ContentLength = -1
	}
	req.Header.Set("Expect", "100-continue")
	res, b := doAndRead(t, c, req)
	return upload{status: res.StatusCode, close: res.Close, body: string(b), got100: got100.Load(), bodyRds: body.Reads()}
}

// wantEchoed checks the acceptBackend's answer to size bytes.
func wantEchoed(t *testing.T, u upload, size int64) {
	t.Helper()
	size = max(size, -size)
	want := fmt.Sprintf("%d %s", size, hex.EncodeToString(bytesSHA256(size)))
	if u.status != http.StatusOK || u.body != want {
		t.Fatalf("got %d %q, want 200 %q", u.status, u.body, want)
	}
}

// TestExpectContinueRefused: a backend that refuses an upload without
// reading it (417, 401) answers a strict client before it sent a byte of
// its body: the client never gets 100 Continue, the backend receives no
// body byte, and the gateway closes the client's connection after the
// answer (it cannot tell a late body from the next request); the client's
// next request, on a new connection, works.
func TestExpectContinueRefused(t *testing.T) {
	for _, status := range []int{http.StatusExpectationFailed, http.StatusUnauthorized} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			rig, refuse := expectRig(t, status, nil, nil)
			c := expectClient(t)
			u := putExpecting(t, c, rig, refuseHost, 4*sizeMiB)
			if u.status != status || u.got100 || u.bodyRds != 0 {
				t.Fatalf("status %d, 100 Continue %v, body read %d times; want %d without 100 and unread",
					u.status, u.got100, u.bodyRds, status)
			}
			if !u.close {
				t.Fatal("the gateway kept the connection open after answering without the body")
			}
			if n := refuse.bodyBytes(t); n != 0 {
				t.Fatalf("the backend received %d body bytes", n)
			}
			wantEchoed(t, putExpecting(t, c, rig, acceptHost, 1000), 1000)
		})
	}
}

// TestExpectContinueEagerClient: a client that sends its body without
// waiting for 100 Continue gets the refusal and no 100 Continue, the body
// goes no further than the gateway, and the gateway closes the connection
// after the answer instead of reading the body as the next request.
func TestExpectContinueEagerClient(t *testing.T) {
	rig, refuse := expectRig(t, http.StatusExpectationFailed, nil, nil)
	const size = 64 << 10
	raw := "PUT /upload HTTP/1.1\r\nHost: " + refuseHost + "\r\nExpect: 100-continue\r\n" +
		"Content-Length: " + strconv.Itoa(size) + "\r\n\r\n" + strings.Repeat("b", size)
	r := rawRoundTrip(t, strings.TrimPrefix(rig.URL, "http://"), raw)
	if r.status != http.StatusExpectationFailed {
		t.Fatalf("first answer %d, want 417 (no 100 Continue)", r.status)
	}
	// rawRoundTrip fails if the gateway kept the connection open.
	if !r.close || r.more != "" {
		t.Fatalf("Connection: close %v, then %q; want close and nothing", r.close, r.more)
	}
	if n := refuse.bodyBytes(t); n != 0 {
		t.Fatalf("the backend received %d body bytes", n)
	}
}

// TestExpectContinueAccepted: a backend that reads the body makes the
// client get 100 Continue, and then the body arrives intact, whether it
// is small enough to travel with the head otherwise, large, or chunked.
func TestExpectContinueAccepted(t *testing.T) {
	rig, _ := expectRig(t, http.StatusExpectationFailed, nil, nil)
	c := expectClient(t)
	for _, size := range []int64{100, 3 * sizeMiB, -3 * sizeMiB} {
		u := putExpecting(t, c, rig, acceptHost, size)
		if !u.got100 {
			t.Fatalf("%d bytes: the client got no 100 Continue", size)
		}
		wantEchoed(t, u, size)
	}
}

// TestExpectContinueOlderPeers: with an agent or a gateway of protocol
// version 1, exchanges go as before version 2: the gateway reads the body
// at once, so the client gets 100 Continue at once even when the backend
// refuses (which the agent's client still keeps from the backend), and
// accepted bodies arrive intact. Nothing waits for a go-ahead.
func TestExpectContinueOlderPeers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gateway func(*gateway.Config)
		agent   func(*agent.Config)
	}{
		{"older agent", nil, func(c *agent.Config) { c.ProtocolVersion = 1 }},
		{"older gateway", func(c *gateway.Config) { c.ProtocolVersion = 1 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig, refuse := expectRig(t, http.StatusExpectationFailed, tc.gateway, tc.agent)
			c := expectClient(t)
			u := putExpecting(t, c, rig, refuseHost, 64<<10)
			if u.status != http.StatusExpectationFailed || !u.got100 {
				t.Fatalf("status %d, 100 Continue %v; want 417 after an immediate 100", u.status, u.got100)
			}
			if n := refuse.bodyBytes(t); n != 0 {
				t.Fatalf("the backend received %d body bytes", n)
			}
			u = putExpecting(t, c, rig, acceptHost, 3*sizeMiB)
			if !u.got100 {
				t.Fatal("the client got no 100 Continue")
			}
			wantEchoed(t, u, 3*sizeMiB)
		})
	}
}

// TestExpectContinueNotAsked: uploads without Expect are relayed as
// before, small and large, and the client gets no 100 Continue.
func TestExpectContinueNotAsked(t *testing.T) {
	rig, _ := expectRig(t, http.StatusExpectationFailed, nil, nil)
	c := expectClient(t)
	for _, size := range []int64{100, 3 * sizeMiB} {
		var got100 atomic.Bool
		ctx, cancel := context.WithTimeout(context.Background(), expectGuard)
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got100Continue: func() { got100.Store(true) }})
		req := appRequest(t, ctx, "PUT", rig.URL+"/upload", demoapp.NewBytesReader(size))
		req.Host = acceptHost
		req.ContentLength = size
		res, b := doAndRead(t, c, req)
		cancel()
		wantEchoed(t, upload{status: res.StatusCode, body: string(b)}, size)
		if got100.Load() {
			t.Fatalf("%d bytes: 100 Continue to a client that did not ask", size)
		}
	}
}
