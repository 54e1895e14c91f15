package bench

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// TestRunStreamScenariosInProcess drives sse, ws, longpoll and burst
// through a real backend, gateway and agent in this process, with the
// tunnel behind an emulated link.
func TestRunStreamScenariosInProcess(t *testing.T) {
	held := filepath.Join(t.TempDir(), "mem.held")
	rep, md := runLogged(t, Config{
		HeldProfile: held,
		Scenarios:   []string{"sse", "ws", "longpoll", "burst"},
		Duration:    time.Second,
		Rounds:      2,
		Concurrency: 4,
		SSEInterval: 5 * time.Millisecond,
		Longpoll:    200,
		Burst:       5,
		LinkRTT:     2 * time.Millisecond,
		LinkRate:    1e9,
		Log:         zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if len(rep.Results) != 8 {
		t.Fatalf("%d results, want 8", len(rep.Results))
	}
	byName := make(map[string]Result)
	for _, r := range rep.Results {
		byName[r.Scenario+"/"+r.Path] = r
		if r.Errors != 0 || r.Exchanges == 0 || r.P50MS == nil {
			t.Errorf("%s/%s: %d errors %v, %d exchanges, p50 %v", r.Scenario, r.Path, r.Errors, r.ErrorSamples, r.Exchanges, r.P50MS)
		}
	}
	for _, path := range []string{PathDirect, PathRelay} {
		sse := byName["sse/"+path]
		// 4 streams × 200 events/s × 1 s at most: the backend's ticker
		// drops ticks when a stream is slow, it never adds any.
		if sse.Kind != kindEvent || sse.Exchanges > 4*200*1 || sse.Rate != 800 {
			t.Errorf("sse/%s: kind %s, %d events, rate %v; want at most 800 at 800/s", path, sse.Kind, sse.Exchanges, sse.Rate)
		}
		if ws := byName["ws/"+path]; ws.Kind != kindMessage || ws.RatioToDirect == nil || ws.BodyBytes != 2*wsMessageBytes {
			t.Errorf("ws/%s: kind %s, ratio %v, body %d", path, ws.Kind, ws.RatioToDirect, ws.BodyBytes)
		}
		lp := byName["longpoll/"+path]
		if lp.Kind != kindHeld || deref(lp.Held) != 200 || lp.Exchanges != 200 || lp.Concurrency != 200 || lp.RatioToDirect != nil {
			t.Errorf("longpoll/%s: kind %s, %d held, %d exchanges, concurrency %d, ratio %v; want 200 of each, no ratio",
				path, lp.Kind, deref(lp.Held), lp.Exchanges, lp.Concurrency, lp.RatioToDirect)
		}
		// In process, the one process is the harness, and it grew.
		if h := lp.Processes[procHarness]; h.RSSGrowthKiBPerHeld == nil || h.RSSGrowthAfterGCKiBPerHeld == nil {
			t.Errorf("longpoll/%s: no RSS growth for the harness: %+v", path, lp.Processes)
		}
		// The heap profile taken while the long polls were held (gzipped).
		if b, err := os.ReadFile(held + "." + path + "." + procHarness); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("longpoll/%s: heap profile while held: %d bytes, %v", path, len(b), err)
		}
		// And the goroutines then: the harness's client, at least, keeps
		// one per held exchange.
		if b, err := os.ReadFile(held + "." + path + "." + procHarness + heldGoroutinesSuffix); err != nil || !bytes.HasPrefix(b, []byte("goroutine profile: total ")) {
			t.Errorf("longpoll/%s: goroutine profile while held: %v\n%.200s", path, err, b)
		}
		if h := lp.Processes[procHarness]; h.GoroutinesPerHeld == nil || *h.GoroutinesPerHeld < 1 ||
			h.GoStackKiBPerHeld == nil || *h.GoStackKiBPerHeld <= 0 || h.GoHeapKiBPerHeld == nil || *h.GoHeapKiBPerHeld <= 0 {
			t.Errorf("longpoll/%s: Go runtime figures per held exchange %v %v %v", path, h.GoroutinesPerHeld, h.GoStackKiBPerHeld, h.GoHeapKiBPerHeld)
		}
		b := byName["burst/"+path]
		if b.Kind != kindBurst || b.Concurrency != 1 || b.RatioToDirect != nil {
			t.Errorf("burst/%s: kind %s concurrency %d ratio %v", path, b.Kind, b.Concurrency, b.RatioToDirect)
		}
	}
	// The link delays each direction by 1 ms: a relayed exchange takes at
	// least the round trip (a lower bound, which load cannot break).
	if p := byName["burst/"+PathRelay].P50MS; p != nil && *p < 2 {
		t.Errorf("burst relay p50 %v ms with a 2 ms link", *p)
	}
	if s := rep.Settings; s.LinkRTTMS != 2 || s.LinkRTTMeasuredMS < 2 || s.LinkRateMbit != 1000 || s.Longpoll != 200 || s.Burst != 5 || s.SSEIntervalMS != 5 || s.Transport != "grpc" {
		t.Errorf("settings %+v", s)
	}
	if rep.Idle != nil {
		t.Errorf("idle %+v in process; want none", rep.Idle)
	}
	for _, want := range []string{"longpoll relay: 200 held at once, 0 errors; RSS growth per held exchange: harness ",
		"longpoll relay, Go runtime's count after the GC, per held exchange: harness "} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in\n%s", want, md)
		}
	}
}

