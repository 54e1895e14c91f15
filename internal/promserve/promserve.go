// Package promserve makes the Prometheus registry of one component (the
// gateway or the agent) and its /metrics handler. Each component has a
// registry of its own, never the global default, so several gateways and
// agents in one process (tests, `sallyport demo`) do not collide.
package promserve

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the standard Go runtime and process
// collectors (go_*, process_*) registered.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus exposition formats. A collector
// that fails is reported in the answer (HTTP 500), not hidden.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.HTTPErrorOnError})
}

// Desc is a shorthand for prometheus.NewDesc without constant labels.
func Desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// LazyCounter is one child of a counter vector with two labels, resolved on
// its first Inc (so that a value never seen makes no series); later Incs
// load it with one atomic read, without a label lookup or an allocation.
// The zero value is ready to use.
type LazyCounter struct {
	p atomic.Pointer[prometheus.Counter]
}

// Inc adds one to the child of vec with label values a and b.
func (l *LazyCounter) Inc(vec *prometheus.CounterVec, a, b string) {
	if c := l.p.Load(); c != nil {
		(*c).Inc()
		return
	}
	l.resolve(vec, a, b).Inc()
}

// resolve is the slow path: one label lookup, once per child.
func (l *LazyCounter) resolve(vec *prometheus.CounterVec, a, b string) prometheus.Counter {
	c := vec.WithLabelValues(a, b)
	l.p.CompareAndSwap(nil, &c)
	return c
}
