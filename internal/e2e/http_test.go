package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel"
)

// appHost is the external host of the app most tests publish.
const appHost = "app.test"

// startLoopbackBackend serves h on 127.0.0.1 until the test ends.
func startLoopbackBackend(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// demoRig publishes a demoapp backend as appHost through one agent.
func demoRig(t testing.TB) (*testrig.Rig, *http.Client) {
	t.Helper()
	backend := startLoopbackBackend(t, demoapp.New())
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "demo", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	return rig, rig.Client()
}

// appRequest builds a request for appHost sent to the rig's listener at url.
func appRequest(t testing.TB, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = appHost
	return req
}

// doAndRead sends req and returns the response with its body read and closed.
func doAndRead(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return res, b
}

func decodeEcho(t testing.TB, b []byte) demoapp.Echo {
	t.Helper()
	var e demoapp.Echo
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("echo answer %q: %v", b, err)
	}
	return e
}

// seenHeadersBackend wraps the demo app and reports, in response headers, what the
// backend saw of each request, so that HEAD requests (which have no body)
// can be checked too.
func seenHeadersBackend() http.Handler {
	demo := demoapp.New()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Method", r.Method)
		w.Header().Set("X-Seen-Uri", r.RequestURI)
		demo.ServeHTTP(w, r)
	})
}

// TestHTTPMethods sends every common method and a custom token method: the
// backend must see the method, the request target and the body unchanged.
func TestHTTPMethods(t *testing.T) {
	backend := startLoopbackBackend(t, seenHeadersBackend())
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "demo", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"} {
		t.Run(method, func(t *testing.T) {
			var body io.Reader
			payload := "body of " + method
			hasBody := method == "POST" || method == "PUT" || method == "PATCH" || method == "PURGE"
			if hasBody {
				body = strings.NewReader(payload)
			}
			res, b := doAndRead(t, c, appRequest(t, context.Background(), method, rig.URL+"/echo/m?x=1", body))
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			if got := res.Header.Get("X-Seen-Method"); got != method {
				t.Errorf("backend saw method %q", got)
			}
			if got := res.Header.Get("X-Seen-Uri"); got != "/echo/m?x=1" {
				t.Errorf("backend saw request target %q", got)
			}
			if method == "HEAD" {
				if len(b) != 0 {
					t.Errorf("HEAD answer has a body: %q", b)
				}
				return
			}
			e := decodeEcho(t, b)
			if e.Method != method {
				t.Errorf("echo says method %q", e.Method)
			}
			want := ""
			if hasBody {
				want = payload
			}
			sum := sha256.Sum256([]byte(want))
			if e.BodyBytes != int64(len(want)) || e.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("backend got %d body bytes (sha256 %s), want %q", e.BodyBytes, e.BodySHA256, want)
			}
		})
	}
}

// TestHTTPRequestTarget checks that paths and query strings reach the
// backend byte for byte, encoded characters included.
func TestHTTPRequestTarget(t *testing.T) {
	rig, c := demoRig(t)
	for _, target := range []string{
		"/echo",
		"/echo?",
		"/echo?a=1&b=2&a=3",
		"/echo?q=a+b&plus=%2B&slash=%2F&space=%20&pct=%25&eq=x%3Dy&amp=%26",
		"/echo?empty=&flag&utf8=%C3%A9%E2%82%AC",
		"/echo/a%2Fb/c%20d?x=%2f",
		"/echo/~user/a-b_c.d!$'()*,@:",
		"/echo?UPPER=%2F&lower=%2f",
	} {
		t.Run(target, func(t *testing.T) {
			res, b := doAndRead(t, c, appRequest(t, context.Background(), "GET", rig.URL+target, nil))
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			e := decodeEcho(t, b)
			if e.URI != target {
				t.Errorf("backend saw request target %q, want %q", e.URI, target)
			}
		})
	}
}

