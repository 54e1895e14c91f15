package agent

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"testing"
)

// bigLengths are body lengths that do not fit a 32-bit int (agents run on
// 32-bit ARM boards): just above 2 GiB and just above 4 GiB, where a
// uint32 wraps to a small number. Run these tests with GOARCH=386 too.
var bigLengths = []int64{1<<31 + 1, 1<<32 + 5}

// TestH1BodyLengthsAbove4GiB: the HTTP/1.1 client's fast path keeps a
// response's Content-Length and the bytes still to come in 64 bits: the head
// parser reads the length, a length body counts down from it, and the end
// of the body is not taken to be near.
func TestH1BodyLengthsAbove4GiB(t *testing.T) {
	for _, n := range bigLengths {
		text := strconv.FormatInt(n, 10)
		if got := parseLength(text); got != n {
			t.Errorf("parseLength(%q) = %d", text, got)
		}
		br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: " + text + "\r\n\r\nsome of the body"))
		br.Peek(1)
		h, ok := peekHead(br)
		if !ok || h.length != n {
			t.Fatalf("peekHead: taken %v, length %d; want taken, %d", ok, h.length, n)
		}
		br.Discard(h.size)

		// Far from its end, a read of a body larger than br's buffer is not
		// shortened (endThroughBuffer cuts only the read that ends it).
		p := make([]byte, 64<<10)
		if q := endThroughBuffer(bufio.NewReaderSize(strings.NewReader(""), 4096), p, n); len(q) != len(p) {
			t.Errorf("endThroughBuffer with %d bytes to come cut a %d-byte read to %d", n, len(p), len(q))
		}

		lb := &lengthBody{br: br, left: n}
		got, err := io.ReadAll(lb)
		if string(got) != "some of the body" || err != io.ErrUnexpectedEOF {
			t.Errorf("length body of %d bytes cut short: read %q, %v; want the 16 bytes sent and io.ErrUnexpectedEOF", n, got, err)
		}
		if want := n - 16; lb.left != want {
			t.Errorf("length body of %d bytes: %d left after 16, want %d", n, lb.left, want)
		}
	}
}

// limitRecorder is a bodyWriter that records the limit it was given.
type limitRecorder struct{ max int64 }

func (r *limitRecorder) Read([]byte) (int, error) { return 0, io.EOF }

func (r *limitRecorder) WriteBodyTo(_ io.Writer, max int64) (int64, error) {
	r.max = max
	return 7, nil
}

// TestBodyConnLimitAbove4GiB: net/http's limit on a request body of known
// length reaches WriteBodyTo whole, and what was written comes off it.
func TestBodyConnLimitAbove4GiB(t *testing.T) {
	for _, n := range bigLengths {
		rec := new(limitRecorder)
		lr := &io.LimitedReader{R: rec, N: n}
		written, err := bodyConn{}.ReadFrom(lr)
		if err != nil || written != 7 {
			t.Fatalf("ReadFrom = %d, %v; want 7, nil", written, err)
		}
		if rec.max != n || lr.N != n-7 {
			t.Errorf("a %d-byte body: WriteBodyTo got limit %d, %d left after 7 written; want %d and %d", n, rec.max, lr.N, n, n-7)
		}
	}
}
