package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// ridSession is a tunnel.Session that hands the X-Request-Id of every
// request head it is sent to heads, and answers 204, or 101 to a request
// for an upgrade (then ends the stream, as a backend that closes).
type ridSession struct {
	heads chan []string
	done  chan struct{}
}

func (s *ridSession) OpenStream(context.Context) (tunnel.Stream, error) {
	return &ridStream{s: s, upgrade: make(chan bool, 1)}, nil
}
func (s *ridSession) Info() tunnel.SessionInfo {
	return tunnel.SessionInfo{ID: "rid", AgentName: "agent", Group: "g"}
}
func (s *ridSession) Draining() <-chan struct{} { return s.done }
func (s *ridSession) Done() <-chan struct{}     { return s.done }
func (s *ridSession) Close(error)               {}

type ridStream struct {
	s        *ridSession
	upgrade  chan bool // from the head's Send to the first Recv
	answered bool
}

func (st *ridStream) Send(f *tunnel.Frame) error {
	if f.Request == nil {
		return nil
	}
	var ids []string
	up := false
	for _, h := range f.Request.GetHeaders() {
		switch http.CanonicalHeaderKey(h.Name) {
		case RequestIDHeader:
			ids = append(ids, h.Values...)
		case "Upgrade":
			up = true
		}
	}
	st.s.heads <- ids
	st.upgrade <- up
	return nil
}

func (st *ridStream) Recv() (*tunnel.Frame, error) {
	if st.answered {
		return nil, io.EOF
	}
	st.answered = true
	if <-st.upgrade {
		return &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: 101, Headers: []*tunnelv1.Header{
			{Name: "Upgrade", Values: []string{"raw"}}, {Name: "Connection", Values: []string{"Upgrade"}}}}}, nil
	}
	return &tunnel.Frame{Response: &tunnelv1.ResponseHead{Status: 204}, End: true}, nil
}

func (st *ridStream) Finish(bool) {}

// ridGateway is a gateway built by New, public listener included, with
// trusted as public.trusted_proxies, serving app.test over a ridSession.
// access receives the request_id of every access line.
func ridGateway(t *testing.T, trusted ...string) (addr string, s *ridSession, access <-chan string) {
	t.Helper()
	s = &ridSession{heads: make(chan []string, 8), done: make(chan struct{})}
	ids := make(chan string, 8)
	core, logs := observer.New(zapcore.InfoLevel)
	// The hook runs once the observer has the line.
	core = zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
		if e.Message == "access" {
			all := logs.FilterMessage("access").All()
			ids <- all[len(all)-1].ContextMap()["request_id"].(string)
		}
		return nil
	})
	cfg := Config{Log: zap.New(core), Routes: []Route{{App: "a", Hosts: []string{"app.test"}, Group: "g",
		Backend: &url.URL{Scheme: "http", Host: "backend:80"}}}}
	for _, p := range trusted {
		cfg.TrustedProxies = append(cfg.TrustedProxies, netip.MustParsePrefix(p))
	}
	g, cancel, served := startShutdownGatewayWith(t, cfg, func(g *Gateway) { g.registry.Add(s) })
	t.Cleanup(func() {
		cancel()
		<-served
	})
	return g.PublicAddr().String(), s, ids
}

// ridExchange sends one request to app.test with the X-Request-Id values
// sent (none when empty), over HTTP/1.1 or h2c, or as a request for an
// upgrade on a raw connection, and returns what the backend saw, what the
// access log wrote and what the client was answered in X-Request-Id.
func ridExchange(t *testing.T, addr string, s *ridSession, access <-chan string, how string, sent ...string) (backend, logged, answered string) {
	t.Helper()
	switch how {
	case "upgrade":
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		head := "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: raw\r\n"
		for _, v := range sent {
			head += "X-Request-Id: " + v + "\r\n"
		}
		if _, err := io.WriteString(c, head+"\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v, want 101", res, err)
		}
		answered = res.Header.Get(RequestIDHeader)
		c.Close()
	case "http1", "h2c":
		var protocols http.Protocols
		if how == "h2c" {
			protocols.SetUnencryptedHTTP2(true)
		} else {
			protocols.SetHTTP1(true)
		}
		tr := &http.Transport{Protocols: &protocols}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequest("GET", "http://"+addr+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "app.test"
		for _, v := range sent {
			req.Header.Add(RequestIDHeader, v)
		}
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent || (how == "h2c") != (res.ProtoMajor == 2) {
			t.Fatalf("%s: %s %s, want 204", how, res.Proto, res.Status)
		}
		answered = res.Header.Get(RequestIDHeader)
	default:
		t.Fatalf("unknown way %q", how)
	}
	ids := <-s.heads
	if len(ids) != 1 {
		t.Fatalf("%s: the backend saw X-Request-Id %q, want one value", how, ids)
	}
	return ids[0], <-access, answered
}

// TestRequestIDFromUntrustedPeerReplaced: a client that is not a trusted
// proxy cannot pick the request id. Before, the gateway kept any sane
// X-Request-Id from anyone: "mine" reached the backend, the access log and
// the identity assertion's rid (all three come from the exchange's one
// id), and two clients' requests with the same id were logged as one.
func TestRequestIDFromUntrustedPeerReplaced(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
	}{
		{"no trusted proxies", nil},
		{"peer not among the trusted proxies", []string{"10.0.0.0/8", "2001:db8::/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, s, access := ridGateway(t, tc.trusted...)
			seen := map[string]bool{}
			for _, how := range []string{"http1", "h2c", "upgrade", "http1"} {
				backend, logged, _ := ridExchange(t, addr, s, access, how, "mine")
				if backend == "mine" || logged == "mine" {
					t.Errorf("%s: the client's id was kept: backend %q, access log %q", how, backend, logged)
					continue
				}
				checkGeneratedID(t, backend)
				if logged != backend {
					t.Errorf("%s: access log request_id %q, backend saw %q", how, logged, backend)
				}
				if seen[backend] {
					t.Errorf("%s: id %q given to two requests", how, backend)
				}
				seen[backend] = true
			}
		})
	}
}