// TestHTTPMultiValuedHeaders checks that a header sent several times keeps
// every value, in order, both ways.
func TestHTTPMultiValuedHeaders(t *testing.T) {
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Answer with the request's X-Multi values reversed, as separate
		// fields, plus a few Set-Cookie fields.
		in := r.Header.Values("X-Multi")
		for i := len(in) - 1; i >= 0; i-- {
			w.Header().Add("X-Multi-Back", in[i])
		}
		for _, c := range []string{"a=1; Path=/", "b=2; HttpOnly", "c=3, with comma"} {
			w.Header().Add("Set-Cookie", c)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "hdr", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	req := appRequest(t, context.Background(), "GET", rig.URL+"/", nil)
	sent := []string{"first", "second, with comma", "third", "first"}
	for _, v := range sent {
		req.Header.Add("X-Multi", v)
	}
	req.Header.Add("Accept", "text/html")
	req.Header.Add("Accept", "application/json;q=0.5")
	res, b := doAndRead(t, rig.Client(), req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	var seen http.Header
	if err := json.Unmarshal(b, &seen); err != nil {
		t.Fatal(err)
	}
	if got := seen.Values("X-Multi"); !slices.Equal(got, sent) {
		t.Errorf("backend saw X-Multi %q, want %q", got, sent)
	}
	if got, want := seen.Values("Accept"), []string{"text/html", "application/json;q=0.5"}; !slices.Equal(got, want) {
		t.Errorf("backend saw Accept %q, want %q", got, want)
	}
	back := slices.Clone(sent)
	slices.Reverse(back)
	if got := res.Header.Values("X-Multi-Back"); !slices.Equal(got, back) {
		t.Errorf("client got X-Multi-Back %q, want %q", got, back)
	}
	if got, want := res.Header.Values("Set-Cookie"), []string{"a=1; Path=/", "b=2; HttpOnly", "c=3, with comma"}; !slices.Equal(got, want) {
		t.Errorf("client got Set-Cookie %q, want %q", got, want)
	}
}

// TestHTTPHeaderBytesNotUTF8: header values that are not UTF-8 (obs-text,
// which HTTP allows and legacy servers send, e.g. a Latin-1 filename) reach
// the backend and the client byte for byte, both ways and in trailers, on
// every transport. The tunnel's messages used proto3 strings, which must be
// UTF-8: the gateway refused to encode such a request head and answered
// 502 tunnel-failed, and the agent such a response head.
func TestHTTPHeaderBytesNotUTF8(t *testing.T) {
	const latin1 = "attachment; filename=\"Ren\xe9 \xa9.txt\""
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("Content-Disposition", latin1)
		w.Header().Set("X-Seen", r.Header.Get("X-Name"))
		_, _ = w.Write([]byte("ok"))
		w.Header().Set("X-Sum", "\xff"+r.Header.Get("X-Name"))
	}))
	for _, transport := range testrig.Transports {
		t.Run(transport, func(t *testing.T) {
			rig := testrig.New(t, testrig.Options{Transport: transport, Routes: []gateway.Route{
				{App: "latin1", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
			}})
			rig.StartAgent(nil)
			req := appRequest(t, context.Background(), "GET", rig.URL+"/", nil)
			req.Header.Set("X-Name", "Ren\xe9")
			res, b := doAndRead(t, rig.Client(), req)
			if res.StatusCode != http.StatusOK || string(b) != "ok" {
				t.Fatalf("status %d (%s): %q", res.StatusCode, res.Header.Get("X-Sallyport-Error"), b)
			}
			if got := res.Header.Get("X-Seen"); got != "Ren\xe9" {
				t.Errorf("backend saw X-Name %q, want %q", got, "Ren\xe9")
			}
			if got := res.Header.Get("Content-Disposition"); got != latin1 {
				t.Errorf("client got Content-Disposition %q, want %q", got, latin1)
			}
			if got := res.Trailer.Get("X-Sum"); got != "\xffRen\xe9" {
				t.Errorf("client got trailer X-Sum %q, want %q", got, "\xffRen\xe9")
			}
		})
	}
}

