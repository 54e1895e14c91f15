package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// benchSmall measures small GETs, over the relay or straight to the
// backend, so both figures come from the same run:
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
}

func BenchmarkSmallDirect(b *testing.B) { benchSmall(b, false) }
func BenchmarkSmallRelay(b *testing.B)  { benchSmall(b, true) }
