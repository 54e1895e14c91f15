package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// bodyWriter is a request body that writes itself to a connection from
// the memory it arrived in (the tunnel's request body: see
// tunnel's bodyPipe.WriteBodyTo).
type bodyWriter interface {
	WriteBodyTo(w io.Writer, max int64) (int64, error)
}

// bodyConn is a plain TCP connection of the HTTP/1.1 backend transport.
// net/http writes a request body of known length to it with ReadFrom and
// an io.LimitedReader around the body; when that body is a bodyWriter,
// ReadFrom lets it write itself (one writev per batch of received frames)
// instead of copying it through a 32 KiB buffer, one write(2) each.
// Anything else goes to the TCP connection's own ReadFrom.
type bodyConn struct {
	*net.TCPConn
}

func (c bodyConn) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if b, ok := lr.R.(bodyWriter); ok {
			n, err := b.WriteBodyTo(c.TCPConn, lr.N)
			lr.N -= n
			return n, err
		}
	}
	return c.TCPConn.ReadFrom(r)
}

// withBodyConns wraps the plain TCP connections that dial returns in
// bodyConn.
func withBodyConns(dial backendDialFunc) backendDialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok && err == nil {
			return bodyConn{tc}, nil
		}
		return c, err
	}
}

// h10Guard is a connection of the HTTP/1.1 backend transport that is never
// used again after an HTTP/1.0 response: http.Transport keeps an HTTP/1.0
// connection that answered "Connection: keep-alive", and it reads such a
// response by its Content-Length even when it names a Transfer-Encoding
// (golang/go#12785); the rest of a chunked body then answers the next
// request on the connection, which may be another user's. The synchronous
// client keeps no HTTP/1.0 connection either (h1Conn.roundTrip).
//
// The guard watches the bytes read: h1Transport tells it when net/http is
// about to write a request on it, and with which method (whether the
// response has a body); the first bytes read after that begin its
// response. When the final head of that response says HTTP/1.0 and
// net/http would keep the connection, the guard lets through the head and
// the body the head announces, no byte more, and returns io.EOF with the
// last of them.
// net/http's persistConn.Read records that end of stream (sawEOF) while the
// response is read, and its readLoop pools a connection only if it saw
// none: for a response without a body before it hands the response over,
// for one with a body when the body's end is read. The connection is
// closed by net/http's own decision, so no request can be given it in
// between (closing it from outside once the body is read comes too late:
// readLoop pools it inside that last Read), the response is whole, and the
// next request goes out on a new connection, never lost. A response
// net/http would not keep (HTTP/1.1, "Connection: close", a body that runs
// to the end of the stream) passes untouched; TestH10ReuseTransportNoLeftover
// fails if a Go release reads the end of stream differently.
type h10Guard struct {
	net.Conn

	// watching is set while a response head is awaited or a capped
	// response is being read: only then do reads take mu.
	watching atomic.Bool

	mu     sync.Mutex
	phase  h10Phase
	method string               // of the request whose response is awaited
	head   []byte               // the response bytes read so far, from the head's first byte
	tls    *tls.ConnectionState // of the TLS connection guardedTLSDial wrapped; immutable
	left   int64                // h10Capped: bytes of the HTTP/1.0 response not yet read
}

type h10Phase uint8

const (
	h10Request h10Phase = iota // no request under way: reads pass untouched until begin
	h10Head                    // a request began; its response head is read
	h10Capped                  // an HTTP/1.0 response is read to its end, then EOF
	h10Off                     // a 101: the connection is no longer HTTP
)

// h10MaxHead bounds the bytes the guard keeps to find a response head; a
// longer head exceeds the transport's limit (h1MaxResponseHeaderBytes) and
// fails there.
const h10MaxHead = h1MaxResponseHeaderBytes + 1

func newH10Guard(c net.Conn) *h10Guard {
	return &h10Guard{Conn: c}
}

func (g *h10Guard) Read(p []byte) (int, error) {
	if !g.watching.Load() {
		n, err := g.Conn.Read(p)
		if n == 0 || !g.watching.Load() {
			return n, err
		}
		// A request began while the read waited: these bytes begin
		// its response.
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.saw(p, n, err)
	}
	g.mu.Lock()
	if g.phase == h10Capped {
		if g.left == 0 {
			g.mu.Unlock()
			return 0, io.EOF
		}
		if int64(len(p)) > g.left {
			p = p[:g.left]
		}
	}
	g.mu.Unlock()
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.saw(p, n, err)
}

