package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel"
)

// The informational response tests: a backend's 102 Processing and 103
// Early Hints reach the client before the final response, over every
// transport and each of the agent's backend clients, without leaking into
// the final response; older peers and HTTP/1.0 clients get the final
// response alone; a backend that sends 1xx without end meets the limit.

const (
	hintsHost  = "hints.test"  // hintsBackend over HTTP/1.1
	hints2Host = "hints2.test" // hintsBackend over HTTP/2 (backend_http2)
	floodHost  = "flood.test"  // a floodBackend
	hintStyle  = "</style.css>; rel=preload; as=style"
	hintScript = "</app.js>; rel=preload; as=script"
)

// hintsBackend answers with 102, then 103 with two Link headers (and, over
// HTTP/1.1, a hop-by-hop header named in Connection), then "final". A
// request with X-Wait-Hints gets its final response only once the client
// said on seen that it has the 103: proof that the 103 was not held back
// until the final response.
func hintsBackend(t *testing.T, seen <-chan struct{}) *httptest.Server {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		w.WriteHeader(http.StatusProcessing)
		h["Link"] = []string{hintStyle, hintScript}
		if r.ProtoMajor == 1 {
			h.Set("Connection", "X-Hop")
			h.Set("X-Hop", "hop-by-hop")
		}
		w.WriteHeader(http.StatusEarlyHints)
		clear(h) // net/http would send the 103's headers again with the 200
		if r.Header.Get("X-Wait-Hints") != "" {
			select {
			case <-seen:
			case <-time.After(expectGuard):
				http.Error(w, "the client did not get the 103 before the final response", http.StatusInternalServerError)
				return
			}
		}
		h.Set("Content-Type", "text/plain")
		io.WriteString(w, "final")
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// floodBackend answers every request with 103s until the agent hangs up.
type floodBackend struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startFloodBackend(t *testing.T) *floodBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &floodBackend{ln: ln}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Go(func() { b.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func (b *floodBackend) serve(c net.Conn) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	io.Copy(io.Discard, req.Body)
	for {
		if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: "+hintStyle+"\r\n\r\n"); err != nil {
			return // the agent gave up and closed the connection
		}
	}
}

// hintsRig publishes hintsBackend (over HTTP/1.1 and HTTP/2) and a
// floodBackend through one agent over transport.
func hintsRig(t *testing.T, transport string, seen <-chan struct{}, editGateway func(*gateway.Config), editAgent func(*agent.Config)) *testrig.Rig {
	t.Helper()
	backend := testrig.MustURL(t, hintsBackend(t, seen).URL)
	flood := startFloodBackend(t)
	rig := testrig.New(t, testrig.Options{
		Routes: []gateway.Route{
			{App: "hints", Hosts: []string{hintsHost}, Backend: backend},
			{App: "hints2", Hosts: []string{hints2Host}, Backend: backend, BackendHTTP2: true},
			{App: "flood", Hosts: []string{floodHost}, Backend: testrig.MustURL(t, "http://"+flood.ln.Addr().String())},
		},
		Gateway:   editGateway,
		Transport: transport,
	})
	rig.StartAgent(editAgent)
	return rig
}

// hinted is what a client got: the informational responses in order, and
// the final response.
type hinted struct {
	codes  []int
	heads  []textproto.MIMEHeader
	status int
	header http.Header
	body   string
}

// getHinted sends method to host through the rig and records the
// informational responses; with seen, it asks the backend to wait for the
// 103 and reports it there.
func getHinted(t *testing.T, c *http.Client, rig *testrig.Rig, method, host string, seen chan<- struct{}) hinted {
	t.Helper()
	var got hinted
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), expectGuard)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		got.codes = append(got.codes, code)
		got.heads = append(got.heads, h)
		mu.Unlock()
		if code == http.StatusEarlyHints && seen != nil {
			seen <- struct{}{}
		}
		return nil
	}})
	var body io.Reader
	if method == "POST" {
		body = strings.NewReader("a body, which takes net/http's transport in the agent")
	}
	req, err := http.NewRequestWithContext(ctx, method, rig.URL+"/page", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if seen != nil {
		req.Header.Set("X-Wait-Hints", "1")
	}
	res, b := doAndRead(t, c, req)
	mu.Lock()
	defer mu.Unlock()
	got.status, got.header, got.body = res.StatusCode, res.Header, string(b)
	return got
}

// TestEarlyHints: over each transport, client protocol (HTTP/1.1, h2c) and
// backend client of the agent (its own HTTP/1.1 client for a GET,
// net/http's for a POST, HTTP/2), the client gets the 102 and the 103
// with both Link headers, before the backend sends its final response,
// without the hop-by-hop header; the final response has none of the
// 103's headers.
func TestEarlyHints(t *testing.T) {
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			seen := make(chan struct{}, 1)
			rig := hintsRig(t, transport, seen, nil, nil)
			for _, proto := range relayProtocols {
				c := relayProtocolClient(t, proto.set)
				for _, tc := range []struct{ method, host string }{
					{"GET", hintsHost}, {"POST", hintsHost}, {"GET", hints2Host},
				} {
					what := fmt.Sprintf("%s %s %s", proto.name, tc.method, tc.host)
					got := getHinted(t, c, rig, tc.method, tc.host, seen)
					if got.status != http.StatusOK || got.body != "final" {
						t.Fatalf("%s: final response %d %q", what, got.status, got.body)
					}
					if !slices.Equal(got.codes, []int{http.StatusProcessing, http.StatusEarlyHints}) {
						t.Fatalf("%s: informational responses %v, want [102 103]", what, got.codes)
					}
					hints := got.heads[1]
					if !slices.Equal(hints["Link"], []string{hintStyle, hintScript}) {
						t.Fatalf("%s: 103 Link %q", what, hints["Link"])
					}
					if hints.Get("X-Hop") != "" || hints.Get("Connection") != "" {
						t.Fatalf("%s: the 103 kept its hop-by-hop headers: %v", what, hints)
					}
					if got.header.Get("Link") != "" || got.header.Get("X-Hop") != "" {
						t.Fatalf("%s: the final response has the 103's headers: %v", what, got.header)
					}
				}
			}
		})
	}
}

