package bench

// The bench backend: what every scenario calls, at every path.
//
//	GET  /bytes/N                 N deterministic bytes (the demo app)        small, 1k, 64k, download, burst
//	POST /upload                  reads and drops the body, 204               upload
//	GET  /ws                      WebSocket echo (the demo app)               ws
//	GET  /sse?interval=D          one event every D until the client leaves:  sse
//	                              "data: <send time, Unix ns>\n\n"
//	GET  /longpoll?round=R        held until round R is released (or max=D    longpoll
//	                              passes, default 2m), then 64 bytes
//	GET  /longpoll/held?round=R   how many of round R are held now (text)     longpoll
//	POST /longpoll/release?round=R  answers every held one of round R, 204    longpoll

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/demoapp"
)

// Limits of the backend's query parameters.
const (
	minSSEInterval     = 100 * time.Microsecond
	defaultLongpollMax = 2 * time.Minute
	// longpollBody is the size of a released long poll's answer.
	longpollBody = 64
)

// BackendHandler is the backend of every scenario (see the table above).
func BackendHandler() http.Handler {
	polls := &pollRounds{rounds: make(map[string]*pollRound)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", serveUpload)
	mux.HandleFunc("GET /sse", serveSSE)
	mux.HandleFunc("GET /longpoll", polls.serveHold)
	mux.HandleFunc("GET /longpoll/held", polls.serveHeld)
	mux.HandleFunc("POST /longpoll/release", polls.serveRelease)
	mux.Handle("/", demoapp.New())
	return mux
}

func serveUpload(w http.ResponseWriter, r *http.Request) {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	for {
		_, err := r.Body.Read(*bp)
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveSSE sends an event every ?interval= (at least 100µs) carrying the
// time it was made, in Unix nanoseconds, until the client goes away. A
// ticker paces it: when the path cannot take an event in time, ticks are
// dropped rather than queued, so the events per second fall and each
// event's latency still counts from the moment it was made.
func serveSSE(w http.ResponseWriter, r *http.Request) {
	interval, err := time.ParseDuration(r.URL.Query().Get("interval"))
	if err != nil || interval < minSSEInterval {
		http.Error(w, fmt.Sprintf("interval %q: want a duration of at least %v", r.URL.Query().Get("interval"), minSSEInterval), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		buf = appendSSEEvent(buf[:0], time.Now())
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func appendSSEEvent(b []byte, t time.Time) []byte {
	b = append(b, "data: "...)
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	return append(b, "\n\n"...)
}

// parseSSEData reads the send time out of an event's data line; ok is
// false for any other line.
func parseSSEData(line []byte) (sent time.Time, ok bool) {
	v, found := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: "))
	if !found {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// pollRounds holds the long polls of every round.
type pollRounds struct {
	mu     sync.Mutex
	rounds map[string]*pollRound // by round id; guarded by mu; a few per run, never pruned
}

// pollRound is one round's long polls.
type pollRound struct {
	released chan struct{} // closed by the release
	mu       sync.Mutex
	held     int  // guarded by mu
	done     bool // released; guarded by mu
}

func (p *pollRounds) round(id string) *pollRound {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.rounds[id]
	if !ok {
		r = &pollRound{released: make(chan struct{})}
		p.rounds[id] = r
	}
	return r
}

// serveHold holds the request until its round is released, ?max= passes
// or the client leaves, then answers 64 bytes (or 504 after max).
func (p *pollRounds) serveHold(w http.ResponseWriter, r *http.Request) {
	maxWait := defaultLongpollMax
	if s := r.URL.Query().Get("max"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			http.Error(w, fmt.Sprintf("max %q: want a positive duration", s), http.StatusBadRequest)
			return
		}
		maxWait = d
	}
	pr := p.round(r.URL.Query().Get("round"))
	pr.mu.Lock()
	pr.held++
	pr.mu.Unlock()
	defer func() {
		pr.mu.Lock()
		pr.held--
		pr.mu.Unlock()
	}()
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case <-pr.released:
	case <-t.C:
		http.Error(w, "not released within "+maxWait.String(), http.StatusGatewayTimeout)
		return
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(longpollBody))
	_, _ = w.Write(bytes.Repeat([]byte("r"), longpollBody))
}

func (p *pollRounds) serveHeld(w http.ResponseWriter, r *http.Request) {
	pr := p.round(r.URL.Query().Get("round"))
	pr.mu.Lock()
	n := pr.held
	pr.mu.Unlock()
	_, _ = io.WriteString(w, strconv.Itoa(n))
}

func (p *pollRounds) serveRelease(w http.ResponseWriter, r *http.Request) {
	pr := p.round(r.URL.Query().Get("round"))
	pr.mu.Lock()
	if !pr.done {
		pr.done = true
		close(pr.released)
	}
	pr.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}