// TestHTTPNoContentTypeAdded: a response without Content-Type reaches the
// client without one; net/http's server used to add the type it guessed
// from the body (text/html for an HTML-looking body), which a proxy must
// not invent. A backend's own type passes unchanged.
func TestHTTPNoContentTypeAdded(t *testing.T) {
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/typed" {
			w.Header().Set("Content-Type", "application/x-thing")
		} else {
			w.Header()["Content-Type"] = nil // the backend sends none
		}
		if r.URL.Query().Has("stream") {
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "<html><script>x=1")
	}))
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "ct", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	for target, want := range map[string][]string{"/": nil, "/?stream": nil, "/typed": {"application/x-thing"}} {
		res, b := doAndRead(t, rig.Client(), appRequest(t, context.Background(), "GET", rig.URL+target, nil))
		if res.StatusCode != http.StatusOK || string(b) != "<html><script>x=1" {
			t.Fatalf("%s: status %d, %q", target, res.StatusCode, b)
		}
		if got := res.Header.Values("Content-Type"); !slices.Equal(got, want) {
			t.Errorf("%s: client got Content-Type %q, want %q", target, got, want)
		}
	}
}

// TestHTTPStatusCodes checks that the backend's status reaches the client
// unchanged, with a redirect's Location untouched.
func TestHTTPStatusCodes(t *testing.T) {
	const location = "http://internal.corp.example:8080/new/place?x=%2F&y=1"
	demo := demoapp.New()
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, location, http.StatusMovedPermanently)
		case "/moved-relative":
			w.Header().Set("Location", "../relative?a=b")
			w.WriteHeader(http.StatusFound)
		default:
			demo.ServeHTTP(w, r)
		}
	}))
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "status", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	for _, tc := range []struct {
		path     string
		status   int
		location string
	}{
		{"/status/200", 200, ""},
		{"/status/201", 201, ""},
		{"/status/204", 204, ""},
		{"/moved", 301, location},
		{"/moved-relative", 302, "../relative?a=b"},
		{"/status/304", 304, ""},
		{"/status/404", 404, ""},
		{"/status/418", 418, ""},
		{"/status/500", 500, ""},
		{"/status/503", 503, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, b := doAndRead(t, c, appRequest(t, context.Background(), "GET", rig.URL+tc.path, nil))
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			if got := res.Header.Get("Location"); got != tc.location {
				t.Errorf("Location %q, want %q", got, tc.location)
			}
			if e := res.Header.Get(gateway.ErrorHeader); e != "" {
				t.Errorf("the gateway marked the backend's answer as its own error %q", e)
			}
			switch tc.status {
			case 204, 304:
				if len(b) != 0 {
					t.Errorf("%d with a body %q", tc.status, b)
				}
			case 200, 201, 404, 418, 500, 503:
				if want := fmt.Sprintf("%d %s\n", tc.status, http.StatusText(tc.status)); string(b) != want {
					t.Errorf("body %q, want %q", b, want)
				}
			}
		})
	}
}

