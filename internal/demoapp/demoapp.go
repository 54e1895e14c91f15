// Package demoapp is the sample private backend that `sallyport demo` publishes through the relay and
// that end-to-end tests call through the gateway. It is an ordinary http.Handler with no Sallyport
// imports: everything it shows is what a real internal app would see.
//
// Routes:
//
//	GET  /               HTML page describing the request as the backend received it (Title)
//	ANY  /echo, /echo/…  JSON description of the request (Echo); ?status=NNN, ?delay=100ms
//	GET  /stream         Server-Sent Events; ?n= (default 10, max 10000), ?interval= (default 1s, min 1ms)
//	GET  /ws             WebSocket echo of every text and binary message (1 MiB per message)
//	GET  /bytes/N        N deterministic bytes (see NewBytesReader, BytesSHA256); ?chunked=1
//	ANY  /status/NNN     status NNN with a one-line body
//	GET  /healthz        200 "ok"
//
// Anything else is a plain-text 404.
package demoapp

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// New returns the demo backend's handler.
func New() http.Handler {
	return new(app).handler()
}

// app holds what the handlers share. Its zero value serves with real timers.
type app struct {
	// wait pauses for d or until ctx is done, whichever comes first, and returns ctx.Err() in the
	// latter case. It paces /stream and implements /echo?delay. Nil means a real timer (sleepCtx);
	// tests replace it to step the handlers without sleeping.
	wait func(ctx context.Context, d time.Duration) error
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.serveIndex)
	mux.HandleFunc("/echo", a.serveEcho)
	mux.HandleFunc("/echo/", a.serveEcho)
	mux.HandleFunc("GET /stream", a.serveStream)
	mux.HandleFunc("GET /ws", a.serveWS)
	mux.HandleFunc("GET /bytes/{n}", a.serveBytes)
	mux.HandleFunc("/status/{code}", serveStatus)
	mux.HandleFunc("GET /healthz", serveHealthz)
	return mux
}

func (a *app) sleep(ctx context.Context, d time.Duration) error {
	if a.wait != nil {
		return a.wait(ctx, d)
	}
	return sleepCtx(ctx, d)
}

// sleepCtx waits for d or until ctx is done; it returns ctx.Err() in the latter case.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok"))
}

// serveStatus replies with the status code named in the path and a one-line body such as
// "418 I'm a teapot". Bodies are dropped for codes that cannot carry one (204, 304).
func serveStatus(w http.ResponseWriter, r *http.Request) {
	code, err := parseStatus(r.PathValue("code"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "%d %s\n", code, http.StatusText(code))
}

// parseStatus accepts final status codes 200–599. Informational codes are refused because a
// handler that writes only a 1xx still ends in an implicit 200.
func parseStatus(s string) (int, error) {
	code, err := strconv.Atoi(s)
	if err != nil || code < 200 || code > 599 {
		return 0, fmt.Errorf("status %q: want a number from 200 to 599", s)
	}
	return code, nil
}
