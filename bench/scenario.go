package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ScenarioNames lists every scenario, in the order they run by default.
//
//	small     GET /bytes/64, a 64 B body
//	1k        GET /bytes/1024
//	64k       GET /bytes/65536
//	download  GET /bytes/N, N = TransferSize (100 MiB); figure of merit MB/s
//	upload    POST /upload with a TransferSize body, answered 204
//	sse       Concurrency event streams, one event per SSEInterval each;
//	          events/s and each event's latency from the backend's clock
//	ws        Concurrency WebSockets, 64 B messages echoed; round trips/s
//	longpoll  Longpoll GETs held open by the backend at once, then released;
//	          errors and RSS growth per held exchange
//	burst     Burst concurrent small GETs, then sequential small GETs whose
//	          latency is measured, again and again
var ScenarioNames = []string{"small", "1k", "64k", "download", "upload", "sse", "ws", "longpoll", "burst"}

// DefaultScenarios are what Config.Scenarios' zero value runs.
var DefaultScenarios = ScenarioNames

// QuickScenarios are the scenarios of `sallyport bench --quick`.
var QuickScenarios = []string{"small", "1k", "download"}

// requestDrain is how long the exchanges of a request scenario still
// running at the end of a round may finish (see load.drain).
const requestDrain = time.Second

// Scenario kinds: what one counted exchange is, and the figure of merit.
const (
	kindRequest  = "request"  // a GET; req/s
	kindTransfer = "transfer" // one large body; MB/s
	kindEvent    = "event"    // one server-sent event; events/s and delivery latency
	kindMessage  = "message"  // one WebSocket echo round trip; round trips/s
	kindHeld     = "held"     // one long poll held, then answered; errors and RSS per held exchange
	kindBurst    = "burst"    // one sequential GET right after a burst; latency
)

// wsMessageBytes is the size of the ws scenario's messages.
const wsMessageBytes = 64

// scenario is one kind of exchange driven at every path.
type scenario struct {
	name      string
	kind      string
	method    string
	path      string // request path, same on every path
	reqBytes  int64  // request body size (0: none)
	respBytes int64  // expected response body size
}

func newScenario(name string, transferSize int64) (scenario, error) {
	get := func(n int64, kind string) scenario {
		return scenario{name: name, kind: kind, method: "GET", path: "/bytes/" + strconv.FormatInt(n, 10), respBytes: n}
	}
	switch name {
	case "small":
		return get(64, kindRequest), nil
	case "1k":
		return get(1<<10, kindRequest), nil
	case "64k":
		return get(64<<10, kindRequest), nil
	case "download":
		return get(transferSize, kindTransfer), nil
	case "upload":
		return scenario{name: name, kind: kindTransfer, method: "POST", path: "/upload", reqBytes: transferSize}, nil
	case "sse":
		return scenario{name: name, kind: kindEvent, method: "GET", path: "/sse"}, nil
	case "ws":
		return scenario{name: name, kind: kindMessage, method: "GET", path: "/ws", reqBytes: wsMessageBytes, respBytes: wsMessageBytes}, nil
	case "longpoll":
		return scenario{name: name, kind: kindHeld, method: "GET", path: "/longpoll", respBytes: longpollBody}, nil
	case "burst":
		return get(64, kindBurst), nil
	}
	return scenario{}, fmt.Errorf("bench: unknown scenario %q (have %s)", name, strings.Join(ScenarioNames, ", "))
}