// TestHTTPHostAndForwarded checks the Host the backend sees, with and
// without PreserveHost, and that the X-Forwarded-* headers are the
// gateway's own: whatever the client sent is replaced, never appended to.
func TestHTTPHostAndForwarded(t *testing.T) {
	backend := startLoopbackBackend(t, demoapp.New())
	backendURL := testrig.MustURL(t, backend.URL)
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "plain", Hosts: []string{"plain.test"}, Backend: backendURL},
		{App: "keep", Hosts: []string{"keep.test"}, Backend: backendURL, PreserveHost: true},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	for _, tc := range []struct {
		name     string
		host     string
		spoof    bool // the client sends its own forwarding headers
		wantHost string
	}{
		{"own host", "plain.test", false, backendURL.Host},
		{"own host, spoofed forwarding", "plain.test:8080", true, backendURL.Host},
		{"preserve host", "keep.test", false, "keep.test"},
		{"preserve host with port, spoofed forwarding", "keep.test:8080", true, "keep.test:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
			req.Host = tc.host
			if tc.spoof {
				req.Header.Add("X-Forwarded-For", "6.6.6.6")
				req.Header.Add("X-Forwarded-For", "7.7.7.7, 8.8.8.8")
				req.Header.Set("X-Forwarded-Host", "evil.example")
				req.Header.Set("X-Forwarded-Proto", "https")
				req.Header.Set("Forwarded", "for=6.6.6.6;host=evil.example;proto=https")
				// The spellings that CGI, PHP and WSGI fold onto the same
				// variables as the gateway's own headers.
				req.Header["X_Forwarded_For"] = []string{"6.6.6.6"}
				req.Header["x-forwarded_proto"] = []string{"https"}
				req.Header["X_FORWARDED_HOST"] = []string{"evil.example"}
				req.Header["X_Request_Id"] = []string{"spoofed-id"}
			}
			res, b := doAndRead(t, c, req)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			e := decodeEcho(t, b)
			if e.Host != tc.wantHost {
				t.Errorf("backend saw Host %q, want %q", e.Host, tc.wantHost)
			}
			for name, want := range map[string][]string{
				"X-Forwarded-For":   {"127.0.0.1"},
				"X-Forwarded-Host":  {tc.host},
				"X-Forwarded-Proto": {"http"},
				"Forwarded":         nil,
			} {
				if got := e.Headers.Values(name); !slices.Equal(got, want) {
					t.Errorf("backend saw %s %q, want %q", name, got, want)
				}
			}
			for name, vv := range e.Headers {
				if strings.Contains(name, "_") {
					t.Errorf("backend saw %s %q: a spelling of a gateway header", name, vv)
				}
			}
		})
	}
}

// TestHTTPRequestID checks X-Request-Id: a sane value from a trusted proxy
// (public.trusted_proxies) reaches the backend, anything else, and any
// value from another client, is replaced by a fresh id, and the gateway's
// own error pages name the same id.
func TestHTTPRequestID(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted proxy %v", trusted), func(t *testing.T) { testHTTPRequestID(t, trusted) })
	}
}

func testHTTPRequestID(t *testing.T, trusted bool) {
	backend := startLoopbackBackend(t, demoapp.New())
	o := testrig.Options{Routes: []gateway.Route{
		{App: "demo", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}}
	if trusted {
		o.Gateway = func(c *gateway.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }
	}
	rig := testrig.New(t, o)
	rig.StartAgent(nil)
	c := rig.Client()
	generated := map[string]bool{}
	for _, tc := range []struct {
		name string
		sent []string // X-Request-Id fields the client sends
		keep bool     // the backend must see the last of sent (the nearest proxy's)
	}{
		{"sane", []string{"req-1.a_B:9"}, true},
		{"sane, 128 characters", []string{strings.Repeat("a", 128)}, true},
		{"two values", []string{"first-id", "second-id"}, true}, // second-id: the nearest proxy's
		{"absent", nil, false},
		{"empty", []string{""}, false},
		{"too long", []string{strings.Repeat("a", 129)}, false},
		{"space", []string{"has space"}, false},
		{"markup", []string{"<script>alert(1)</script>"}, false},
		{"slash", []string{"a/b"}, false},
		{"non-ASCII", []string{"idé"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
			for _, v := range tc.sent {
				req.Header.Add("X-Request-Id", v)
			}
			res, b := doAndRead(t, c, req)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			got := decodeEcho(t, b).Headers.Values("X-Request-Id")
			if len(got) != 1 {
				t.Fatalf("backend saw X-Request-Id %q, want one value", got)
			}
			if tc.keep && trusted {
				if want := tc.sent[len(tc.sent)-1]; got[0] != want {
					t.Errorf("backend saw X-Request-Id %q, want the proxy's %q", got[0], want)
				}
				return
			}
			if !isGeneratedRequestID(got[0]) {
				t.Errorf("backend saw X-Request-Id %q, want a generated id (32 hex digits)", got[0])
			}
			if generated[got[0]] {
				t.Errorf("generated id %q was handed out twice", got[0])
			}
			generated[got[0]] = true
		})
	}

	// The gateway's own answers carry the id in a header and in the page.
	for _, tc := range []struct {
		name string
		sent string
	}{
		{"error page keeps a sane id", "err-page-id-1"},
		{"error page with a generated id", ""},
		{"error page replaces an insane id", "bad id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := appRequest(t, context.Background(), "GET", rig.URL+"/echo", nil)
			req.Host = "unknown.test"
			req.Header.Set("Accept", "application/json")
			if tc.sent != "" {
				req.Header.Set("X-Request-Id", tc.sent)
			}
			res, b := doAndRead(t, c, req)
			page := decodeGatewayError(t, res, b, http.StatusNotFound, gateway.CodeNoRoute)
			id := res.Header.Get("X-Request-Id")
			if page.RequestID != id {
				t.Errorf("page names request id %q, header says %q", page.RequestID, id)
			}
			if trusted && tc.sent != "" && saneRequestID(tc.sent) {
				if id != tc.sent {
					t.Errorf("error page has request id %q, want the client's %q", id, tc.sent)
				}
			} else if !isGeneratedRequestID(id) {
				t.Errorf("error page has request id %q, want a generated one", id)
			}
		})
	}
}

