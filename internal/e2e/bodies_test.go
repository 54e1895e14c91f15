package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
)

// Sizes of the large-body tests. A GiB is far more than every buffer on the
// way (TCP buffers, gRPC windows, the ReverseProxy's copy buffer) together,
// so a relay that held a body in memory could not stay under heapBound.
const (
	sizeGiB = 1 << 30
	sizeMiB = 1 << 20

	// heapBound is the most HeapInuse a whole-GiB transfer may reach: the
	// test process holds the client, gateway, agent and backend, and a
	// quarter of the body is far more than all their buffers.
	heapBound = 256 * sizeMiB
	// pausedHeapBound is the most HeapInuse while a client sits on a paused
	// download.
	pausedHeapBound = 64 * sizeMiB
	// maxInFlight bounds the bytes a paused download may have in flight
	// between the backend and the client: kernel socket buffers on three
	// loopback hops (up to tcp_rmem's max each) plus the tunnel's windows.
	maxInFlight = 128 * sizeMiB
)

// heapBoundFor is the HeapInuse bound for a transfer of size bytes: under
// heapBound, and under half the body, so a relay that buffered it fails.
func heapBoundFor(size int64) uint64 { return min(uint64(heapBound), uint64(size/2)) }

// largeSize is the size of the big transfers: a GiB, except under the race
// detector, which relays about 25 MiB/s on two cores. `make test` runs the
// whole suite with -race (these tests with 128 MiB, still 4× the heap
// bound's slack) and then these tests again without it, with a GiB.
func largeSize(t *testing.T) int64 {
	if raceEnabled {
		t.Logf("race detector on: 128 MiB instead of 1 GiB; `make test` runs the GiB without -race")
		return 128 * sizeMiB
	}
	return sizeGiB
}

// TestBodyUpload streams uploads through gateway, tunnel and agent to
// /echo, which hashes what it receives: the backend must see every byte, in
// order, with the framing the client chose, and nobody may buffer the body.
func TestBodyUpload(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int64
		known bool // send Content-Length; otherwise chunked
	}{
		{"chunked", largeSize(t), false},
		{"content-length", largeSize(t), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig, c := demoRig(t)
			want := hex.EncodeToString(bytesSHA256(tc.size))

			body := io.Reader(demoapp.NewBytesReader(tc.size))
			if !tc.known {
				body = io.NopCloser(body) // hides the length: chunked
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			req := appRequest(t, ctx, "POST", rig.URL+"/echo", body)
			if tc.known {
				req.ContentLength = tc.size
			}

			heap := watchHeap()
			start := time.Now()
			res, b := doAndRead(t, c, req)
			took := time.Since(start)
			peak := heap.Stop()

			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			e := decodeEcho(t, b)
			if e.BodyBytes != tc.size || e.BodySHA256 != want {
				t.Errorf("backend got %d bytes with sha256 %s, want %d bytes with %s", e.BodyBytes, e.BodySHA256, tc.size, want)
			}
			wantCL := int64(-1)
			if tc.known {
				wantCL = tc.size
			}
			if e.ContentLength != wantCL {
				t.Errorf("backend saw Content-Length %d, want %d", e.ContentLength, wantCL)
			}
			logTransfer(t, "upload "+tc.name, tc.size, took, peak)
			if peak > heapBoundFor(tc.size) {
				t.Errorf("HeapInuse peaked at %d MiB during the upload; want under %d MiB (the body must stream)", peak/sizeMiB, heapBoundFor(tc.size)/sizeMiB)
			}
		})
	}
}

// TestBodyDownload1GiB downloads a GiB from /bytes/N, hashing it while it is
// read, and checks that it arrived whole and unbuffered.
func TestBodyDownload1GiB(t *testing.T) {
	size := largeSize(t)
	rig, c := demoRig(t)
	want := bytesSHA256(size)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req := appRequest(t, ctx, "GET", rig.URL+"/bytes/"+strconv.FormatInt(size, 10), nil)
	heap := watchHeap()
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		heap.Stop()
		t.Fatal(err)
	}
	defer res.Body.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, res.Body, make([]byte, 64<<10))
	took := time.Since(start)
	peak := heap.Stop()
	if err != nil {
		t.Fatalf("download broke off after %d bytes: %v", n, err)
	}
	if res.StatusCode != http.StatusOK || res.ContentLength != size {
		t.Errorf("status %d, Content-Length %d; want 200 and %d", res.StatusCode, res.ContentLength, size)
	}
	if n != size || !bytes.Equal(h.Sum(nil), want) {
		t.Errorf("got %d bytes with sha256 %x, want %d bytes with %x", n, h.Sum(nil), size, want)
	}
	logTransfer(t, "download", size, took, peak)
	if peak > heapBoundFor(size) {
		t.Errorf("HeapInuse peaked at %d MiB during the download; want under %d MiB (the body must stream)", peak/sizeMiB, heapBoundFor(size)/sizeMiB)
	}
}

