package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h10Stale is what the first connection of an h10Backend sends once the
// second request arrives on it: the rest of its first answer, made to read
// as a response of its own. It must never reach anyone.
const h10Stale = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale\r\n0\r\n\r\n"

// h10Backend is a raw backend whose first connection answers its first
// request with head and then, when the next request starts to arrive on
// that connection, sends h10Stale. Every other connection answers each
// request with "fresh:" and the request's body. tlsCfg, if set, makes it
// an https backend.
func h10Backend(t *testing.T, head string, tlsCfg *tls.Config) (string, *atomic.Int32) {
	t.Helper()
	return h10BackendFirst(t, tlsCfg, func(br *bufio.Reader, c net.Conn) error {
		if _, err := readRequestWithBody(br); err != nil {
			return err
		}
		_, err := io.WriteString(c, head)
		return err
	})
}

// h10BackendFirst is h10Backend whose first connection reads its requests
// and writes its answers with first, then sends h10Stale as the next
// request starts to arrive.
func h10BackendFirst(t *testing.T, tlsCfg *tls.Config, first func(br *bufio.Reader, c net.Conn) error) (string, *atomic.Int32) {
	t.Helper()
	var taken atomic.Bool
	return rawBackend(t, func(c net.Conn) {
		if tlsCfg != nil {
			c = tls.Server(c, tlsCfg)
		}
		br := bufio.NewReader(c)
		if !taken.CompareAndSwap(false, true) {
			answerWithBody(br, c)
			return
		}
		if first(br, c) != nil {
			return
		}
		if _, err := br.Peek(1); err != nil {
			return // the agent closed the connection: what it must do
		}
		io.WriteString(c, h10Stale)
		io.Copy(io.Discard, br)
	})
}

// h10ServerTLS is a TLS server config with httptest's certificate.
func h10ServerTLS(t *testing.T) *tls.Config {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	defer srv.Close()
	return srv.TLS.Clone()
}

// readRequestWithBody reads one request and its body.
func readRequestWithBody(br *bufio.Reader) (string, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(req.Body)
	return string(b), err
}

// answerWithBody answers each request with "fresh:" and its body.
func answerWithBody(br *bufio.Reader, w io.Writer) {
	for {
		body, err := readRequestWithBody(br)
		if err != nil {
			return
		}
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nfresh:%s", len("fresh:")+len(body), body)
	}
}

// h10Exchange sends a request with body through rt and returns the answer's
// body, or the error.
func h10Exchange(t *testing.T, rt http.RoundTripper, method, url, body string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.RoundTrip(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "error reading body: " + err.Error()
	}
	return string(b)
}

// TestH10ReuseTransportNoLeftover: a backend answers HTTP/1.0 with
// "Connection: keep-alive" and framing that net/http reads differently from
// the backend (a Transfer-Encoding it ignores, a body after a head that has
// none), then sends what is left when the next request comes. The agent's
// HTTP/1.1 transport (requests with a body) must not send the next request
// on that connection: it gets the backend's own answer on a new one, never
// the leftover, and is not lost.
func TestH10ReuseTransportNoLeftover(t *testing.T) {
	srvTLS := h10ServerTLS(t)
	tests := []struct {
		name   string
		method string // of the first request
		head   string
		tls    bool
	}{
		{"chunked and Content-Length", "POST",
			"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2b\r\n", false},
		{"chunked and Content-Length over TLS", "POST",
			"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2b\r\n", true},
		{"204 with a chunked body", "POST",
			"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"Content-Length", "PUT",
			"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nfirst", false},
		{"HEAD with Content-Length", "HEAD",
			"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n", false},
		{"after 100 Continue", "POST",
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nfirst", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *tls.Config
			scheme := "http"
			if tc.tls {
				cfg, scheme = srvTLS, "https"
			}
			addr, accepted := h10Backend(t, tc.head, cfg)
			bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
				BackendTLS{Hosts: []string{"127.0.0.1:*"}, InsecureSkipVerify: true})
			p := bk.profileFor("127.0.0.1", "1")
			if !tc.tls {
				p = &bk.profiles[0]
			}
			url := scheme + "://" + addr + "/"
			first := h10Exchange(t, p.h1, tc.method, url, "first")
			if strings.HasPrefix(first, "error") {
				t.Fatalf("first request: %s", first)
			}
			second := h10Exchange(t, p.h1, "POST", url, "second")
			if second != "fresh:second" {
				t.Errorf("second request got %q, want the backend's answer to it, %q", second, "fresh:second")
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("backend accepted %d connections, want 2 (none reused after HTTP/1.0)", n)
			}
		})
	}
}