func saneRequestID(s string) bool { return s == gateway.RequestID(s) }

// isGeneratedRequestID reports whether s looks like gateway.NewRequestID's output.
func isGeneratedRequestID(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// gatewayErrorPage is the JSON body of an answer the gateway gives itself.
type gatewayErrorPage struct {
	Error     string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// decodeGatewayError checks that res is the gateway's own JSON error answer
// with status and code, and returns its body.
func decodeGatewayError(t testing.TB, res *http.Response, b []byte, status int, code string) gatewayErrorPage {
	t.Helper()
	if res.StatusCode != status || res.Header.Get(gateway.ErrorHeader) != code {
		t.Fatalf("got %d %s=%q, want %d %q; body %s", res.StatusCode, gateway.ErrorHeader,
			res.Header.Get(gateway.ErrorHeader), status, code, b)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var p gatewayErrorPage
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("error page %q: %v", b, err)
	}
	if p.Error != code || p.Message == "" || p.RequestID == "" {
		t.Errorf("error page %+v, want error %q, a message and a request id", p, code)
	}
	return p
}

// TestHTTPRouting publishes apps on two hosts, a longer path prefix and a
// wildcard host, and checks where each request lands; an unknown host gets
// the gateway's 404 without any backend being called.
func TestHTTPRouting(t *testing.T) {
	var hits sync.Map // backend name → *atomic.Int64
	named := func(name string) *url.URL {
		n := new(atomic.Int64)
		hits.Store(name, n)
		srv := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.Header().Set("X-Backend", name)
			io.WriteString(w, name+" "+r.URL.Path)
		}))
		return testrig.MustURL(t, srv.URL)
	}
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "a", Hosts: []string{"a.test"}, Backend: named("a")},
		{App: "a-api", Hosts: []string{"a.test"}, PathPrefix: "/api", Backend: named("a-api")},
		{App: "b", Hosts: []string{"b.test", "b2.test"}, Backend: named("b")},
		{App: "wild", Hosts: []string{"*.wild.test"}, Backend: named("wild")},
		{App: "exact-in-wild", Hosts: []string{"exact.wild.test"}, Backend: named("exact-in-wild")},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	total := func() int64 {
		var sum int64
		hits.Range(func(_, v any) bool { sum += v.(*atomic.Int64).Load(); return true })
		return sum
	}
	for _, tc := range []struct {
		host, path string
		backend    string // "" → no route
	}{
		{"a.test", "/", "a"},
		{"a.test", "/x/y", "a"},
		{"a.test", "/api", "a-api"},
		{"a.test", "/api/v1/items", "a-api"},
		{"a.test", "/apix", "a"},
		{"A.Test:8080", "/api/x", "a-api"},
		{"a.test.", "/", "a"},
		{"b.test", "/api", "b"},
		{"b2.test", "/", "b"},
		{"x.wild.test", "/w", "wild"},
		{"exact.wild.test", "/w", "exact-in-wild"},
		{"wild.test", "/", ""},
		{"a.b.wild.test", "/", ""},
		{"unknown.test", "/", ""},
		{"c.test", "/api", ""},
	} {
		t.Run(tc.host+tc.path, func(t *testing.T) {
			before := total()
			req := appRequest(t, context.Background(), "GET", rig.URL+tc.path, nil)
			req.Host = tc.host
			req.Header.Set("Accept", "application/json")
			res, b := doAndRead(t, c, req)
			if tc.backend == "" {
				decodeGatewayError(t, res, b, http.StatusNotFound, gateway.CodeNoRoute)
				if n := total() - before; n != 0 {
					t.Errorf("%d backend calls for a request without a route", n)
				}
				return
			}
			if res.StatusCode != http.StatusOK || res.Header.Get("X-Backend") != tc.backend {
				t.Fatalf("got %d from backend %q (%s), want 200 from %q", res.StatusCode, res.Header.Get("X-Backend"), b, tc.backend)
			}
			if want := tc.backend + " " + tc.path; string(b) != want {
				t.Errorf("body %q, want %q (the path reaches the backend as sent)", b, want)
			}
		})
	}
}

