package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// probeOnly answers the harness's probe (GET /bytes/64) with the bench
// backend and hands every other request to next.
func probeOnly(next http.HandlerFunc) http.Handler {
	backend := BackendHandler()
	var probed atomic.Bool
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bytes/64" && probed.CompareAndSwap(false, true) {
			backend.ServeHTTP(w, r)
			return
		}
		next(w, r)
	})
}

// TestOpenLoopBehindRate: a path slower than the open loop's rate. 1,000
// exchanges/s for 100 ms schedules exactly 100; two workers, and a target
// that answers each request only 150 ms after it came, after the round.
// Those two are all that may be sent (none after the round's end), the 98
// never sent count as unfinished, so completed, failed and unfinished add
// up to what was scheduled, and the bytes that came after the round do not
// count toward MB/s. The table says the path fell behind.
func TestOpenLoopBehindRate(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(probeOnly(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		select {
		case <-time.After(150 * time.Millisecond): // the round is 100 ms: this answers after it
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(make([]byte, 64))
	}))
	defer srv.Close()
	rep, md := runLogged(t, Config{
		Scenarios: []string{"small"}, Duration: 100 * time.Millisecond, Rounds: 1, Warmup: -1,
		Concurrency: 2, Rate: 1000, Target: srv.URL,
	})
	r := rep.Results[0]
	if got := requests.Load(); got != 2 {
		t.Errorf("the target saw %d requests, want 2: exchanges started after the round ended", got)
	}
	if sum := r.Exchanges + r.Errors + r.Unfinished; sum != 100 {
		t.Errorf("%d exchanges + %d errors + %d unfinished = %d, want the 100 scheduled", r.Exchanges, r.Errors, r.Unfinished, sum)
	}
	if r.MBPerS != 0 {
		t.Errorf("%v MB/s from bytes that came after the round", r.MBPerS)
	}
	if want := "small target: behind the open loop's rate: 100 of 100"; !strings.Contains(md, want) {
		t.Errorf("table without %q", want)
	}
}

// TestErrorPagesNotThroughput: a target that answers the scenario with
// 500 and a large error page moves no body at all: 0 MB/s, every exchange
// an error, and no CPU per GiB of body.
func TestErrorPagesNotThroughput(t *testing.T) {
	page := strings.Repeat("x", 32<<10)
	srv := httptest.NewServer(probeOnly(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, page)
	}))
	defer srv.Close()
	rep, _ := runLogged(t, Config{
		Scenarios: []string{"small", "download"}, Duration: 100 * time.Millisecond, Rounds: 1, Warmup: -1,
		Concurrency: 2, TransferConcurrency: 2, TransferSize: 1 << 20, Target: srv.URL,
	})
	for _, r := range rep.Results {
		if r.Errors == 0 || r.Exchanges != 0 || r.MBPerS != 0 {
			t.Errorf("%s: %d errors, %d exchanges, %v MB/s; want errors only and 0 MB/s", r.Scenario, r.Errors, r.Exchanges, r.MBPerS)
		}
		if p := r.Processes[procHarness]; p.CPUSPerGiB != nil {
			t.Errorf("%s: %v CPU s per GiB of error pages", r.Scenario, *p.CPUSPerGiB)
		}
	}
}

// hangingTarget takes every request but the probe and never answers it.
func hangingTarget(t *testing.T) string {
	srv := httptest.NewServer(probeOnly(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestUnansweredEventStreams: event streams asked for and never answered
// count as unfinished, and the table says nothing completed, rather than
// showing a path with no events and no errors.
func TestUnansweredEventStreams(t *testing.T) {
	rep, md := runLogged(t, Config{
		Scenarios: []string{"sse"}, Duration: 100 * time.Millisecond, Rounds: 1, Warmup: -1,
		Concurrency: 3, Target: hangingTarget(t),
	})
	r := rep.Results[0]
	if r.Exchanges != 0 || r.Errors != 0 || r.Unfinished != 3 {
		t.Errorf("sse: %d exchanges, %d errors, %d unfinished; want 3 streams unfinished", r.Exchanges, r.Errors, r.Unfinished)
	}
	if !strings.Contains(md, "sse target: nothing completed or failed; 3 exchanges still running") {
		t.Error("no note that the event streams were never answered")
	}
}

// TestUnansweredWebSocketHandshakes: the WebSocket handshakes made before
// a round's clock starts are bounded, so a target that never answers them
// does not hold the run; they count as errors.
func TestUnansweredWebSocketHandshakes(t *testing.T) {
	// Far more than the run needs with the handshakes bounded; without,
	// the run would wait for this.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{
		Scenarios: []string{"ws"}, Duration: 100 * time.Millisecond, Rounds: 1, Warmup: -1,
		Concurrency: 3, Target: hangingTarget(t),
	})
	if err != nil {
		t.Fatalf("%v (the run did not end by itself)", err)
	}
	if r := rep.Results[0]; r.Exchanges != 0 || r.Errors < 3 {
		t.Errorf("ws: %d exchanges, %d errors; want the 3 handshakes failed", r.Exchanges, r.Errors)
	}
}

// TestLongpollNothingHeld: a path that fails every long poll at once.
// The harness does not wait for exchanges that have all ended (it waited
// the whole set-up time, 90 s, when the backend's count could not be
// read either), counts them as errors, and the result still has its
// held field, 0.
func TestLongpollNothingHeld(t *testing.T) {
	srv := httptest.NewServer(probeOnly(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusBadGateway)
	}))
	defer srv.Close()
	// Far more than the run needs; without the fix it would wait 90 s.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{Scenarios: []string{"longpoll"}, Longpoll: 5, Target: srv.URL})
	if err != nil {
		t.Fatalf("%v (the run did not end by itself)", err)
	}
	r := rep.Results[0]
	if r.Errors != 5 || r.Exchanges != 0 {
		t.Errorf("%d errors, %d exchanges; want the 5 long polls failed", r.Errors, r.Exchanges)
	}
	var b strings.Builder
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"held": 0,`) {
		t.Errorf("no \"held\": 0 in the longpoll result:\n%s", b.String())
	}
}