// TestBodyBackpressure pauses a client on a large download: the backend must
// be held back by flow control instead of the gateway or agent buffering
// what the client does not read. After the pause the download resumes and
// arrives whole.
func TestBodyBackpressure(t *testing.T) {
	pausedSize := largeSize(t) / 2
	big := newBigBackend(t, pausedSize)
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "big", Hosts: []string{appHost}, Backend: testrig.MustURL(t, big.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	heap := watchHeap()
	defer heap.Stop()
	res, h, read, written := pausedDownload(t, ctx, c, rig.URL+"/big", big)
	pausedPeak := heap.Peak()
	t.Logf("paused: the backend wrote %d MiB while the client read %d MiB; HeapInuse peak %.1f MiB",
		written/sizeMiB, read/sizeMiB, float64(pausedPeak)/sizeMiB)
	if written >= pausedSize {
		t.Fatalf("the backend wrote all %d MiB to a paused client: something buffers the response", pausedSize/sizeMiB)
	}
	if written-read > maxInFlight {
		t.Errorf("%d MiB in flight between backend and paused client; want at most %d MiB", (written-read)/sizeMiB, maxInFlight/sizeMiB)
	}
	if pausedPeak > pausedHeapBound {
		t.Errorf("HeapInuse peaked at %d MiB while the client was paused; want under %d MiB", pausedPeak/sizeMiB, pausedHeapBound/sizeMiB)
	}

	// Resume.
	n, err := io.CopyBuffer(h, res.Body, make([]byte, 64<<10))
	if err != nil {
		t.Fatalf("download broke off after resuming: %v", err)
	}
	want := bytesSHA256(pausedSize)
	if read+n != pausedSize || !bytes.Equal(h.Sum(nil), want) {
		t.Errorf("got %d bytes with sha256 %x, want %d bytes with %x", read+n, h.Sum(nil), pausedSize, want)
	}
}

// pausedDownload starts a download from big, reads its first MiB so that
// the whole path is known to be flowing, then stops reading and waits until
// the backend is held back. It returns the response (closed at the end of
// the test), the hash of what was read, and the bytes read and written.
func pausedDownload(t *testing.T, ctx context.Context, c *http.Client, url string, big *bigBackend) (*http.Response, hash.Hash, int64, int64) {
	t.Helper()
	res, err := c.Do(appRequest(t, ctx, "GET", url, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	h := sha256.New()
	read, err := io.CopyN(h, res.Body, sizeMiB)
	if err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	return res, h, read, big.waitStalled(t, ctx)
}

// TestNoHeadOfLineBlocking pauses a large download and, on the same single
// agent session, runs 50 small exchanges concurrently: each exchange has
// its own flow control, so none of them may wait for the paused one.
func TestNoHeadOfLineBlocking(t *testing.T) {
	const size = 128 * sizeMiB
	big := newBigBackend(t, size)
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "big", Hosts: []string{appHost}, Backend: testrig.MustURL(t, big.URL)},
	}})
	rig.StartAgent(nil) // Connections: 1
	if n := rig.G.Registry().Count(testrig.Group); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	c := rig.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	res, h, read, written := pausedDownload(t, ctx, c, rig.URL+"/big", big)
	if written >= size {
		t.Fatalf("the backend wrote all %d MiB: the download is not held back, so it proves nothing", size/sizeMiB)
	}
	t.Logf("paused download: %d MiB written by the backend, %d MiB read by the client", written/sizeMiB, read/sizeMiB)

	// The download is stuck on a full window; 50 small exchanges share its
	// session.
	const small = 50
	smallCtx, smallCancel := context.WithTimeout(ctx, time.Minute)
	defer smallCancel()
	var wg sync.WaitGroup
	errs := make(chan error, small)
	for i := range small {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- checkSmallEcho(c, appRequest(t, smallCtx, "POST", rig.URL+"/echo",
				strings.NewReader(fmt.Sprintf("small request %d", i))), fmt.Sprintf("small request %d", i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if w := big.written.Load(); w >= size {
		t.Errorf("the paused download finished early (%d bytes written)", w)
	}

	n, err := io.CopyBuffer(h, res.Body, make([]byte, 64<<10))
	if err != nil {
		t.Fatalf("download broke off after resuming: %v", err)
	}
	want := bytesSHA256(size)
	if read+n != size || !bytes.Equal(h.Sum(nil), want) {
		t.Errorf("got %d bytes with sha256 %x, want %d bytes with %x", read+n, h.Sum(nil), size, want)
	}
}

// checkSmallEcho sends req (whose body is body) to /echo and checks the answer.
func checkSmallEcho(c *http.Client, req *http.Request, body string) error {
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%q: read: %w", body, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%q: status %d: %s", body, res.StatusCode, b)
	}
	var e demoapp.Echo
	if err := json.Unmarshal(b, &e); err != nil {
		return fmt.Errorf("%q: %w", body, err)
	}
	sum := sha256.Sum256([]byte(body))
	if e.BodySHA256 != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("%q: backend got a body with sha256 %s", body, e.BodySHA256)
	}
	return nil
}

