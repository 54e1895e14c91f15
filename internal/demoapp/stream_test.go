package demoapp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	ID   string
	Data struct {
		Seq  int    `json:"seq"`
		Time string `json:"time"`
	}
}

// readEvent reads the next event; it returns io.EOF at a clean end of stream.
func readEvent(br *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	var lines int
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && lines == 0 && line == "" {
				return ev, io.EOF
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return ev, nil
		}
		lines++
		field, value, _ := strings.Cut(line, ": ")
		switch field {
		case "id":
			ev.ID = value
		case "data":
			if err := json.Unmarshal([]byte(value), &ev.Data); err != nil {
				return ev, err
			}
		default:
			return ev, errors.New("unexpected line " + strconv.Quote(line))
		}
	}
}

// getStream opens target on srv and checks the response head.
func getStream(ctx context.Context, t *testing.T, srv *httptest.Server, target string) *http.Response {
	t.Helper()
	url := srv.URL + target
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s = %d %q", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

func TestStreamEventsInOrder(t *testing.T) {
	srv := newServer(t, New())
	start := time.Now()
	resp := getStream(t.Context(), t, srv, "/stream?interval=1ms&n=5")
	br := bufio.NewReader(resp.Body)
	var prev time.Time
	for k := 1; k <= 5; k++ {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("event %d: %v", k, err)
		}
		if ev.ID != strconv.Itoa(k) || ev.Data.Seq != k {
			t.Fatalf("event %d has id %q seq %d", k, ev.ID, ev.Data.Seq)
		}
		at, err := time.Parse(time.RFC3339Nano, ev.Data.Time)
		if err != nil {
			t.Fatalf("event %d: time: %v", k, err)
		}
		if at.Before(prev) {
			t.Errorf("event %d at %v, before event %d at %v", k, at, k-1, prev)
		}
		prev = at
	}
	if ev, err := readEvent(br); err != io.EOF {
		t.Fatalf("after 5 events: got %+v, %v; want EOF", ev, err)
	}
	if elapsed := time.Since(start); elapsed < 4*time.Millisecond {
		t.Errorf("5 events 1ms apart took only %v", elapsed)
	}
}

// TestStreamFlushesEachEvent holds the handler between events until the test has read the previous
// one, so each event must reach the client before the next is made.
func TestStreamFlushesEachEvent(t *testing.T) {
	const n = 5
	next := make(chan time.Duration) // the handler's wait receives the test's go-ahead
	a := &app{wait: func(ctx context.Context, d time.Duration) error {
		select {
		case next <- d:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	srv := newServer(t, a.handler())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // an unflushed event fails the read
	defer cancel()
	resp := getStream(ctx, t, srv, "/stream?interval=7ms&n="+strconv.Itoa(n))
	br := bufio.NewReader(resp.Body)
	for k := 1; k <= n; k++ {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("event %d (the handler is holding event %d back): %v", k, k+1, err)
		}
		if ev.Data.Seq != k {
			t.Fatalf("got event %d, want %d", ev.Data.Seq, k)
		}
		if k < n {
			if d := <-next; d != 7*time.Millisecond {
				t.Fatalf("handler waited %v between events, want 7ms", d)
			}
		}
	}
	if _, err := readEvent(br); err != io.EOF {
		t.Fatalf("after %d events: %v, want EOF", n, err)
	}
}

func TestStreamStopsWhenClientLeaves(t *testing.T) {
	h, done := finished(New())
	srv := newServer(t, h)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp := getStream(ctx, t, srv, "/stream?interval=1ms&n=10000")
	br := bufio.NewReader(resp.Body)
	for k := 1; k <= 2; k++ {
		if _, err := readEvent(br); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	resp.Body.Close()
	waitFinished(t, done)
}

func TestStreamQuery(t *testing.T) {
	tests := []struct {
		query      string
		wantEvents int
		wantWait   time.Duration // 0: no waits expected
	}{
		{"", 10, time.Second},
		{"?n=0", 0, 0},
		{"?n=1", 1, 0},
		{"?n=3&interval=0s", 3, time.Millisecond},
		{"?n=2&interval=250ms", 2, 250 * time.Millisecond},
		{"?n=20000&interval=1ms", maxStreamEvents, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			waits := make(chan time.Duration, maxStreamEvents)
			a := &app{wait: func(_ context.Context, d time.Duration) error {
				waits <- d
				return nil
			}}
			srv := newServer(t, a.handler())
			br := bufio.NewReader(getStream(t.Context(), t, srv, "/stream"+tt.query).Body)
			got := 0
			for {
				_, err := readEvent(br)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got++
			}
			if got != tt.wantEvents {
				t.Errorf("%d events, want %d", got, tt.wantEvents)
			}
			if len(waits) != max(tt.wantEvents-1, 0) {
				t.Errorf("%d waits, want %d", len(waits), max(tt.wantEvents-1, 0))
			}
			if len(waits) > 0 {
				if d := <-waits; d != tt.wantWait {
					t.Errorf("waited %v, want %v", d, tt.wantWait)
				}
			}
		})
	}

	srv := newServer(t, New())
	for _, q := range []string{"n=-1", "n=ten", "interval=soon"} {
		if resp, body := do(t, srv, http.MethodGet, "/stream?"+q, nil); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/stream?%s = %d %q, want 400", q, resp.StatusCode, body)
		}
	}
}