// TestH10ReuseBackendsPOST is TestH10ReuseTransportNoLeftover's first case
// through Backends.Transport, as an exchange picks the client.
func TestH10ReuseBackendsPOST(t *testing.T) {
	addr, accepted := h10Backend(t,
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2b\r\n", nil)
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	post := func(body string) string {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+addr+"/", strings.NewReader(body))
		return h10Exchange(t, bk.Transport(req, false), "POST", "http://"+addr+"/", body)
	}
	if got := post("first"); got != "2b\r\n" {
		t.Errorf("first POST got %q, want the 4 bytes of its Content-Length, %q", got, "2b\r\n")
	}
	if got := post("second"); got != "fresh:second" {
		t.Errorf("second POST got %q, want %q", got, "fresh:second")
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
}

// TestH10ReuseKeepsHTTP11: HTTP/1.1 answers keep their connection on the
// transport: sequential requests of every kind it serves go over one.
func TestH10ReuseKeepsHTTP11(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/chunked":
			w.Write(b)
			w.(http.Flusher).Flush()
			w.Write([]byte("!"))
		default:
			w.Write(b)
		}
	})
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			b := startCountedBackend(t, h, withTLS)
			bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
				BackendTLS{Hosts: []string{"127.0.0.1:*"}, InsecureSkipVerify: true})
			p := &bk.profiles[0]
			if withTLS {
				p = bk.profileFor("127.0.0.1", "1")
			}
			const n = 5
			for i := range n {
				for _, tc := range []struct{ method, path, hdr, want string }{
					{"POST", "/", "", fmt.Sprintf("post %d", i)},
					{"PUT", "/chunked", "", fmt.Sprintf("put %d!", i)},
					{"POST", "/204", "", ""},
					{"POST", "/", "100-continue", fmt.Sprintf("expect %d", i)},
					{"HEAD", "/", "", ""},
				} {
					body := strings.TrimSuffix(tc.want, "!")
					req, _ := http.NewRequestWithContext(t.Context(), tc.method, b.URL+tc.path, strings.NewReader(body))
					if tc.method == "HEAD" {
						req.Body, req.ContentLength = nil, 0
					}
					if tc.hdr != "" {
						req.Header.Set("Expect", tc.hdr)
					}
					res, err := p.h1.RoundTrip(req)
					if err != nil {
						t.Fatalf("%s %s: %v", tc.method, tc.path, err)
					}
					got, err := io.ReadAll(res.Body)
					res.Body.Close()
					if err != nil || string(got) != tc.want {
						t.Fatalf("%s %s: %q, %v; want %q", tc.method, tc.path, got, err, tc.want)
					}
				}
			}
			if got := b.accepted.Load(); got != 1 {
				t.Errorf("backend accepted %d connections for %d sequential requests, want 1", got, 5*n)
			}
		})
	}
}

