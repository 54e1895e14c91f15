package tunnel

import (
	"context"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
)

// bigLengths are body lengths that do not fit a 32-bit int (the agent runs
// on 32-bit ARM boards): just above 2 GiB, just above 4 GiB (where a uint32
// wraps to a small number) and the largest.
var bigLengths = []int64{1<<31 + 1, 1<<32 + 5, math.MaxInt64}

// TestHeadsCarryLengthsAbove4GiB sends request and response heads with
// Content-Lengths beyond 32 bits through the wire encoding and back: the
// receiving side must see the same length. Only a 32-bit build can catch
// a length that passes through an int: run it with GOARCH=386 too.
func TestHeadsCarryLengthsAbove4GiB(t *testing.T) {
	for _, n := range bigLengths {
		req, err := http.NewRequest("PUT", "http://backend.internal/up", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = n
		got := roundTripFrame(t, &Frame{Request: requestHead(req, nil)})
		back, err := RequestFromHead(context.Background(), got.GetRequest())
		if err != nil {
			t.Fatalf("request head with Content-Length %d: %v", n, err)
		}
		if back.ContentLength != n {
			t.Errorf("request Content-Length %d arrived as %d", n, back.ContentLength)
		}

		res := &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: n, Body: io.NopCloser(strings.NewReader(""))}
		got = roundTripFrame(t, &Frame{Response: responseHead(res)})
		resBack, err := responseFromHead(got.GetResponse(), req)
		if err != nil {
			t.Fatalf("response head with Content-Length %d: %v", n, err)
		}
		if resBack.ContentLength != n {
			t.Errorf("response Content-Length %d arrived as %d", n, resBack.ContentLength)
		}
	}
}

// roundTripFrame encodes f as a peer sends it and decodes it as the other
// side does.
func roundTripFrame(t *testing.T, f *Frame) *Frame {
	t.Helper()
	b := AppendFrame(nil, f)
	got := new(Frame)
	if err := UnmarshalFrameAliasing(b, got); err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	return got
}

// TestWriteBodyToLimitAbove4GiB: a request body whose declared length does
// not fit 32 bits is written whole by WriteBodyTo (the agent's writev path
// for a request body of known length), ending at the body's end rather than
// at a limit cut to 32 bits.
func TestWriteBodyToLimitAbove4GiB(t *testing.T) {
	for _, max := range bigLengths {
		p := newBodyPipe(context.Background(), nil, []byte("hello, "))
		p.push([]byte("world"))
		p.end(nil)
		var sb strings.Builder
		n, err := p.WriteBodyTo(&sb, max)
		if err != nil || n != 12 || sb.String() != "hello, world" {
			t.Errorf("WriteBodyTo(max %d) = %d, %v, wrote %q; want 12, nil, \"hello, world\"", max, n, err, sb.String())
		}
	}
}
