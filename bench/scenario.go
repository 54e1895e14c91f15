package bench

import (
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
var ScenarioNames = []string{"small", "1k", "64k", "download", "upload"}

// DefaultScenarios are what Config.Scenarios' zero value runs.
var DefaultScenarios = ScenarioNames

// QuickScenarios are the scenarios of `sallyport bench --quick`.
var QuickScenarios = []string{"small", "1k", "download"}

// requestDrain is how long the exchanges of a request scenario still
// running at the end of a round may finish (see load.drain).
const requestDrain = time.Second

// scenario is one kind of exchange driven at every path.
type scenario struct {
	name      string
	method    string
	path      string // request path, same on every path
	reqBytes  int64  // request body size (0: none)
	respBytes int64  // expected response body size
	// transfer scenarios move one large body per exchange: they run
	// TransferConcurrency workers, always closed loop, and their figure of
	// merit is MB/s.
	transfer bool
}

func newScenario(name string, transferSize int64) (scenario, error) {
	get := func(n int64, transfer bool) scenario {
		return scenario{name: name, method: "GET", path: "/bytes/" + strconv.FormatInt(n, 10), respBytes: n, transfer: transfer}
	}
	switch name {
	case "small":
		return get(64, false), nil
	case "1k":
		return get(1<<10, false), nil
	case "64k":
		return get(64<<10, false), nil
	case "download":
		return get(transferSize, true), nil
	case "upload":
		return scenario{name: name, method: "POST", path: "/upload", reqBytes: transferSize, transfer: true}, nil
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

// Result kinds.
const (
	kindRequest  = "request"
	kindTransfer = "transfer"
)

func (s scenario) kind() string {
	if s.transfer {
		return kindTransfer
	}
	return kindRequest
}

// bodyBytes is the size of the body the scenario moves per exchange.
func (s scenario) bodyBytes() int64 { return s.reqBytes + s.respBytes }

// load is the load of scenario s at path p.
func (s scenario) load(cfg *Config, p path) *load {
	l := &load{
		url: p.base + s.path, host: p.host, method: s.method,
		reqBytes: s.reqBytes, respBytes: s.respBytes,
		workers: cfg.concurrency(), rate: cfg.Rate, drain: requestDrain,
	}
	if s.transfer {
		// A 100 MiB body may need seconds more: cut it off instead.
		l.workers, l.rate, l.drain = cfg.transferConcurrency(), 0, 0
	}
	return l
}
