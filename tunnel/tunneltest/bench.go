// Package tunneltest holds what the tests and benchmarks of the tunnel
// transports share: backends that cost next to nothing and the exchange
// benchmark, so that every transport is measured the same way.
package tunneltest

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// Zeros is an endless body source that does not allocate.
type Zeros struct{}

func (Zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// RoundTripFunc is an http.RoundTripper made of a function.
type RoundTripFunc func(*http.Request) (*http.Response, error)

func (f RoundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// SizedBackend answers every request with n zero bytes and a known length.
func SizedBackend(n int64) http.RoundTripper {
	return RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Length": {strconv.FormatInt(n, 10)}},
			ContentLength: n, Body: io.NopCloser(io.LimitReader(Zeros{}, n)), Request: req,
		}, nil
	})
}

// DrainBackend reads the request body to its end and answers 204.
var DrainBackend = RoundTripFunc(func(req *http.Request) (*http.Response, error) {
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: 204, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
})

// Case is one sub-benchmark of BenchmarkExchange.
type Case struct {
	Name     string
	Size     int64 // body bytes: of the response, or of the request with Upload
	Parallel int   // exchanges at once (b.SetParallelism); 0 → one at a time
	Upload   bool  // POST Size bytes to DrainBackend instead of a GET
}

// Backend is the backend the agent of c's session must use.
func (c Case) Backend() http.RoundTripper {
	if c.Upload {
		return DrainBackend
	}
	return SizedBackend(c.Size)
}

// Cases are the sub-benchmarks every transport runs: "small" is one
// exchange at a time, "small-parallel" 16 at once, and download and upload
// one body on one stream.
var Cases = []Case{
	{Name: "small-64B", Size: 64},
	{Name: "small-64B-parallel", Size: 64, Parallel: 16},
	{Name: "download-16MiB", Size: 16 << 20},
	{Name: "upload-16MiB", Size: 16 << 20, Upload: true},
}

// BenchmarkExchange relays c's exchanges over s, whose agent must answer
// with c.Backend(), and reports allocations, throughput, and the CPU time of
// the whole process (gateway, agent and client) per exchange: on a shared
// machine it varies much less than the wall time.
func BenchmarkExchange(b *testing.B, s tunnel.Session, c Case) {
	one := func(buf []byte) {
		st, err := s.OpenStream(context.Background())
		if err != nil {
			b.Error(err)
			return
		}
		req, _ := http.NewRequest("GET", "http://backend:80/bytes", nil)
		want := c.Size
		if c.Upload {
			req, _ = http.NewRequest("POST", "http://backend:80/upload", io.LimitReader(Zeros{}, c.Size))
			req.ContentLength, want = c.Size, 0
		}
		res, err := tunnel.RoundTrip(st, req, nil)
		if err != nil {
			b.Error(err)
			return
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{res.Body}, buf)
		res.Body.Close()
		if err != nil || n != want {
			b.Errorf("read %d bytes, %v; want %d", n, err, want)
		}
	}
	one(make([]byte, tunnel.ChunkSize)) // warm up: TLS, stream pools
	b.ReportAllocs()
	b.SetBytes(c.Size)
	cpu0 := ProcessCPU(b)
	b.ResetTimer()
	if c.Parallel == 0 {
		buf := make([]byte, tunnel.ChunkSize)
		for range b.N {
			one(buf)
		}
	} else {
		b.SetParallelism(c.Parallel)
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 32<<10)
			for pb.Next() {
				one(buf)
			}
		})
	}
	b.StopTimer()
	b.ReportMetric(float64(ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}
