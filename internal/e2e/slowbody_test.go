package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// Slow small request bodies. A body of at most tunnel.CoalesceLimit goes to
// the agent with its head in one frame, so it is read whole first. It used
// to be read after the exchange had taken a tunnel stream and before the
// app's timeout started, with no bound: a client that sent the head of a
// small POST and then a few bytes held a stream for as long as it kept its
// connection, and a few hundred such clients took every stream of a
// session, so that everyone else got 503 overloaded. The gateway now reads
// such a body before it takes a stream, and a body that does not move for
// the app's timeout ends with 408 bad-request, as nginx's
// client_body_timeout does.

// slowBodyStreams is the rig's cap on streams per session: the slow
// clients of the test are twice as many.
const slowBodyStreams = 4

func TestSlowSmallBodies(t *testing.T) {
	// The cases run in parallel (each has its own rig): each waits on the
	// app's timeout or the steady upload's pace, not on the CPU.
	for _, tr := range testrig.Transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			slowSmallBodies(t, tr, "", nil)
		})
		// An agent of protocol version 1 does not hold a body back for
		// 100 Continue: the gateway reads the small body of a request
		// with Expect at once too, and before it takes a stream.
		t.Run(tr+"/expect, older agent", func(t *testing.T) {
			t.Parallel()
			slowSmallBodies(t, tr, "Expect: 100-continue\r\n", func(c *agent.Config) { c.ProtocolVersion = 1 })
		})
		// HTTP/2 streams of one connection: each read is cut alone.
		t.Run(tr+"/h2c", func(t *testing.T) {
			t.Parallel()
			slowSmallBodies(t, tr, "h2c", nil)
		})
		t.Run(tr+"/small body that keeps moving", func(t *testing.T) {
			t.Parallel()
			steadyUpload(t, tr, 15, 100) // 1.5 times the timeout at uploadPace
		})
	}
}

// slowSmallBodies runs twice as many clients that send the head of a small
// POST (with extra header lines; "h2c": as streams of one HTTP/2
// connection) and 10 of its 1000 bytes, then nothing,
// as the session has streams; requests sent meanwhile must be served, and
// the slow ones must end with 408 once the app's timeout passed.
func slowSmallBodies(t *testing.T, tr, extra string, agentCfg func(*agent.Config)) {
	var posts atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "read %d, %v", n, err)
	}))
	t.Cleanup(backend.Close)
	rig := testrig.New(t, testrig.Options{Transport: tr, Routes: []gateway.Route{
		{App: "upload", Hosts: []string{"upload.test"}, Backend: testrig.MustURL(t, backend.URL), Timeout: uploadTimeout}},
		Gateway: func(c *gateway.Config) {
			c.MaxStreamsPerSession = slowBodyStreams
			// A request that finds every stream busy is refused soon
			// (503 overloaded), not after the default 10 s.
			c.StreamWait = 200 * time.Millisecond
		}})
	rig.StartAgent(agentCfg)
	addr := rig.G.PublicAddr().String()

	var h2c *http.Client
	if extra == "h2c" {
		h2c = protoClient(t, nil, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) })
	}
	slow := make([]func() *http.Response, 2*slowBodyStreams)
	for i := range slow {
		if h2c != nil {
			slow[i] = slowH2CBody(t, h2c, rig.URL)
			continue
		}
		c := dialRaw(t, addr)
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: upload.test\r\n%sContent-Length: 1000\r\n\r\n0123456789", extra)
		slow[i] = func() *http.Response { return readFinalResponse(t, c) }
	}

	// Everyone else is served meanwhile.
	for i := range 2 * slowBodyStreams {
		req, _ := http.NewRequest(http.MethodPost, rig.URL+"/", strings.NewReader("0123456789"))
		req.Host = "upload.test"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "read 10, <nil>" {
			t.Fatalf("request %d, sent while %d clients were slow to send small bodies (the session has %d streams), "+
				"got %s %s %q; want 200 with the backend's count: the slow bodies must not hold tunnel streams",
				i+1, len(slow), slowBodyStreams, res.Status, res.Header.Get(gateway.ErrorHeader), body[:min(len(body), 80)])
		}
	}

	// The slow ones end once their body has not moved for the app's
	// timeout, without reaching the backend.
	for i, response := range slow {
		res := response()
		if res.StatusCode != http.StatusRequestTimeout || res.Header.Get(gateway.ErrorHeader) != gateway.CodeBadRequest {
			t.Fatalf("slow client %d, whose body stopped after 10 of 1000 bytes, got %s %s; want 408 %s",
				i+1, res.Status, res.Header.Get(gateway.ErrorHeader), gateway.CodeBadRequest)
		}
		if !res.Close && res.ProtoMajor == 1 {
			t.Errorf("slow client %d: the 408 does not close the connection, whose unread body cannot be parsed", i+1)
		}
	}
	if n := posts.Load(); n != 2*slowBodyStreams {
		t.Errorf("the backend saw %d POSTs; want the %d whole ones (no stalled body may reach it)", n, 2*slowBodyStreams)
	}
}

// readFinalResponse reads the response to the one request sent on c,
// past any 100 Continue.
func readFinalResponse(t *testing.T, c net.Conn) *http.Response {
	t.Helper()
	br := bufio.NewReader(c)
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read the response: %v", err)
		}
		io.Copy(io.Discard, res.Body)
		if res.StatusCode >= 200 {
			return res
		}
	}
}

// slowH2CBody starts a POST with c, an HTTP/2 client, whose body stops after 10 of its 1000 bytes, and returns
// a func that waits for its response.
func slowH2CBody(t *testing.T, c *http.Client, url string) func() *http.Response {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go pw.Write([]byte("0123456789")) // returns once the transport read it, or at the cleanup
	req, _ := http.NewRequest(http.MethodPost, url+"/", pr)
	req.Host = "upload.test"
	req.ContentLength = 1000
	done := make(chan *http.Response, 1)
	go func() {
		res, err := c.Do(req)
		if err != nil {
			t.Errorf("slow HTTP/2 client: %v", err)
			done <- &http.Response{Status: err.Error()}
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		done <- res
	}()
	return func() *http.Response { return <-done }
}
