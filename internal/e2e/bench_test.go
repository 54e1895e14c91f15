package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// benchSmall measures small GETs, over the relay or straight to the
// backend, so both figures come from the same run, with the CPU time of
// the whole process per GET:
//
//	go test ./internal/e2e -run '^$' -bench Small -benchtime 3s
func benchSmall(b *testing.B, relay bool) {
	body := make([]byte, 64)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	defer backend.Close()
	url, host := backend.URL+"/", ""
	if relay {
		rig := testrig.New(b, testrig.Options{Routes: []gateway.Route{
			{App: "bench", Hosts: []string{"bench.test"}, Backend: testrig.MustURL(b, backend.URL)},
		}})
		rig.StartAgent(nil)
		url, host = rig.URL+"/", "bench.test"
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	b.ReportAllocs()
	b.SetParallelism(8)
	cpu0 := tunneltest.ProcessCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", url, nil)
			req.Host = host
			res, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	// CPU of the whole process (client, gateway, agent, backend) per GET:
	// steadier than the wall time on a shared machine.
	b.ReportMetric(float64(tunneltest.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

func BenchmarkSmallDirect(b *testing.B) { benchSmall(b, false) }
func BenchmarkSmallRelay(b *testing.B)  { benchSmall(b, true) }

// BenchmarkDownloadRelay measures 16 MiB GETs through the relay, one at a
// time, with the CPU time of the whole process (client, gateway, agent and
// backend) per download, which varies much less than the wall time on a
// shared machine:
//
//	go test ./internal/e2e -run '^$' -bench DownloadRelay -benchtime 40x
func BenchmarkDownloadRelay(b *testing.B) {
	const size = 16 << 20
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		io.CopyN(w, tunneltest.Zeros{}, size)
	}))
	defer backend.Close()
	rig := testrig.New(b, testrig.Options{Routes: []gateway.Route{
		{App: "bench", Hosts: []string{"bench.test"}, Backend: testrig.MustURL(b, backend.URL)},
	}})
	rig.StartAgent(nil)
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	buf := make([]byte, 256<<10) // the client's reads: few, as a browser's
	b.SetBytes(size)
	b.ReportAllocs()
	cpu0 := tunneltest.ProcessCPU(b)
	b.ResetTimer()
	for range b.N {
		req, _ := http.NewRequest("GET", rig.URL+"/", nil)
		req.Host = "bench.test"
		res, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := readAll(res.Body, buf)
		res.Body.Close()
		if err != nil || n != size || res.StatusCode != 200 {
			b.Fatalf("status %d, %d bytes, %v", res.StatusCode, n, err)
		}
	}
	b.ReportMetric(float64(tunneltest.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// readAll reads r to its end through buf and returns how many bytes it read.
func readAll(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		m, err := r.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