// h10Seeds are HTTP/1.0 answers for FuzzH10Guard: kept alive or not, with
// a Transfer-Encoding, no body, informational heads, short bodies.
func h10Seeds() []string {
	return []string{
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2b\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhel",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhelloextra",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5, 5\r\n\r\nhello",
		"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\nextra",
		"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.0 304 Not Modified\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nto the end",
		"HTTP/1.0 200 OK\nConnection: keep-alive\nContent-Length: 2\n\nhi",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n",
		"HTTP/1.0 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.0 101 Switching Protocols\r\nConnection: keep-alive\r\n\r\nraw",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n",
		"HTTP/1.0",
		"HTTP/0.9 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	}
}

// FuzzH10Guard: net/http's Transport reads every answer the same with and
// without h10Guard around its connection (one request on a new
// connection, as FuzzH1Transport sends it): the guard only ends an
// HTTP/1.0 response's stream where net/http ends the response.
func FuzzH10Guard(f *testing.F) {
	addH1Seeds(func(m uint8, s []byte) { f.Add(m, uint8(0), uint16(len(s)), s) })
	splitFuzz(f, append(h1ReviewSeeds(), h10Seeds()...), 1, func(t *testing.T, h1 http.Protocols, method, url string, readSize int, _ []byte) {
		plain := newBackendTransport(&tls.Config{}, h1, plainDialer.DialContext)
		defer plain.CloseIdleConnections()
		want := agentExchange(t, plain, method, url, readSize)
		guarded := &h1Transport{newBackendTransport(&tls.Config{}, h1, withH10Guard(plainDialer.DialContext))}
		defer guarded.CloseIdleConnections()
		got := agentExchange(t, guarded, method, url, readSize)
		if got.timedOut || want.timedOut {
			t.Fatalf("an exchange ran into its deadline: guarded %s, plain %s", describe(got), describe(want))
		}
		if got.failed != want.failed || got.status != want.status || got.proto != want.proto ||
			got.length != want.length || !sameHeader(got.header, want.header) ||
			!bytes.Equal(got.body, want.body) || !sameHeader(got.trailer, want.trailer) {
			t.Errorf("with the guard net/http read\n  %s\nwithout\n  %s", describe(got), describe(want))
		}
	})
}

// TestH10ReuseLongBody: an HTTP/1.0 keep-alive answer whose body takes many
// reads, sent in pieces: the guard hands all of it through, then closes.
func TestH10ReuseLongBody(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	addr, accepted := h10BackendFirst(t, nil, func(br *bufio.Reader, c net.Conn) error {
		if _, err := readRequestWithBody(br); err != nil {
			return err
		}
		fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n", len(body))
		for rest := body; rest != ""; {
			n := min(len(rest), 100_003)
			if _, err := io.WriteString(c, rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	url := "http://" + addr + "/"
	if got := h10Exchange(t, bk.profiles[0].h1, "POST", url, "first"); got != body {
		t.Fatalf("first POST got %d bytes (%.40q), want the %d of the body", len(got), got, len(body))
	}
	if got := h10Exchange(t, bk.profiles[0].h1, "POST", url, "second"); got != "fresh:second" {
		t.Errorf("second POST got %q, want %q", got, "fresh:second")
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
}

// TestH10ReuseConcurrent: concurrent users of a backend that answers every
// request HTTP/1.0 keep-alive with a chunked body read by its
// Content-Length, and the rest when the next request comes on the
// connection. Each user gets his own answer; no connection carries two.
func TestH10ReuseConcurrent(t *testing.T) {
	addr, accepted := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			body, err := readRequestWithBody(br)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			if _, err := br.Peek(1); err != nil {
				return
			}
			io.WriteString(c, h10Stale)
		}
	})
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	url := "http://" + addr + "/"
	const workers, each = 6, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				body := fmt.Sprintf("user %d request %d", w, i)
				if got := h10Exchange(t, bk.profiles[0].h1, "POST", url, body); got != body {
					t.Errorf("%s got %q", body, got)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := accepted.Load(); n != workers*each {
		t.Errorf("backend accepted %d connections for %d requests, want one each", n, workers*each)
	}
}

// TestH10ReuseEarlyAnswer: an HTTP/1.1 backend answers before it has read
// the request's body, which the transport sends after the answer's head
// (chunked, with request lines in it): the body's writes are not taken for
// the next request, and the connection still carries every request.
func TestH10ReuseEarlyAnswer(t *testing.T) {
	bodies := make(chan string, 3)
	addr, accepted := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			bodies <- string(b)
		}
	})
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	url := "http://" + addr + "/"
	for i := range 3 {
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", url, pr)
		res, err := bk.profiles[0].h1.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		// The body after the answer's head: chunks that read like
		// request lines, then its end.
		io.WriteString(pw, "GET / HTTP/1.1\r\n\r\n")
		io.WriteString(pw, "HTTP/1.0 200 OK\r\n")
		pw.Close()
		// Read the answer once the backend has the whole body, so
		// that the transport may keep the connection (it keeps none
		// whose request is still being written).
		if b := <-bodies; b != "GET / HTTP/1.1\r\n\r\nHTTP/1.0 200 OK\r\n" {
			t.Fatalf("backend read the body %q", b)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(got) != "early" {
			t.Fatalf("request %d: %q, %v", i, got, err)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

// TestH10ReuseTLSDialErrors: the HTTP/1.1 transport's own TLS dial (which
// lets h10Guard see an https backend's plain bytes) fails as the
// transport's did, in words ClassifyBackendError recognises.
func TestH10ReuseTLSDialErrors(t *testing.T) {
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), true)
	plain := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), false)
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	for _, tc := range []struct{ name, url, want string }{
		{"untrusted certificate", b.URL, "signed by an authority the agent does not trust"},
		{"not TLS", strings.Replace(plain.URL, "http:", "https:", 1), "did not answer with TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "POST", tc.url+"/", strings.NewReader("x"))
			res, err := bk.Transport(req, false).RoundTrip(req)
			if err == nil {
				res.Body.Close()
				t.Fatal("request succeeded, want a TLS error")
			}
			if _, msg := ClassifyBackendError(err); !strings.Contains(msg, tc.want) {
				t.Errorf("classified as %q (error %v), want it to say %q", msg, err, tc.want)
			}
		})
	}
}