// relayProtocols are the ways a client talks to the gateway.
var relayProtocols = []struct {
	name  string
	major int
	set   func(*http.Protocols)
}{
	{"http1", 1, func(p *http.Protocols) { p.SetHTTP1(true) }},
	{"h2c", 2, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }},
}

// relayProtocolClient returns a client that speaks only the protocols set.
func relayProtocolClient(t testing.TB, set func(*http.Protocols)) *http.Client {
	var p http.Protocols
	set(&p)
	tr := &http.Transport{DisableCompression: true, Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestHTTPStreamingFlushes proves that every flush of the backend reaches the
// client on its own: after each piece the backend waits until the test has
// read that piece, so a relay that held data back until more arrived (or
// until the end) would deadlock and fail on the test's deadline instead.
// "length" is a body of known length, which the gateway does not flush
// write by write: it must flush when the body pauses (pieces of a few
// bytes stayed in net/http's buffer until the end). Its body is longer
// than tunnel.CoalesceLimit, the largest the agent reads whole before it
// sends the head (the pieces come first, padding after them).
func TestHTTPStreamingFlushes(t *testing.T) {
	const pad = tunnel.CoalesceLimit
	const pieces = 5
	// A stepper paces one streamed response: the backend reports each
	// flushed piece on ready and waits on next, which the test signals
	// once the client has read that piece.
	type stepper struct {
		ready chan int
		next  chan struct{}
	}
	var steps sync.Map // X-Test-Stream value → *stepper
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := steps.Load(r.Header.Get("X-Test-Stream"))
		if !ok {
			http.Error(w, "unknown stream", http.StatusBadRequest)
			return
		}
		s := v.(*stepper)
		sse := r.URL.Path == "/sse"
		if sse {
			w.Header().Set("Content-Type", "text/event-stream")
		} else {
			w.Header().Set("Content-Type", "text/plain")
		}
		if r.URL.Path == "/length" {
			w.Header().Set("Content-Length", strconv.Itoa(pieces*len("piece 1\n")+pad))
		}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for k := 1; k <= pieces; k++ {
			if sse {
				fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", k, k)
			} else {
				fmt.Fprintf(w, "piece %d\n", k)
			}
			if err := rc.Flush(); err != nil {
				return
			}
			s.ready <- k
			select {
			case <-s.next:
			case <-r.Context().Done():
				return
			}
		}
		if r.URL.Path == "/length" {
			_, _ = w.Write(bytes.Repeat([]byte{'x'}, pad))
		}
	}))
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "stream", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)

	for _, proto := range relayProtocols {
		for _, kind := range []string{"sse", "chunked", "length"} {
			t.Run(proto.name+"/"+kind, func(t *testing.T) {
				id := proto.name + "-" + kind
				s := &stepper{ready: make(chan int, 1), next: make(chan struct{})}
				steps.Store(id, s)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				req := appRequest(t, ctx, "GET", rig.URL+"/"+kind, nil)
				req.Header.Set("X-Test-Stream", id)
				res, err := relayProtocolClient(t, proto.set).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				if res.StatusCode != http.StatusOK || res.ProtoMajor != proto.major {
					t.Fatalf("status %d over HTTP/%d, want 200 over HTTP/%d", res.StatusCode, res.ProtoMajor, proto.major)
				}
				if want := int64(-1); kind == "length" {
					if want = pieces*int64(len("piece 1\n")) + pad; res.ContentLength != want {
						t.Errorf("Content-Length %d, want %d", res.ContentLength, want)
					}
				} else if res.ContentLength != want {
					t.Errorf("Content-Length %d, want none", res.ContentLength)
				}
				br := bufio.NewReader(res.Body)
				for k := 1; k <= pieces; k++ {
					select {
					case got := <-s.ready:
						if got != k {
							t.Fatalf("backend flushed piece %d, want %d", got, k)
						}
					case <-ctx.Done():
						t.Fatalf("backend did not flush piece %d", k)
					}
					var want, got string
					if kind == "sse" {
						want = fmt.Sprintf("id: %d\ndata: event %d\n\n", k, k)
						got, err = readSSEEvent(br)
					} else {
						want = fmt.Sprintf("piece %d\n", k)
						got, err = br.ReadString('\n')
					}
					if err != nil {
						t.Fatalf("piece %d did not reach the client before the backend sent the next one: %v", k, err)
					}
					if got != want {
						t.Fatalf("piece %d: got %q, want %q", k, got, want)
					}
					s.next <- struct{}{}
				}
				wantRest := ""
				if kind == "length" {
					wantRest = strings.Repeat("x", pad)
				}
				if rest, err := io.ReadAll(br); err != nil || string(rest) != wantRest {
					t.Errorf("after the last piece: %d bytes (%.40q), %v; want %d and a clean end", len(rest), rest, err, len(wantRest))
				}
			})
		}
	}
}

