package bench

import (
	"bytes"
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
	rep, err := Run(t.Context(), Config{
		Scenarios:   []string{"sse", "ws", "longpoll", "burst"},
		Duration:    400 * time.Millisecond,
		Rounds:      2,
		Concurrency: 4,
		SSEInterval: 5 * time.Millisecond,
		Longpoll:    200,
		Burst:       20,
		LinkRTT:     2 * time.Millisecond,
		LinkRate:    1e9,
		Log:         zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", md.String())
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
		// 4 streams × 200 events/s × 0.4 s, give or take a late start.
		if sse.Kind != kindEvent || sse.Exchanges < 100 || sse.Exchanges > 4*200*0.4+8 || sse.Rate != 800 {
			t.Errorf("sse/%s: kind %s, %d events, rate %v; want about 320 at 800/s", path, sse.Kind, sse.Exchanges, sse.Rate)
		}
		if ws := byName["ws/"+path]; ws.Kind != kindMessage || ws.RatioToDirect == nil || ws.BodyBytes != 2*wsMessageBytes {
			t.Errorf("ws/%s: kind %s, ratio %v, body %d", path, ws.Kind, ws.RatioToDirect, ws.BodyBytes)
		}
		lp := byName["longpoll/"+path]
		if lp.Kind != kindHeld || lp.Held != 200 || lp.Exchanges != 200 || lp.Concurrency != 200 || lp.RatioToDirect != nil {
			t.Errorf("longpoll/%s: kind %s, %d held, %d exchanges, concurrency %d, ratio %v; want 200 of each, no ratio",
				path, lp.Kind, lp.Held, lp.Exchanges, lp.Concurrency, lp.RatioToDirect)
		}
		// In process, the one process is the harness, and it grew.
		if h := lp.Processes[procHarness]; h.RSSGrowthKiBPerHeld == nil {
			t.Errorf("longpoll/%s: no RSS growth for the harness: %+v", path, lp.Processes)
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
	if s := rep.Settings; s.LinkRTTMS != 2 || s.LinkRateMbit != 1000 || s.Longpoll != 200 || s.Burst != 20 || s.SSEIntervalMS != 5 || s.Transport != "grpc" {
		t.Errorf("settings %+v", s)
	}
	if rep.Idle != nil {
		t.Errorf("idle %+v in process; want none", rep.Idle)
	}
	if !strings.Contains(md.String(), "longpoll relay: 200 held at once, 0 errors; RSS growth per held exchange: harness ") {
		t.Errorf("no long poll note in\n%s", md.String())
	}
}
