package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// trailerBackend starts an HTTP backend on loopback speaking the given
// protocols; it stops when the test ends.
func trailerBackend(t *testing.T, h http.HandlerFunc, set func(*http.Protocols)) string {
	t.Helper()
	var p http.Protocols
	set(&p)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: &p}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// trailerRig publishes backend as host with one agent.
func trailerRig(t *testing.T, host, backend string, http2 bool) *testrig.Rig {
	t.Helper()
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "trailers", Hosts: []string{host}, Backend: testrig.MustURL(t, backend), BackendHTTP2: http2},
	}})
	rig.StartAgent(nil)
	return rig
}

// trailerClients are the client sides every trailer test runs with.
var trailerClients = map[string]func(*http.Protocols){
	"http1": func(p *http.Protocols) { p.SetHTTP1(true) },
	"h2c":   func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) },
}

// writeChunks writes n lines, flushing after each so that the response is
// chunked (HTTP/1.1) or streamed (HTTP/2), and returns their SHA-256.
func writeChunks(w http.ResponseWriter, n int) string {
	h := sha256.New()
	rc := http.NewResponseController(w)
	for i := range n {
		line := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i*50))
		io.WriteString(io.MultiWriter(w, h), line)
		rc.Flush()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// bodySHA reads res's body and returns its SHA-256; the trailers are
// complete afterwards.
func bodySHA(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, res.Body); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// getTrailers is c's GET of / at rig for host, which must answer 200 (a
// request bounded in time); its body is the caller's to read and close.
func getTrailers(t *testing.T, c *http.Client, rig *testrig.Rig, host string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(boundedCtx(t), "GET", rig.URL+"/", nil)
	req.Host = host
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	return res
}

// TestTrailersHTTP1Declared: an HTTP/1.1 backend announces its trailers in
// a Trailer header and sends them after a chunked body.
func TestTrailersHTTP1Declared(t *testing.T) {
	const host = "trailers.test"
	backend := trailerBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 {
			http.Error(w, "want HTTP/1.1, got "+r.Proto, http.StatusBadRequest)
			return
		}
		w.Header().Set("Trailer", "X-Checksum, X-Lines")
		w.Header().Add("Trailer", "X-Multi")
		sum := writeChunks(w, 40)
		w.Header().Set("X-Checksum", sum)
		w.Header().Set("X-Lines", "40")
		w.Header()["X-Multi"] = []string{"a", "b"}
	}, func(p *http.Protocols) { p.SetHTTP1(true) })
	rig := trailerRig(t, host, backend, false)
	for name, set := range trailerClients {
		t.Run(name, func(t *testing.T) {
			c := protoClient(t, nil, set)
			res := getTrailers(t, c, rig, host)
			// The client learns the names up front, the values at the end.
			for _, k := range []string{"X-Checksum", "X-Lines", "X-Multi"} {
				if _, ok := res.Trailer[k]; !ok {
					t.Errorf("trailer %s not announced: %v", k, res.Trailer)
				}
			}
			sum := bodySHA(t, res)
			if got := res.Trailer.Get("X-Checksum"); got != sum {
				t.Errorf("X-Checksum %q, want the body's %q", got, sum)
			}
			if got := res.Trailer.Get("X-Lines"); got != "40" {
				t.Errorf("X-Lines %q", got)
			}
			if got := res.Trailer.Values("X-Multi"); fmt.Sprint(got) != "[a b]" {
				t.Errorf("X-Multi %q", got)
			}
		})
	}
}

// TestTrailersHTTP2Undeclared: an HTTP/2 backend (the app's backend_http2)
// sends trailers it never announced, the way gRPC servers do.
func TestTrailersHTTP2Undeclared(t *testing.T) {
	const host = "trailers.test"
	backend := trailerBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2, got "+r.Proto, http.StatusBadRequest)
			return
		}
		sum := writeChunks(w, 40)
		w.Header().Set(http.TrailerPrefix+"X-Checksum", sum)
		w.Header().Set(http.TrailerPrefix+"X-Status", "all good")
	}, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) })
	rig := trailerRig(t, host, backend, true)
	for name, set := range trailerClients {
		t.Run(name, func(t *testing.T) {
			c := protoClient(t, nil, set)
			res := getTrailers(t, c, rig, host)
			sum := bodySHA(t, res)
			if got := res.Trailer.Get("X-Checksum"); got != sum {
				t.Errorf("X-Checksum %q, want the body's %q (trailers %v)", got, sum, res.Trailer)
			}
			if got := res.Trailer.Get("X-Status"); got != "all good" {
				t.Errorf("X-Status %q (trailers %v)", got, res.Trailer)
			}
		})
	}
}

