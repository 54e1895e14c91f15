package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/demoapp"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/testrig"
)

// publicTLS returns a gateway config edit that serves the public listener
// over TLS with a fresh self-signed certificate for hosts, and the pool
// that trusts it.
func publicTLS(t *testing.T, hosts ...string) (func(*gateway.Config), *x509.CertPool) {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), hosts)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	edit := func(c *gateway.Config) {
		c.PublicTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	return edit, roots
}

// protoClient returns a client speaking only the given protocols; its idle
// connections close when the test ends.
func protoClient(t *testing.T, tlsCfg *tls.Config, set func(*http.Protocols)) *http.Client {
	var p http.Protocols
	set(&p)
	tr := &http.Transport{TLSClientConfig: tlsCfg, Protocols: &p, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// protoBackend answers with what the backend saw of the request.
func protoBackend(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %s proto=%s xfp=%s xfh=%s body=%s",
			r.Method, r.URL.Path, r.Proto, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host"), body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// doHost sends method to url with Host host and returns the response and its
// whole body.
func doHost(t *testing.T, c *http.Client, method, url, host, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(boundedCtx(t), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	return fetch(t, c, req)
}

func TestTLSPublicListener(t *testing.T) {
	const host = "tls.test"
	edit, roots := publicTLS(t, host)
	rig := testrig.New(t, testrig.Options{
		Routes:  []gateway.Route{{App: "tls", Hosts: []string{host}, Backend: testrig.MustURL(t, protoBackend(t).URL)}},
		Gateway: edit,
	})
	rig.StartAgent(nil)
	base := "https://" + rig.G.PublicAddr().String()
	tlsCfg := &tls.Config{RootCAs: roots, ServerName: host}
	cases := []struct {
		name, proto, alpn string
		offer             []string // ALPN protocols the client offers; nil → the Transport's choice
		set               func(*http.Protocols)
	}{
		// An HTTP/1.1-only client offers no ALPN unless told to.
		{"http1", "HTTP/1.1", "", nil, func(p *http.Protocols) { p.SetHTTP1(true) }},
		{"http1-alpn", "HTTP/1.1", "http/1.1", []string{"http/1.1"}, func(p *http.Protocols) { p.SetHTTP1(true) }},
		{"h2", "HTTP/2.0", "h2", nil, func(p *http.Protocols) { p.SetHTTP2(true) }},
		// A client that offers both gets h2.
		{"both", "HTTP/2.0", "h2", nil, func(p *http.Protocols) { p.SetHTTP1(true); p.SetHTTP2(true) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tlsCfg.Clone()
			cfg.NextProtos = tc.offer
			c := protoClient(t, cfg, tc.set)
			for i, method := range []string{"GET", "POST", "GET"} {
				var body string
				if method == "POST" {
					body = strings.Repeat("tls!", 100)
				}
				res, got := doHost(t, c, method, base+"/p", host, body)
				if res.Proto != tc.proto || res.TLS == nil || res.TLS.NegotiatedProtocol != tc.alpn {
					t.Fatalf("request %d: proto %s, ALPN %v; want %s, %s", i, res.Proto, res.TLS, tc.proto, tc.alpn)
				}
				// The backend always gets HTTP/1.1 from the agent, and learns
				// that the client used TLS.
				want := fmt.Sprintf("%s /p proto=HTTP/1.1 xfp=https xfh=%s body=%s", method, host, body)
				if res.StatusCode != http.StatusOK || got != want {
					t.Fatalf("request %d: %d %q, want %q", i, res.StatusCode, got, want)
				}
			}
		})
	}
}

// TestH2CPriorKnowledge: the plain public listener speaks HTTP/2 to a client
// that starts with the HTTP/2 preface.
func TestH2CPriorKnowledge(t *testing.T) {
	const host = "h2c.test"
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "h2c", Hosts: []string{host}, Backend: testrig.MustURL(t, protoBackend(t).URL)},
	}})
	rig.StartAgent(nil)
	c := protoClient(t, nil, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) })
	for i, method := range []string{"GET", "POST", "GET"} {
		var body string
		if method == "POST" {
			body = strings.Repeat("h2c!", 100)
		}
		res, got := doHost(t, c, method, rig.URL+"/p", host, body)
		want := fmt.Sprintf("%s /p proto=HTTP/1.1 xfp=http xfh=%s body=%s", method, host, body)
		if res.Proto != "HTTP/2.0" || res.StatusCode != http.StatusOK || got != want {
			t.Fatalf("request %d: %s %d %q, want HTTP/2.0 200 %q", i, res.Proto, res.StatusCode, got, want)
		}
	}
}

func TestGRPCTLS(t *testing.T) {
	edit, roots := publicTLS(t, grpcHost)
	svc := &testService{unary: echoUnary, fullDuplex: echoDuplex}
	rig := grpcRig(t, startGRPCBackend(t, svc), edit)
	c := dialGRPC(t, rig, credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: grpcHost}))
	t.Run("unary", func(t *testing.T) {
		for i := range 5 {
			msg := fmt.Sprintf("secure %d", i)
			res, err := c.UnaryCall(boundedCtx(t), &testgrpc.SimpleRequest{Payload: grpcPayload([]byte(msg))})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(res.GetPayload().GetBody()); got != "echo:"+msg {
				t.Fatalf("got %q", got)
			}
		}
	})
	t.Run("bidi", func(t *testing.T) { bidiPingPong(t, c, 50) })
}

// TestWSOverTLS: a WebSocket through the TLS listener (wss://, HTTP/1.1).
func TestWSOverTLS(t *testing.T) {
	const host = "wss.test"
	edit, roots := publicTLS(t, host)
	backend := httptest.NewServer(demoapp.New())
	t.Cleanup(backend.Close)
	rig := testrig.New(t, testrig.Options{
		Routes:  []gateway.Route{{App: "wss", Hosts: []string{host}, Backend: testrig.MustURL(t, backend.URL)}},
		Gateway: edit,
	})
	rig.StartAgent(nil)
	ctx := boundedCtx(t)
	c, res, err := websocket.Dial(ctx, "wss://"+rig.G.PublicAddr().String()+"/ws", &websocket.DialOptions{
		Host:       host,
		HTTPClient: protoClient(t, &tls.Config{RootCAs: roots, ServerName: host}, func(p *http.Protocols) { p.SetHTTP1(true) }),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if res.TLS == nil {
		t.Fatal("the handshake did not use TLS")
	}
	wsRoundTrips(ctx, t, c, 20)
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
}