// readSSEEvent reads one server-sent event: lines up to and including the
// blank line that ends it.
func readSSEEvent(br *bufio.Reader) (string, error) {
	var ev strings.Builder
	for {
		line, err := br.ReadString('\n')
		ev.WriteString(line)
		if err != nil {
			return ev.String(), err
		}
		if line == "\n" {
			return ev.String(), nil
		}
	}
}

// TestHTTPWarmSessionNoRoundTrip checks that exchanges on a warm session
// never wait for the agent to open a stream (tunnel.Session.OpenStream's
// promise), using the tunnel listener's counters:
//
//   - StreamWaits counts exchanges that found no idle stream.
//   - StreamsOpened counts streams the agent opened.
//
// The agent keeps MinIdle (16) idle streams. When a request takes one, the
// agent sees its idle count dip below MinIdle and opens a replacement;
// when the exchange ends cleanly the stream goes back to both pools. Strictly
// sequential requests therefore dip below MinIdle at most once, so 200 of
// them may open one stream and, allowing a couple for streams that were
// still being replaced from the warm-up, no more than a handful (4).
func TestHTTPWarmSessionNoRoundTrip(t *testing.T) {
	const burst = 100
	var arrived atomic.Int64
	all := make(chan struct{})
	quit := make(chan struct{})
	demo := demoapp.New()
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/barrier" {
			// Hold every burst request until all of them are in flight at
			// once, so that the burst really needs burst streams.
			if arrived.Add(1) == burst {
				close(all)
			}
			select {
			case <-all:
			case <-quit:
				return
			}
			r.URL.Path = "/echo"
		}
		demo.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { close(quit) })
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "warm", Hosts: []string{appHost}, Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if rig.Transport != "grpc" {
		testMuxNoRoundTrip(t, rig, c, ctx, burst, all)
		return
	}
	sequential := func(n int, what string) {
		t.Helper()
		for i := range n {
			body := fmt.Sprintf("%s %d", what, i)
			if err := checkSmallEcho(c, appRequest(t, ctx, "POST", rig.URL+"/echo", strings.NewReader(body)), body); err != nil {
				t.Fatal(err)
			}
		}
	}

	sequential(20, "warm-up")
	before := rig.G.TunnelStats()
	sequential(200, "sequential")
	after := rig.G.TunnelStats()
	t.Logf("200 sequential exchanges: %d stream waits, %d streams opened", after.StreamWaits-before.StreamWaits, after.StreamsOpened-before.StreamsOpened)
	if d := after.StreamWaits - before.StreamWaits; d != 0 {
		t.Errorf("%d of 200 sequential exchanges on a warm session waited for a stream", d)
	}
	if d := after.StreamsOpened - before.StreamsOpened; d > 4 {
		t.Errorf("200 sequential exchanges opened %d streams; want at most 4 (streams are reused)", d)
	}

	// A burst of concurrent exchanges: waits are allowed while the agent
	// opens more streams, but they stay pooled afterwards.
	before = rig.G.TunnelStats()
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("burst %d", i)
			errs <- checkSmallEcho(c, appRequest(t, ctx, "POST", rig.URL+"/barrier", strings.NewReader(body)), body)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	after = rig.G.TunnelStats()
	t.Logf("burst of %d: %d stream waits, %d streams opened", burst, after.StreamWaits-before.StreamWaits, after.StreamsOpened-before.StreamsOpened)
	if d := after.StreamsOpened - before.StreamsOpened; d < burst/2 {
		// The barrier holds all of them at once; this checks the setup.
		t.Errorf("a burst of %d concurrent exchanges opened only %d streams: were they concurrent?", burst, d)
	}

	before = rig.G.TunnelStats()
	sequential(burst, "after burst")
	after = rig.G.TunnelStats()
	t.Logf("%d sequential exchanges after the burst: %d stream waits, %d streams opened", burst, after.StreamWaits-before.StreamWaits, after.StreamsOpened-before.StreamsOpened)
	if d := after.StreamWaits - before.StreamWaits; d != 0 {
		t.Errorf("%d of %d sequential exchanges after the burst waited for a stream", d, burst)
	}
	if d := after.StreamsOpened - before.StreamsOpened; d > 4 {
		t.Errorf("%d sequential exchanges after the burst opened %d streams; want at most 4", burst, d)
	}
}

