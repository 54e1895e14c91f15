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

// TestBulkWritesGathered: a body leaves the gateway (a request body) and
// the agent (a response body) in writes of a whole 128 KiB chunk
// (tunnel.ChunkSize) at least, gathered by gRPC's write buffer
// (writeBuffer, 256 KiB, on both ends). With gRPC's default 32 KiB the
// largest write was about 32 KiB, and a bulk transfer cost about 8 system
// calls a chunk on each end (download 22.0% of direct against 24.1%,
// upload 18.9% against 20.4%).
func TestBulkWritesGathered(t *testing.T) {
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
		if c.largest < tunnel.ChunkSize {
			t.Errorf("largest write of the %s connection %d bytes, want a whole chunk (%d) or more", c.side, c.largest, tunnel.ChunkSize)
		}
		t.Logf("%s: largest write %d bytes", c.side, c.largest)
	}
}
