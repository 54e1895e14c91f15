package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// benchRequestHead is the head of a typical relayed GET, as the gateway's
// ReverseProxy sends it (client headers plus X-Forwarded-* and X-Request-Id).
func benchRequestHead() *tunnelv1.RequestHead {
	return requestHead(benchRequest(), &Options{App: "bench", RequestID: "0123456789abcdef0123456789abcdef"})
}

func benchRequest() *http.Request {
	req := &http.Request{
		Method: "GET",
		URL:    &url.URL{Scheme: "http", Host: "127.0.0.1:9000", Path: "/bytes/64"},
		Host:   "127.0.0.1:9000",
		Header: http.Header{
			"User-Agent":        {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
			"Accept":            {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
			"Accept-Language":   {"en-GB,en;q=0.5"},
			"Accept-Encoding":   {"gzip, deflate, br"},
			"X-Forwarded-For":   {"192.0.2.17"},
			"X-Forwarded-Host":  {"app.example.com"},
			"X-Forwarded-Proto": {"https"},
			"X-Request-Id":      {"0123456789abcdef0123456789abcdef"},
		},
	}
	return req.WithContext(context.Background())
}

// benchResponseHeader is what a small backend response typically carries.
func benchResponseHeader(n int) http.Header {
	return http.Header{
		"Content-Type":   {"application/octet-stream"},
		"Content-Length": {strconv.Itoa(n)},
		"Date":           {"Wed, 25 Nov 2026 18:00:00 GMT"},
		"Cache-Control":  {"no-store"},
	}
}

// benchFrames are the frames the codec benchmarks encode and decode.
func benchFrames() []struct {
	name string
	f    *Frame
} {
	res := &http.Response{StatusCode: 200, Header: benchResponseHeader(64), ContentLength: 64}
	frames := []struct {
		name string
		f    *Frame
	}{
		{"request-head", &Frame{Request: benchRequestHead(), End: true}},
		{"response-head+64B", &Frame{Response: responseHead(res), Data: make([]byte, 64), End: true}},
	}
	for _, n := range []int{1 << 10, 16 << 10, ChunkSize} {
		frames = append(frames, struct {
			name string
			f    *Frame
		}{"data-" + sizeName(n), &Frame{Data: make([]byte, n)}})
	}
	return frames
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkEncodeFrame marshals frames with generic protobuf encoding, for
// reference: the transports encode with AppendFrame (BenchmarkAppendFrame),
// which writes the same bytes.
func BenchmarkEncodeFrame(b *testing.B) {
	for _, tc := range benchFrames() {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(proto.Size(tc.f)))
			var buf []byte
			for b.Loop() {
				var err error
				buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], tc.f)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeFrame parses encoded frames with DecodeFrame, and, for
// reference, with generic protobuf decoding (the "proto" sub-benchmarks).
func BenchmarkDecodeFrame(b *testing.B) {
	for _, tc := range benchFrames() {
		enc, err := proto.Marshal(tc.f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if _, err := DecodeFrame(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/proto", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if err := proto.Unmarshal(enc, new(Frame)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHeads measures converting heads between net/http and the wire
// both ways (the gateway's and the agent's header work per exchange).
func BenchmarkHeads(b *testing.B) {
	req := benchRequest()
	o := &Options{App: "bench", RequestID: "0123456789abcdef0123456789abcdef"}
	res := &http.Response{StatusCode: 200, Header: benchResponseHeader(64), ContentLength: 64}
	b.Run("request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := RequestFromHead(req.Context(), requestHead(req, o)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("response", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := responseFromHead(responseHead(res), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReceiveHead decodes a received head as its receiver does, with
// UnmarshalFrameAliasing, and makes it the http.Request the agent sends
// to the backend (request) or the http.Response the gateway relays
// (response): the header work of each side per exchange.
func BenchmarkReceiveHead(b *testing.B) {
	req := benchRequest()
	res := &http.Response{StatusCode: 200, Header: benchResponseHeader(64), ContentLength: 64}
	reqFrame := AppendFrame(nil, &Frame{Request: benchRequestHead(), End: true})
	resFrame := AppendFrame(nil, &Frame{Response: responseHead(res), Data: make([]byte, 64), End: true})
	b.Run("request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f := new(Frame)
			if err := UnmarshalFrameAliasing(reqFrame, f); err != nil {
				b.Fatal(err)
			}
			if _, err := RequestFromHead(req.Context(), f.Request); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("response", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f := new(Frame)
			if err := UnmarshalFrameAliasing(resFrame, f); err != nil {
				b.Fatal(err)
			}
			if _, err := responseFromHead(f.Response, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// codecPipe is an in-memory Stream pair that encodes each Frame on Send and
// decodes it with UnmarshalFrameAliasing on Recv, as a byte-stream transport does, but
// with no network or goroutine of its own. Unlike pipe it records nothing,
// so that benchmarks and allocation tests count only the tunnel's work.
type codecPipe struct {
	in, out chan []byte
	reset   chan struct{} // closed once; shared by both ends
}

func newCodecPipe() (gw, ag *codecPipe) {
	toAgent, toGateway, reset := make(chan []byte, 4), make(chan []byte, 4), make(chan struct{})
	return &codecPipe{in: toGateway, out: toAgent, reset: reset},
		&codecPipe{in: toAgent, out: toGateway, reset: reset}
}

func (p *codecPipe) Send(f *Frame) error {
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	select {
	case p.out <- b:
		return nil
	case <-p.reset:
		return errPipeReset
	}
}

func (p *codecPipe) Recv() (*Frame, error) {
	select {
	case b := <-p.in:
		f := new(Frame)
		if err := UnmarshalFrameAliasing(b, f); err != nil { // b was marshalled for f alone
			return nil, err
		}
		return f, nil
	case <-p.reset:
		return nil, errPipeReset
	}
}

func (p *codecPipe) Finish(clean bool) {
	if !clean {
		p.close()
	}
}

func (p *codecPipe) close() {
	select {
	case <-p.reset:
	default:
		close(p.reset)
	}
}

// fixedBackend answers every request with the same small body, reusing one
// response so that the backend's own allocations do not count. Exchanges
// must run one at a time.
type fixedBackend struct {
	res  http.Response
	body bytes.Reader
	data []byte
}

func newFixedBackend(n int) *fixedBackend {
	be := &fixedBackend{data: make([]byte, n)}
	be.res = http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: benchResponseHeader(n), ContentLength: int64(n), Body: io.NopCloser(&be.body),
	}
	return be
}

func (be *fixedBackend) RoundTrip(req *http.Request) (*http.Response, error) {
	be.body.Reset(be.data)
	be.res.Request = req
	return &be.res, nil
}

// smallExchangeRig is the tunnel leg of a small exchange: the gateway's
// RoundTrip on one end of a codecPipe and the agent's ServeStream on the
// other, with a backend and a request that are reused.
type smallExchangeRig struct {
	gw   *codecPipe
	req  *http.Request
	opts Options
	buf  []byte
	stop func()
}

func newSmallExchangeRig(tb testing.TB, size int) *smallExchangeRig {
	return newSmallExchangeRigOf(tb, newFixedBackend(size))
}

// newSmallExchangeRigOf is newSmallExchangeRig with backend be.
func newSmallExchangeRigOf(tb testing.TB, be http.RoundTripper) *smallExchangeRig {
	gw, ag := newCodecPipe()
	srv := &Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) { return be, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeStream(ctx, ag) }()
	r := &smallExchangeRig{
		gw: gw, req: benchRequest(), buf: make([]byte, 32<<10),
		opts: Options{App: "bench", RequestID: "0123456789abcdef0123456789abcdef"},
	}
	r.stop = func() {
		cancel()
		gw.close()
		if err := <-done; err != nil && !errors.Is(err, errPipeReset) {
			tb.Errorf("ServeStream: %v", err)
		}
	}
	return r
}

// exchange relays one request and reads its whole response.
func (r *smallExchangeRig) exchange(tb testing.TB) {
	res, err := RoundTrip(r.gw, r.req, &r.opts)
	if err != nil {
		tb.Fatal(err)
	}
	for {
		_, err := res.Body.Read(r.buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		tb.Fatalf("status %d", res.StatusCode)
	}
}

// BenchmarkSmallExchange is one small GET over the tunnel leg: the
// gateway's RoundTrip and the agent's ServeStream, one frame each way
// through an in-memory codec pipe, without a real client or backend.
func BenchmarkSmallExchange(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10} {
		b.Run(sizeName(size), func(b *testing.B) {
			r := newSmallExchangeRig(b, size)
			defer r.stop()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				r.exchange(b)
			}
		})
	}
}