// TestH10ReuseAfterHTTP11: a connection kept after an HTTP/1.1 answer
// carries the next request, whose HTTP/1.0 answer then ends it: the guard
// finds the second answer's head on the reused connection.
func TestH10ReuseAfterHTTP11(t *testing.T) {
	addr, accepted := h10BackendFirst(t, nil, func(br *bufio.Reader, c net.Conn) error {
		if _, err := readRequestWithBody(br); err != nil {
			return err
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
		if _, err := readRequestWithBody(br); err != nil {
			return err
		}
		_, err := io.WriteString(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2b\r\n")
		return err
	})
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	url := "http://" + addr + "/"
	for i, want := range []string{"one", "2b\r\n", "fresh:third"} {
		if got := h10Exchange(t, bk.profiles[0].h1, "POST", url, []string{"first", "second", "third"}[i]); got != want {
			t.Errorf("request %d got %q, want %q", i+1, got, want)
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2 (the first kept once, after HTTP/1.1)", n)
	}
}

// TestH10ReuseBodyWriteNotARequest: a chunked body written after an early
// HTTP/1.1 answer, one of whose writes (the transport's bufio.Writer
// flushes 4090 bytes of an 8 KiB chunk, then writes the rest directly)
// begins with a request line. It is no request: the answer's body that
// follows passes whole, and the next request's HTTP/1.0 answer is read by
// its own method.
func TestH10ReuseBodyWriteNotARequest(t *testing.T) {
	const inner = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi, and the rest"
	addr, accepted := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(inner))
		io.ReadAll(req.Body)
		io.WriteString(c, inner)
		if _, err := readRequestWithBody(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 6\r\n\r\nsecond")
		io.Copy(io.Discard, br)
	})
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	url := "http://" + addr + "/"
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url, pr)
	res, err := bk.profiles[0].h1.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("x", 8192))
	copy(chunk[4090:], "HEAD / HTTP/1.1\r\n")
	pw.Write(chunk)
	pw.Close()
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(got) != inner {
		t.Fatalf("first answer: %q, %v; want %q", got, err, inner)
	}
	if got := h10Exchange(t, bk.profiles[0].h1, "POST", url, "x"); got != "second" {
		t.Errorf("second request got %q, want %q", got, "second")
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

// TestH10ReuseResponseTLS: an https response of the HTTP/1.1 transport,
// whose TLS the agent runs itself, still says how it came.
func TestH10ReuseResponseTLS(t *testing.T) {
	b := startCountedBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), true)
	bk := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
		BackendTLS{Hosts: []string{"127.0.0.1:*"}, InsecureSkipVerify: true})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", b.URL+"/", strings.NewReader("x"))
	res, err := bk.Transport(req, false).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.TLS == nil || !res.TLS.HandshakeComplete {
		t.Errorf("res.TLS = %+v, want the connection's state", res.TLS)
	}
}