// TestTrailersWithLength: an HTTP/2 backend may send a Content-Length and
// trailers together; an HTTP/1.1 client gets the trailers too. The length
// went out with the head, so net/http sent the body unchunked and dropped
// the trailers (so does httputil.ReverseProxy); the gateway now drops the
// length when trailers are announced.
func TestTrailersWithLength(t *testing.T) {
	const host = "trailers.test"
	backend := trailerBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-T")
		w.Header().Set("Content-Length", "4")
		io.WriteString(w, "body")
		w.Header().Set("X-T", "tv")
	}, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) })
	rig := trailerRig(t, host, backend, true)
	for name, set := range trailerClients {
		t.Run(name, func(t *testing.T) {
			c := protoClient(t, nil, set)
			for _, method := range []string{"GET", "HEAD"} {
				req, _ := http.NewRequestWithContext(boundedCtx(t), method, rig.URL+"/", nil)
				req.Host = host
				res, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != http.StatusOK {
					t.Fatalf("%s: status %d, %q, %v", method, res.StatusCode, b, err)
				}
				if method == "HEAD" {
					// No body and so no trailers: the length stays.
					if res.ContentLength != 4 {
						t.Errorf("HEAD: Content-Length %d, want the backend's 4", res.ContentLength)
					}
					continue
				}
				if string(b) != "body" || res.Trailer.Get("X-T") != "tv" {
					t.Errorf("GET: body %q, trailers %v; want \"body\" and X-T: tv", b, res.Trailer)
				}
			}
		})
	}
}

// trailerBody is a request body of n lines that fills the declared request
// trailers with its checksum and length when it reaches EOF, as a client
// computing them while uploading would.
type trailerBody struct {
	r       io.Reader
	h       hash.Hash
	n       int
	trailer http.Header
}

func newTrailerBody(lines int, trailer http.Header) *trailerBody {
	var sb strings.Builder
	for i := range lines {
		fmt.Fprintf(&sb, "upload %d %s\n", i, strings.Repeat("y", i*40))
	}
	return &trailerBody{r: strings.NewReader(sb.String()), h: sha256.New(), trailer: trailer}
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	b.n += n
	if err == io.EOF {
		b.trailer.Set("X-Upload-Sum", hex.EncodeToString(b.h.Sum(nil)))
		b.trailer.Set("X-Upload-Len", strconv.Itoa(b.n))
	}
	return n, err
}

// TestTrailersRequest: trailers a client sends after a streamed upload
// (chunked in HTTP/1.1) reach the HTTP/1.1 backend, which reads them from r.Trailer after the body.
func TestTrailersRequest(t *testing.T) {
	const host = "trailers.test"
	backend := trailerBackend(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "declared=%s sum-ok=%t len-ok=%t sum=%q len=%q",
			strings.Join(slices.Sorted(maps.Keys(r.Trailer)), ","),
			r.Trailer.Get("X-Upload-Sum") == hex.EncodeToString(h.Sum(nil)),
			r.Trailer.Get("X-Upload-Len") == strconv.FormatInt(n, 10),
			r.Trailer.Get("X-Upload-Sum"), r.Trailer.Get("X-Upload-Len"))
	}, func(p *http.Protocols) { p.SetHTTP1(true) })
	rig := trailerRig(t, host, backend, false)
	for name, set := range trailerClients {
		c := protoClient(t, nil, set)
		for _, lines := range []int{1, 200} { // one chunk; many chunks
			t.Run(fmt.Sprintf("%s/%d", name, lines), func(t *testing.T) {
				trailer := http.Header{"X-Upload-Sum": nil, "X-Upload-Len": nil}
				req, _ := http.NewRequestWithContext(boundedCtx(t), "POST", rig.URL+"/upload", newTrailerBody(lines, trailer))
				req.Host = host
				req.ContentLength = -1 // chunked, so trailers can follow
				req.Trailer = trailer
				res, body := fetch(t, c, req)
				const want = "declared=X-Upload-Len,X-Upload-Sum sum-ok=true len-ok=true"
				if res.StatusCode != http.StatusOK || !strings.HasPrefix(body, want) {
					t.Fatalf("%d %q, want %q…", res.StatusCode, body, want)
				}
			})
		}
	}
}
