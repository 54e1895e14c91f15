package demoapp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxEchoDelay bounds /echo?delay so a typo cannot park a handler for days.
const maxEchoDelay = 10 * time.Minute

// Echo is the JSON body /echo answers with: the request as the backend received it. The body is
// hashed as it streams in and never held in memory, so multi-GiB uploads are fine.
type Echo struct {
	Method string `json:"method"`
	// Path is the decoded URL path; URI is the request target exactly as received.
	Path string `json:"path"`
	URI  string `json:"uri"`
	// Query is the raw query string, without the leading '?'.
	Query string `json:"query"`
	Host  string `json:"host"`
	Proto string `json:"proto"`
	// RemoteAddr is the address of whoever connected to the backend (the agent, behind Sallyport).
	RemoteAddr string      `json:"remote_addr"`
	Headers    http.Header `json:"headers"`
	// Trailers holds request trailers, which are only known once the body has been read.
	Trailers http.Header `json:"trailers,omitempty"`
	// ContentLength is the request's declared length; -1 means unknown (chunked).
	ContentLength int64 `json:"content_length"`
	// BodyBytes and BodySHA256 (lowercase hex) describe the body actually received.
	BodyBytes  int64  `json:"body_bytes"`
	BodySHA256 string `json:"body_sha256"`
}

// serveEcho reads the whole body, then optionally waits ?delay=, then answers with ?status= (default
// 200) and an Echo.
func (a *app) serveEcho(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := http.StatusOK
	if s := q.Get("status"); s != "" {
		var err error
		if status, err = parseStatus(s); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	var delay time.Duration
	if s := q.Get("delay"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxEchoDelay {
			http.Error(w, fmt.Sprintf("delay %q: want a duration from 0 to %v", s, maxEchoDelay), http.StatusBadRequest)
			return
		}
		delay = d
	}

	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		// The client went away or sent a broken body; nobody is left to answer.
		return
	}
	if delay > 0 {
		if err := a.sleep(r.Context(), delay); err != nil {
			return
		}
	}

	e := Echo{
		Method:        r.Method,
		Path:          r.URL.Path,
		URI:           r.RequestURI,
		Query:         r.URL.RawQuery,
		Host:          r.Host,
		Proto:         r.Proto,
		RemoteAddr:    r.RemoteAddr,
		Headers:       r.Header,
		ContentLength: r.ContentLength,
		BodyBytes:     n,
		BodySHA256:    hex.EncodeToString(h.Sum(nil)),
	}
	if len(r.Trailer) > 0 {
		e.Trailers = r.Trailer
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(e)
}
