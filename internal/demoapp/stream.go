package demoapp

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Limits of /stream's query parameters.
const (
	defaultStreamEvents   = 10
	maxStreamEvents       = 10000
	defaultStreamInterval = time.Second
	minStreamInterval     = time.Millisecond
)

// serveStream sends ?n= Server-Sent Events, the first at once and the rest ?interval= apart, each
//
//	id: k
//	data: {"seq":k,"time":"<RFC 3339 with nanoseconds>"}
//
// with k counting from 1, flushed on its own so that it reaches the client before the next one is
// made. It stops early when the client goes away. n is capped at 10000 and interval raised to 1ms.
func (a *app) serveStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := defaultStreamEvents
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			http.Error(w, fmt.Sprintf("n %q: want a whole number from 0 to %d", s, maxStreamEvents), http.StatusBadRequest)
			return
		}
		n = min(v, maxStreamEvents)
	}
	interval := defaultStreamInterval
	if s := q.Get("interval"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			http.Error(w, fmt.Sprintf("interval %q: want a duration such as 250ms", s), http.StatusBadRequest)
			return
		}
		interval = max(d, minStreamInterval)
	}

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // ask any buffering proxy in between to pass events through
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}

	rc := http.NewResponseController(w)
	ctx := r.Context()
	var buf []byte
	for k := 1; k <= n; k++ {
		if k > 1 {
			if err := a.sleep(ctx, interval); err != nil {
				return
			}
		}
		buf = appendEvent(buf[:0], k, time.Now())
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// appendEvent appends one SSE event (with its blank-line terminator) to b.
func appendEvent(b []byte, seq int, t time.Time) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, "\ndata: {\"seq\":"...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ",\"time\":\""...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, "\"}\n\n"...)
}