// TestRequestIDFromTrustedProxy: a trusted proxy's sane X-Request-Id
// follows the request on both relay paths and into the access log; an
// insane one is replaced, as before.
func TestRequestIDFromTrustedProxy(t *testing.T) {
	addr, s, access := ridGateway(t, "127.0.0.0/8", "::1/128")
	for _, how := range []string{"http1", "h2c", "upgrade"} {
		backend, logged, _ := ridExchange(t, addr, s, access, how, "lb-1.a_B:9")
		if backend != "lb-1.a_B:9" || logged != backend {
			t.Errorf("%s: backend %q, access log %q; want the proxy's lb-1.a_B:9", how, backend, logged)
		}
	}
	for _, bad := range []string{"bad id", "<script>", "a/b", strings.Repeat("a", maxRequestIDLen+1)} {
		for _, how := range []string{"http1", "upgrade"} {
			backend, logged, _ := ridExchange(t, addr, s, access, how, bad)
			if backend == bad {
				t.Errorf("%s: the proxy's malformed id %q was kept", how, bad)
				continue
			}
			checkGeneratedID(t, backend)
			if logged != backend {
				t.Errorf("%s: access log request_id %q, backend saw %q", how, logged, backend)
			}
		}
	}
	// No id from the proxy: the gateway makes one.
	backend, _, _ := ridExchange(t, addr, s, access, "http1")
	checkGeneratedID(t, backend)
}

// TestRequestIDErrorPageUntrusted: the gateway's own answer (no route)
// names the gateway's id, not one an untrusted client sent.
func TestRequestIDErrorPageUntrusted(t *testing.T) {
	addr, _, access := ridGateway(t)
	req, err := http.NewRequest("GET", "http://"+addr+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "unknown.test"
	req.Header.Set("Accept", "application/json")
	req.Header.Set(RequestIDHeader, "mine")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	got := res.Header.Get(RequestIDHeader)
	if res.StatusCode != http.StatusNotFound || got == "mine" || strings.Contains(string(b), "mine") {
		t.Fatalf("status %d, X-Request-Id %q, body %s; want 404 naming the gateway's id", res.StatusCode, got, b)
	}
	checkGeneratedID(t, got)
	if logged := <-access; logged != got {
		t.Errorf("access log request_id %q, answer %q", logged, got)
	}
}

// TestTrustProxiesRequestIDHeader: what reaches the exchange of the
// X-Request-Id of each kind of peer.
func TestTrustProxiesRequestIDHeader(t *testing.T) {
	var got []string
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Values(RequestIDHeader) })
	some := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for _, tc := range []struct {
		name     string
		prefixes []netip.Prefix
		peer     string
		keep     bool
	}{
		{"no trusted proxies", nil, "10.0.0.5:1234", false},
		{"untrusted peer", some, "192.0.2.1:1234", false},
		{"trusted peer", some, "10.0.0.5:1234", true},
		{"trusted IPv6 peer", some, "[2001:db8::5]:1234", true},
		{"v4-mapped trusted peer", some, "[::ffff:10.0.0.5]:1234", true},
		{"peer address not parsed", some, "10.0.0.5", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest("GET", "http://app.test/", nil)
			if err != nil {
				t.Fatal(err)
			}
			r.RemoteAddr = tc.peer
			r.Header.Set(RequestIDHeader, "mine")
			got = nil
			trustProxies(next, tc.prefixes).ServeHTTP(httptest.NewRecorder(), r)
			if keep := len(got) == 1 && got[0] == "mine"; keep != tc.keep || (!keep && len(got) != 0) {
				t.Errorf("the exchange saw X-Request-Id %q; want it kept: %v", got, tc.keep)
			}
		})
	}
}

// TestRequestIDSeveralFromTrustedProxy: of several X-Request-Id lines from a
// trusted proxy, the last is kept, the one the nearest proxy added: a load
// balancer that appends its own (HAProxy's "http-request add-header") leaves
// the client's first, and the gateway kept that one (the client's choice).
func TestRequestIDSeveralFromTrustedProxy(t *testing.T) {
	addr, s, access := ridGateway(t, "127.0.0.0/8", "::1/128")
	for _, how := range []string{"http1", "h2c", "upgrade"} {
		backend, logged, answered := ridExchange(t, addr, s, access, how, "client-pick", "lb-7")
		if backend != "lb-7" || logged != backend {
			t.Errorf("%s: backend %q, access log %q; want the nearest proxy's lb-7", how, backend, logged)
		}
		if how != "upgrade" && answered != "" && answered != backend {
			t.Errorf("%s: answered X-Request-Id %q, backend saw %q", how, answered, backend)
		}
	}
	// A malformed last one is replaced, not passed over for the client's.
	backend, _, _ := ridExchange(t, addr, s, access, "http1", "client-pick", "bad id")
	if backend == "client-pick" {
		t.Errorf("http1: the client's id was kept behind the proxy's malformed one")
	}
	checkGeneratedID(t, backend)
}