// saw looks at the n bytes just read into p; mu is held.
func (g *h10Guard) saw(p []byte, n int, err error) (int, error) {
	switch g.phase {
	case h10Head:
		if len(g.head) == 0 && n > 9 && string(p[:9]) == "HTTP/1.1 " && p[9] != '1' {
			g.stop(h10Request) // the common case, without a copy
			return n, err
		}
		before := len(g.head)
		g.head = append(g.head, p[:n]...)
		if over := g.readHead(before); over > 0 {
			n -= int(over) // bytes past the HTTP/1.0 response: never delivered
		}
		if g.phase != h10Capped {
			return n, err
		}
	case h10Capped:
		if int64(n) > g.left {
			n = int(g.left)
		}
		g.left -= int64(n)
	default:
		return n, err
	}
	if g.left == 0 {
		err = io.EOF
	}
	return n, err
}

// readHead parses the response heads in g.head, whose first before bytes
// were seen already. A final head ends the watch; for an HTTP/1.0 response
// that net/http would keep, it caps the connection at the response's end and
// returns how many bytes of g.head lie past it.
func (g *h10Guard) readHead(before int) int64 {
	for {
		h := g.head
		if len(h) < len("HTTP/1.1 200") {
			if !bytes.HasPrefix([]byte("HTTP/"), h[:min(len(h), len("HTTP/"))]) {
				g.stop(h10Request) // not a head: net/http fails it
			}
			return 0
		}
		if bytes.HasPrefix(h, []byte("HTTP/1.1 ")) && h[9] != '1' {
			g.stop(h10Request) // the common case: a final HTTP/1.1 head
			return 0
		}
		if !bytes.HasPrefix(h, []byte("HTTP/")) {
			g.stop(h10Request)
			return 0
		}
		from := max(0, before-2)
		if !bytes.Contains(h[from:], []byte("\n\n")) && !bytes.Contains(h[from:], []byte("\n\r\n")) {
			if len(h) >= h10MaxHead {
				g.stop(h10Request) // net/http refuses it
			}
			return 0 // the head goes on in bytes not read yet
		}
		br := bufio.NewReaderSize(bytes.NewReader(h), len(h))
		res, err := http.ReadResponse(br, &http.Request{Method: g.method})
		if err != nil {
			g.stop(h10Request) // net/http fails it the same way
			return 0
		}
		used := len(h) - br.Buffered()
		code := res.StatusCode
		if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
			// An informational head: the final one follows.
			g.head = append(g.head[:0], h[used:]...)
			before = 0
			continue
		}
		if code == http.StatusSwitchingProtocols {
			g.stop(h10Off)
			return 0
		}
		if res.ProtoAtLeast(1, 1) || res.Close {
			g.stop(h10Request)
			return 0
		}
		var body int64
		if res.Body != http.NoBody {
			body = res.ContentLength
		}
		if body < 0 {
			// Not a length net/http keeps a connection after (it
			// sets Close for a body that runs to the end).
			g.stop(h10Request)
			return 0
		}
		end := int64(used) + body
		g.phase, g.head = h10Capped, g.head[:0]
		g.left = max(0, end-int64(len(h)))
		g.watching.Store(true)
		return max(0, int64(len(h))-end)
	}
}

// stop ends the watch of a response head; mu is held.
func (g *h10Guard) stop(next h10Phase) {
	g.phase = next
	g.watching.Store(false)
	if cap(g.head) > 4<<10 {
		g.head = nil
	} else {
		g.head = g.head[:0]
	}
}

// begin tells the guard that net/http is about to write a request with
// method on the connection (h1Transport's GotConn hook: net/http gives a
// connection to a request only once the request before was written whole
// and its response read, so no byte of an earlier body is written after
// it). The guard never guesses a request start from the bytes written: a
// body write may begin with anything, a request line too.
func (g *h10Guard) begin(method string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.phase == h10Off || g.phase == h10Capped {
		return // a 101 made the connection a tunnel, or EOF is due
	}
	g.method = method
	g.phase = h10Head
	g.head = g.head[:0]
	g.watching.Store(true)
}

// ReadFrom keeps the inner connection's ReadFrom (bodyConn's writev of a
// tunnel body). net/http writes a body this way, never a request head.
func (g *h10Guard) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := g.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{g.Conn}, r)
}

// writerOnly hides a writer's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// CloseWrite half-closes the inner connection when it can.
func (g *h10Guard) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

// withH10Guard wraps the connections that dial returns in h10Guard.
func withH10Guard(dial backendDialFunc) backendDialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newH10Guard(c), nil
	}
}