// testMuxNoRoundTrip is TestHTTPWarmSessionNoRoundTrip on QUIC and yamux:
// the gateway opens a fresh stream for every exchange itself, so no
// exchange ever waits for the agent, sequential or in a burst.
func testMuxNoRoundTrip(t *testing.T, rig *testrig.Rig, c *http.Client, ctx context.Context, burst int, all chan struct{}) {
	var wg sync.WaitGroup
	run := func(n int, path, what string) {
		t.Helper()
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf("%s %d", what, i)
				errs <- checkSmallEcho(c, appRequest(t, ctx, "POST", rig.URL+path, strings.NewReader(body)), body)
			}()
			if path == "/echo" {
				wg.Wait() // sequential
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	before := rig.G.MuxStats()
	run(200, "/echo", "sequential")
	after := rig.G.MuxStats()
	t.Logf("200 sequential exchanges: %d stream waits, %d streams opened", after.StreamWaits-before.StreamWaits, after.StreamsOpened-before.StreamsOpened)
	if d := after.StreamWaits - before.StreamWaits; d != 0 {
		t.Errorf("%d of 200 sequential exchanges waited for a stream", d)
	}
	if d := after.StreamsOpened - before.StreamsOpened; d != 200 {
		t.Errorf("200 exchanges opened %d streams; want one each, opened by the gateway", d)
	}
	before = rig.G.MuxStats()
	run(burst, "/barrier", "burst")
	<-all
	after = rig.G.MuxStats()
	t.Logf("burst of %d: %d stream waits, %d streams opened", burst, after.StreamWaits-before.StreamWaits, after.StreamsOpened-before.StreamsOpened)
	if d := after.StreamWaits - before.StreamWaits; d != 0 {
		t.Errorf("%d of a burst of %d concurrent exchanges waited for a stream", d, burst)
	}
	if d := after.StreamsOpened - before.StreamsOpened; d != uint64(burst) {
		t.Errorf("a burst of %d concurrent exchanges opened %d streams", burst, d)
	}
}