// scenarios resolves the configured scenario names.
func (c *Config) scenarios() ([]scenario, error) {
	names := c.Scenarios
	if len(names) == 0 {
		names = DefaultScenarios
	}
	out := make([]scenario, 0, len(names))
	seen := make(map[string]bool)
	for _, n := range names {
		n = strings.TrimSpace(n)
		if seen[n] {
			continue
		}
		seen[n] = true
		sc, err := newScenario(n, c.transferSize())
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func (s scenario) transfer() bool { return s.kind == kindTransfer }

// openLoopKind reports whether Config.Rate drives the scenarios of kind:
// the request scenarios and ws. The others keep their own pace (transfers
// closed loop, sse the backend's ticks, longpoll one hold, burst its
// sequence).
func openLoopKind(kind string) bool { return kind == kindRequest || kind == kindMessage }

// settingKinds holds, for each Config setting that only some scenarios
// use, whether the scenarios of a kind use it (see SettingScenarios).
var settingKinds = map[string]func(kind string) bool{
	"Rate":                openLoopKind,
	"Concurrency":         func(k string) bool { return k == kindRequest || k == kindEvent || k == kindMessage },
	"TransferConcurrency": func(k string) bool { return k == kindTransfer },
	"TransferSize":        func(k string) bool { return k == kindTransfer },
	"SSEInterval":         func(k string) bool { return k == kindEvent },
	"Longpoll":            func(k string) bool { return k == kindHeld },
	"Burst":               func(k string) bool { return k == kindBurst },
	// A long poll holds its exchanges once: no rounds, no warm-up, and
	// it takes as long as the hold takes.
	"Duration": func(k string) bool { return k != kindHeld },
	"Rounds":   func(k string) bool { return k != kindHeld },
	"Warmup":   func(k string) bool { return k != kindHeld },
}

// SettingScenarios lists, for each Config setting (by field name) that
// applies to some scenarios only, the scenarios it applies to, in
// ScenarioNames order; a setting given for a run without any of them would
// change nothing. Settings not listed apply to every scenario.
func SettingScenarios(setting string) []string {
	applies, ok := settingKinds[setting]
	if !ok {
		return ScenarioNames
	}
	var out []string
	for _, name := range ScenarioNames {
		if sc, err := newScenario(name, 1); err == nil && applies(sc.kind) {
			out = append(out, name)
		}
	}
	return out
}

// hasThroughput reports whether the scenario's exchanges per second (or
// MB/s) are its figure of merit, so that a ratio to direct means something.
func (s scenario) hasThroughput() bool { return s.kind != kindHeld && s.kind != kindBurst }

// bodyBytes is the size of the body the scenario moves per exchange.
func (s scenario) bodyBytes() int64 { return s.reqBytes + s.respBytes }

// rounds is how many rounds each path runs: a long poll round holds its
// exchanges once, and a second one would only measure memory the first
// already grew.
func (s scenario) rounds(cfg *Config) int {
	if s.kind == kindHeld {
		return 1
	}
	return cfg.rounds()
}

// warmup is the scenario's unmeasured warm-up per path; none for long
// polls, whose memory growth must start from a process that never held them.
func (s scenario) warmup(cfg *Config) time.Duration {
	if s.kind == kindHeld {
		return 0
	}
	return cfg.warmup()
}

// concurrency is the number of exchanges in flight at once that the
// scenario drives, and rate the exchanges (events) per second it
// schedules; 0 for closed loop.
func (s scenario) concurrency(cfg *Config) (workers int, rate float64) {
	switch s.kind {
	case kindTransfer:
		return cfg.transferConcurrency(), 0
	case kindEvent:
		return cfg.concurrency(), float64(cfg.concurrency()) * float64(time.Second) / float64(cfg.sseInterval())
	case kindHeld:
		return cfg.longpoll(), 0
	case kindBurst:
		return 1, 0
	}
	return cfg.concurrency(), cfg.Rate
}

// load is the HTTP load of scenario s at path p.
func (s scenario) load(cfg *Config, p path) *load {
	workers, rate := s.concurrency(cfg)
	l := &load{
		url: p.base + s.path, host: p.host, method: s.method,
		reqBytes: s.reqBytes, respBytes: s.respBytes,
		workers: workers, rate: rate, drain: requestDrain,
	}
	if s.transfer() {
		// A 100 MiB body may need seconds more: cut it off instead.
		l.drain = 0
	}
	return l
}

// driver runs one scenario's rounds at one path. One is made per scenario
// and path and closed when the scenario ends, so it may keep connections
// from round to round.
type driver interface {
	// round drives load for about d, recording into run, and returns the
	// time measured.
	round(ctx context.Context, d time.Duration, run *pathRun, progress func(*recorder) func()) time.Duration
	close()
}

// driver makes the driver of s at path p.
func (s scenario) driver(cfg *Config, st *stack, lg *loader, p path) driver {
	l := s.load(cfg, p)
	switch s.kind {
	case kindEvent:
		return &sseDriver{lg: lg, load: l, interval: cfg.sseInterval()}
	case kindMessage:
		return &wsDriver{lg: lg, load: l}
	case kindHeld:
		return &longpollDriver{st: st, load: l, log: cfg.log(), heldProfile: cfg.HeldProfile}
	case kindBurst:
		return newBurstDriver(l, cfg.burst())
	}
	return &httpDriver{lg: lg, load: l}
}

// httpDriver drives the request and transfer scenarios.
type httpDriver struct {
	lg   *loader
	load *load
}

func (d *httpDriver) round(ctx context.Context, dur time.Duration, run *pathRun, progress func(*recorder) func()) time.Duration {
	return d.lg.run(ctx, d.load, dur, run.rec, progress)
}

func (d *httpDriver) close() {}