// TestEarlyHintsOlderPeers: with an agent or a gateway of protocol version
// 2, the client gets the final response, without informational ones and
// without an error.
func TestEarlyHintsOlderPeers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gateway func(*gateway.Config)
		agent   func(*agent.Config)
	}{
		{"older agent", nil, func(c *agent.Config) { c.ProtocolVersion = tunnel.VersionInformational - 1 }},
		{"older gateway", func(c *gateway.Config) { c.ProtocolVersion = tunnel.VersionInformational - 1 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := hintsRig(t, testrig.DefaultTransport(), nil, tc.gateway, tc.agent)
			c := rig.Client()
			for _, method := range []string{"GET", "POST"} {
				got := getHinted(t, c, rig, method, hintsHost, nil)
				if got.status != http.StatusOK || got.body != "final" || len(got.codes) != 0 {
					t.Fatalf("%s: %d %q after informational responses %v; want 200 alone", method, got.status, got.body, got.codes)
				}
			}
		})
	}
}

// TestEarlyHintsHTTP10: an HTTP/1.0 client gets the final response alone
// (RFC 9110 section 15.2).
func TestEarlyHintsHTTP10(t *testing.T) {
	rig := hintsRig(t, testrig.DefaultTransport(), nil, nil, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(rig.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(expectGuard))
	fmt.Fprintf(conn, "GET /page HTTP/1.0\r\nHost: %s\r\n\r\n", hintsHost)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK || string(b) != "final" {
		t.Fatalf("first response %d %q (%v), want the final 200 alone", res.StatusCode, b, err)
	}
}

// TestEarlyHintsFlood: a backend that sends 103s without end costs the
// client MaxInformational of them and a 502 that says why, over the
// agent's own client (GET) and net/http's (POST); the backend's
// connection is closed (the cleanup waits for its goroutines, and goleak
// finds none left).
func TestEarlyHintsFlood(t *testing.T) {
	rig := hintsRig(t, testrig.DefaultTransport(), nil, nil, nil)
	c := rig.Client()
	for _, method := range []string{"GET", "POST"} {
		got := getHinted(t, c, rig, method, floodHost, nil)
		if got.status != http.StatusBadGateway || got.header.Get("X-Sallyport-Error") != "backend-1xx-limit" {
			t.Fatalf("%s: %d %s, want 502 backend-1xx-limit", method, got.status, got.header.Get("X-Sallyport-Error"))
		}
		if !strings.Contains(got.body, "informational (1xx) responses") {
			t.Fatalf("%s: the error page does not say what happened: %q", method, got.body)
		}
		if len(got.codes) != tunnel.MaxInformational {
			t.Fatalf("%s: the client got %d informational responses, want %d", method, len(got.codes), tunnel.MaxInformational)
		}
	}
}

// TestEarlyHintsPreauth: on a pre-authenticated app whose session is
// refreshed by the request, the 103 reaches the signed-in client without
// the renewed session cookie, which the final response carries; the access
// log records the final status.
func TestEarlyHintsPreauth(t *testing.T) {
	a := newAuthRig(t, preauth.Policy{}, nil)
	c := a.browser()
	a.signIn(c, "/", alice)
	first := a.sessionCookie(c).Value
	a.clock.Add(6 * time.Minute) // past the ID token's 5 minutes: the gateway refreshes
	var hints []textproto.MIMEHeader
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), expectGuard)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		hints = append(hints, h)
		return nil
	}})
	req, _ := http.NewRequestWithContext(ctx, "GET", a.URL+"/hints", nil)
	res, body := do(t, noRedirect(c), req)
	if res.StatusCode != 200 || decodeEchoed(t, body).Headers.Get("X-Sallyport-User") != "sub-alice" {
		t.Fatalf("refreshed request: %d %s", res.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hints) != 1 || hints[0].Get("Link") != hintStyle || hints[0].Get("Set-Cookie") != "" {
		t.Fatalf("informational responses %v: want one 103 with the Link and no cookie", hints)
	}
	if res.Header.Get("Set-Cookie") == "" || res.Header.Get("Link") != "" || a.sessionCookie(c).Value == first {
		t.Fatalf("final response headers %v: want the renewed session cookie and no Link", res.Header)
	}
	var logged []any
	for _, e := range a.logs.FilterMessage("access").All() {
		if f := e.ContextMap(); f["path"] == "/hints" {
			logged = append(logged, f["status"])
		}
	}
	if len(logged) != 1 || fmt.Sprint(logged[0]) != "200" {
		t.Fatalf("access log statuses of /hints: %v, want [200]", logged)
	}
}
