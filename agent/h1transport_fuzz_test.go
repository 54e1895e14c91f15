package agent

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// FuzzH1Transport compares the agent's HTTP/1.1 client (h1Sync) with
// the http.Transport that the agent uses for every other request, built as
// Backends builds it, on the same raw answers from a loopback backend: one
// request each on a new connection, answered in two TCP writes (cut at
// split), then the backend hangs up. Both must come to the same status,
// header, body and trailer, or both fail. The agent differs on purpose in
// two ways: a 101 to a request that asked for no upgrade fails (Transport
// passes it on), and Pragma: no-cache gets no Cache-Control added on its
// fast path (compareExchange). FuzzH1Response and FuzzH1Reuse compare it
// with http.ReadResponse, including where a response ends and which
// connections are kept.
func FuzzH1Transport(f *testing.F) {
	addH1Seeds(func(m uint8, s []byte) { f.Add(m, uint8(0), uint16(len(s)), s) })
	for _, s := range h1LongSeeds() {
		f.Add(uint8(0), uint8(1), uint16(len(s)), []byte(s))
	}
	splitFuzz(f, h1ReviewSeeds(), 2, func(t *testing.T, h1 http.Protocols, method, url string, readSize int, stream []byte) {
		tr := newBackendTransport(&tls.Config{}, h1, plainDialer.DialContext)
		defer tr.CloseIdleConnections()
		want := agentExchange(t, tr, method, url, readSize)
		if want.timedOut {
			t.Fatalf("net/http's Transport waited for bytes that never came: %s", describe(want))
		}
		if !want.failed && want.code == http.StatusSwitchingProtocols {
			want = h1Outcome{failed: true, why: "101 to a request without Upgrade"}
		}
		// Transport tells of 1xx heads only through an httptrace hook,
		// which would lift its bound on the heads: they are compared
		// with what ReadResponse reads.
		ref := refExchange(method, stream)
		want.head, want.informational = ref.head, ref.informational

		s := &h1Sync{Fallback: failingRoundTripper{t}}
		defer s.CloseIdleConnections()
		got := agentExchange(t, s, method, url, readSize)
		compareExchange(t, got, want)
	})
}

// splitFuzz runs the fuzz targets that send one request to a loopback
// backend which answers with the fuzzed stream in two writes (cut at the
// fuzzed split): it adds each of seeds for every method, read whole and
// with read size altRead, and calls run with the method, the backend's URL,
// the read size and the stream.
func splitFuzz(f *testing.F, seeds []string, altRead uint8, run func(t *testing.T, h1 http.Protocols, method, url string, readSize int, stream []byte)) {
	for _, s := range seeds {
		for m := range fuzzMethods {
			f.Add(uint8(m), uint8(0), uint16(len(s)), []byte(s))
			f.Add(uint8(m), altRead, uint16(len(s)/2), []byte(s))
		}
	}
	b := startSplitBackend(f)
	var h1 http.Protocols
	h1.SetHTTP1(true)
	f.Fuzz(func(t *testing.T, m, rs uint8, split uint16, stream []byte) {
		b.answer.Store(&splitAnswer{stream: stream, split: min(int(split), len(stream))})
		run(t, h1, fuzzMethods[int(m)%len(fuzzMethods)], "http://"+b.addr+"/", fuzzReadSizes[int(rs)%len(fuzzReadSizes)], stream)
	})
}

// h1ReviewSeeds are answers on the edges of HTTP/1.1 framing beyond
// h1SeedResponses.
func h1ReviewSeeds() []string {
	long := strings.Repeat("v", 70<<10)
	return []string{
		// Chunk sizes and extensions.
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nx\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nhi\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nhi\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nhi\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\x00\r\nhi\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiXY0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nContent-Length: 9\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		// Several Content-Length values.
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length: 2,2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length:2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000000\r\n\r\nhi",
		// Bodiless statuses with a body or a length.
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
		// Heads.
		"HTTP/1.1 200 OK\r\nX:A: b\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX-A:\x00\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n x\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX-Long: " + long + "\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.0 200\r\n\r\nbody",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi",
		"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 2000 X\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 20 X\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab",
	}
}

// splitAnswer is what a splitBackend answers every request with: stream
// in two writes, cut at split.
type splitAnswer struct {
	stream []byte
	split  int
}

// splitBackend is a loopback listener that reads one request on each
// connection, answers it with the current splitAnswer and hangs up.
type splitBackend struct {
	addr   string
	answer atomic.Pointer[splitAnswer]
}

func startSplitBackend(tb testing.TB) *splitBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &splitBackend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := make(map[net.Conn]struct{})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			a := b.answer.Load()
			wg.Go(func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil || a == nil {
					return
				}
				if _, err := c.Write(a.stream[:a.split]); err == nil && a.split < len(a.stream) {
					c.Write(a.stream[a.split:])
				}
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}
