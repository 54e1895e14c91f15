package grpctunnel_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// zeros is an endless body source that does not allocate.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sizedBackend answers every request with n zero bytes and a known length.
func sizedBackend(n int64) http.RoundTripper {
	return rtFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Length": {strconv.FormatInt(n, 10)}},
			ContentLength: n, Body: io.NopCloser(io.LimitReader(zeros{}, n)), Request: req,
		}, nil
	})
}

// drainBackend reads the request body to its end and answers 204.
var drainBackend = rtFunc(func(req *http.Request) (*http.Response, error) {
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: 204, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
})

// BenchmarkExchange relays GETs over a real gRPC session on loopback (TLS,
// HTTP/2, the tunnel codec), gateway and agent in this process, with a
// backend that costs next to nothing: what remains is the relay's own work.
// "small" is one exchange at a time, "small-parallel" 16 at once, and the
// download and the upload measure body throughput on one stream.
func BenchmarkExchange(b *testing.B) {
	for _, tc := range []struct {
		name     string
		size     int64
		parallel int
		upload   bool
	}{
		{"small-64B", 64, 0, false},
		{"small-64B-parallel", 64, 16, false},
		{"download-16MiB", 16 << 20, 0, false},
		{"upload-16MiB", 16 << 20, 0, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ts := startServer(b, nil)
			if tc.upload {
				ts.startAgent(drainBackend)
			} else {
				ts.startAgent(sizedBackend(tc.size))
			}
			s := ts.session()
			buf := make([]byte, tunnel.ChunkSize)
			one := func(buf []byte) {
				st, err := s.OpenStream(context.Background())
				if err != nil {
					b.Error(err)
					return
				}
				req, _ := http.NewRequest("GET", "http://backend:80/bytes", nil)
				want := tc.size
				if tc.upload {
					req, _ = http.NewRequest("POST", "http://backend:80/upload", io.LimitReader(zeros{}, tc.size))
					req.ContentLength, want = tc.size, 0
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
			one(buf) // warm up: TLS, the stream pool
			b.ReportAllocs()
			b.SetBytes(tc.size)
			cpu0 := processCPU(b)
			b.ResetTimer()
			if tc.parallel == 0 {
				for range b.N {
					one(buf)
				}
			} else {
				b.SetParallelism(tc.parallel)
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, 32<<10)
					for pb.Next() {
						one(buf)
					}
				})
			}
			b.StopTimer()
			// CPU time of the whole process (gateway, agent and client) per
			// exchange: on a shared machine it varies much less than the
			// wall time, which waits for other processes.
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