// TestFitLongpoll: a long poll count asked for that needs more open files
// than allowed is an error naming the remedies; the default is lowered to
// what fits; other scenarios are not concerned.
func TestFitLongpoll(t *testing.T) {
	lp, err := newScenario("longpoll", 0)
	if err != nil {
		t.Fatal(err)
	}
	small, _ := newScenario("small", 0)

	cfg := Config{Longpoll: 10000} // in process: four files per held exchange
	err = cfg.fitLongpoll([]scenario{lp}, 20000)
	for _, want := range []string{"longpoll of 10000 exchanges needs about 40512 open files in one process", "the limit is 20000", "lower --longpoll to 4872", "without --inprocess", "ulimit -Hn"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one containing %q", err, want)
		}
	}
	procs := Config{Longpoll: 10000, Spawn: func(string) *exec.Cmd { return nil }}
	if err := procs.fitLongpoll([]scenario{lp}, 20000); err != nil {
		t.Errorf("process mode, one file per held exchange: %v", err)
	}
	if err := cfg.fitLongpoll([]scenario{small}, 100); err != nil {
		t.Errorf("no longpoll scenario: %v", err)
	}
	if err := cfg.fitLongpoll([]scenario{lp}, 0); err != nil {
		t.Errorf("unknown limit: %v", err)
	}
	def := Config{}
	if err := def.fitLongpoll([]scenario{lp}, 4096); err != nil || def.longpoll() != (4096-filesMargin)/4 {
		t.Errorf("default in process under 4096 files: %v, longpoll %d", err, def.longpoll())
	}
}

// TestProgressLine: the progress writer gets a redrawn line with the
// label and the counts, and a cleared line at the end.
func TestProgressLine(t *testing.T) {
	var b bytes.Buffer // written by the progress goroutine, read after it ended
	cfg := Config{Progress: &b}
	rec := newRecorder()
	rec.exchanges.Add(42)
	rec.held.Add(7)
	stop := cfg.progress("sse relay round 1/3")(rec)
	stop() // the line is drawn once at the start, whatever the ticker does

	out := b.String()
	for _, want := range []string{"\r\x1b[Kbench: ", "sse relay round 1/3", "42 exchanges", "0 errors", "7 held"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress %q has no %q", out, want)
		}
	}
	if !strings.HasSuffix(out, "\r\x1b[K") {
		t.Errorf("progress %q does not end by clearing the line", out)
	}
	if (&Config{}).progress("x") != nil {
		t.Error("progress without a writer")
	}
}

// TestBackendBadInput: the scenario endpoints refuse bad parameters with
// 400 and a message naming the parameter.
func TestBackendBadInput(t *testing.T) {
	srv := httptest.NewServer(BackendHandler())
	defer srv.Close()
	for _, target := range []string{"/sse", "/sse?interval=1us", "/sse?interval=x", "/longpoll?round=a&max=soon", "/longpoll?max=-1s"} {
		res, err := http.Get(srv.URL + target)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("want")) {
			t.Errorf("%s: %d %q", target, res.StatusCode, body)
		}
	}
	// A long poll past its max is answered 504; a released round answers at once.
	res, err := http.Get(srv.URL + "/longpoll?round=r1&max=1ms")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("long poll past max: %d", res.StatusCode)
	}
	if res, err = http.Post(srv.URL+"/longpoll/release?round=r2", "", nil); err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("release: %v %v", res, err)
	}
	res.Body.Close()
	res, err = http.Get(srv.URL + "/longpoll?round=r2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || len(body) != longpollBody {
		t.Errorf("long poll of a released round: %d, %d bytes", res.StatusCode, len(body))
	}
}