// bigBackend serves size demoapp bytes at /big, counting what it wrote, and
// the demo app on every other path.
type bigBackend struct {
	URL     string
	size    int64
	written atomic.Int64
}

func newBigBackend(t *testing.T, size int64) *bigBackend {
	b := &bigBackend{size: size}
	mux := http.NewServeMux()
	mux.Handle("/", demoapp.New())
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		src := demoapp.NewBytesReader(size)
		buf := make([]byte, 32<<10)
		for {
			n, _ := src.Read(buf)
			if n == 0 {
				return
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			b.written.Add(int64(n))
		}
	})
	b.URL = startLoopbackBackend(t, mux).URL
	return b
}

// waitStalled waits until the backend's writes stop advancing (flow control
// holds it back) and returns how much it wrote. The wait is bounded by ctx;
// no duration is asserted.
func (b *bigBackend) waitStalled(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	const stillTicks = 20 // unchanged for this many ticks in a row
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, still := int64(-1), 0
	for still < stillTicks {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the backend never stalled: %d of %d bytes written", b.written.Load(), b.size)
		}
		if w := b.written.Load(); w == last {
			still++
		} else {
			last, still = w, 0
		}
	}
	return last
}

// heapWatch samples runtime.MemStats.HeapInuse until stopped and keeps the
// peak. The whole process is measured: client, gateway, agent and backend.
type heapWatch struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func watchHeap() *heapWatch {
	runtime.GC() // start from live data only, not earlier tests' garbage
	w := &heapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	w.sample()
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				w.sample()
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

func (w *heapWatch) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for {
		p := w.peak.Load()
		if ms.HeapInuse <= p || w.peak.CompareAndSwap(p, ms.HeapInuse) {
			return
		}
	}
}

// Peak is the highest HeapInuse seen so far, sampled now as well.
func (w *heapWatch) Peak() uint64 {
	w.sample()
	return w.peak.Load()
}

// Stop ends the sampling and returns the peak.
func (w *heapWatch) Stop() uint64 {
	w.once.Do(func() {
		close(w.stop)
		<-w.done
	})
	return w.Peak()
}

func logTransfer(t *testing.T, what string, size int64, took time.Duration, peak uint64) {
	t.Helper()
	t.Logf("%s of %d MiB: %v (%.0f MiB/s), HeapInuse peak %.1f MiB",
		what, size/sizeMiB, took.Round(time.Millisecond), float64(size)/sizeMiB/took.Seconds(), float64(peak)/sizeMiB)
}

// bytesSHA256 is demoapp.BytesSHA256(n), computed once per n: hashing a
// GiB takes seconds under -race.
func bytesSHA256(n int64) []byte {
	v, _ := bytesSums.LoadOrStore(n, sync.OnceValue(func() [32]byte { return demoapp.BytesSHA256(n) }))
	sum := v.(func() [32]byte)()
	return sum[:]
}

var bytesSums sync.Map // int64 → func() [32]byte
