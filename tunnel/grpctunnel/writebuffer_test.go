package grpctunnel_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// largestWrite records the largest single Write to the connections that a
// listener accepts: the system calls below TLS (tlsbatch writes each TLS
// Write's records in one).
type largestWrite struct {
	net.Listener
	largest *atomic.Int64
}

func (l largestWrite) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return largestWriteConn{Conn: c, largest: l.largest}, nil
}

type largestWriteConn struct {
	net.Conn
	largest *atomic.Int64
}

func (c largestWriteConn) Write(p []byte) (int, error) {
	for n := int64(len(p)); ; {
		old := c.largest.Load()
		if n <= old || c.largest.CompareAndSwap(old, n) {
			break
		}
	}
	return c.Conn.Write(p)
}

// TestBulkWritesBounded: a body leaves the gateway (a request body) and
// the agent (a response body) in writes of at most gRPC's write buffer
// (writeBuffer, 32 KiB) and its TLS records' overhead, and in writes of
// that size, not frame by frame. The buffer is the queue a new stream or
// another exchange's answer waits behind on a slow link: at 256 KiB the
// largest write was 131,456 bytes (a whole 128 KiB chunk), and 15 of 89
// small requests beside a download at 192 kbit/s got 503
// (TestKeepaliveSaturatedLink).
func TestBulkWritesBounded(t *testing.T) {
	var gateway, agent atomic.Int64
	ts := startServerOn(t, nil, func(ln net.Listener) net.Listener { return largestWrite{Listener: ln, largest: &gateway} })
	body := bytes.Repeat([]byte("x"), 2<<20)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cs := ts.dialWrapped(0, func(c net.Conn) net.Conn { return largestWriteConn{Conn: c, largest: &agent} })
	ts.serveAgent(cs, rtFunc(func(req *http.Request) (*http.Response, error) {
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return nil, err
		}
		return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
			ContentLength: int64(len(body)), Body: io.NopCloser(bytes.NewReader(body)), Request: req}, nil
	}))
	st, err := ts.session().OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://backend:80/both", bytes.NewReader(body))
	res, err := tunnel.RoundTrip(st, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || len(got) != len(body) {
		t.Fatalf("response body: %d bytes, %v; want %d", len(got), err, len(body))
	}
	for _, c := range []struct {
		side    string
		largest int64
	}{{"gateway's (request body)", gateway.Load()}, {"agent's (response body)", agent.Load()}} {
		// 32 KiB of frames sealed in TLS records of at most 16 KiB, each
		// 22 bytes longer (header, content type, tag): 32,812 and 32,856
		// bytes measured.
		if limit := int64(grpctunnel.WriteBufferSize + 1<<10); c.largest > limit {
			t.Errorf("largest write of the %s connection %d bytes, want at most %d: whatever the session sends next waits behind it on a slow link",
				c.side, c.largest, limit)
		}
		if c.largest < grpctunnel.WriteBufferSize {
			t.Errorf("largest write of the %s connection %d bytes, want gRPC's buffer (%d) gathered in one", c.side, c.largest, grpctunnel.WriteBufferSize)
		}
		t.Logf("%s: largest write %d bytes", c.side, c.largest)
	}
}
