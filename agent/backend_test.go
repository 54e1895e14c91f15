package agent

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// protoEchoHandler answers with the protocol it was reached over.
var protoEchoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%d", r.ProtoMajor)
})

// startH2CBackend starts a plain-text server speaking HTTP/1.1 and h2c (prior
// knowledge) on loopback and returns its base URL.
func startH2CBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// startTLSBackend starts an httptest TLS server (certificate for example.com,
// 127.0.0.1 and ::1), with HTTP/2 on offer when h2 is set.
func startTLSBackend(t *testing.T, h http.Handler, h2 bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func startPlainBackend(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// writeBackendCA writes srv's certificate as a PEM CA file and returns its path.
func writeBackendCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(name, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

func mustParseAllowlist(t *testing.T, patterns ...string) *Allowlist {
	t.Helper()
	a, err := ParseAllowlist(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustBackends(t *testing.T, allow *Allowlist, profiles ...BackendTLS) *Backends {
	t.Helper()
	b, err := NewBackends(allow, profiles)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.CloseIdleConnections)
	return b
}

// backendRoundTrip sends a request through the client b picks for it and
// returns the body.
func backendRoundTrip(t *testing.T, b *Backends, method, rawURL, contentType string, force bool) (string, *http.Response, error) {
	t.Helper()
	var hdr []string
	if contentType != "" {
		hdr = []string{"Content-Type", contentType}
	}
	res, body, err := roundTripBody(t, pickedClient{b, force}, method, rawURL, hdr...)
	return body, res, err
}

// pickedClient sends each request through the client Backends picks for it.
type pickedClient struct {
	b     *Backends
	force bool
}

func (p pickedClient) RoundTrip(req *http.Request) (*http.Response, error) {
	return p.b.Transport(req, p.force).RoundTrip(req)
}

func TestBackendsProtocolChoice(t *testing.T) {
	h1 := startPlainBackend(t, protoEchoHandler).URL
	h2c := startH2CBackend(t, protoEchoHandler)
	tlsH2 := startTLSBackend(t, protoEchoHandler, true)
	tlsH1 := startTLSBackend(t, protoEchoHandler, false)
	b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
		BackendTLS{Hosts: []string{tlsH2.Listener.Addr().String()}, CAFile: writeBackendCA(t, tlsH2)},
		BackendTLS{Hosts: []string{tlsH1.Listener.Addr().String()}, CAFile: writeBackendCA(t, tlsH1)},
	)

	tests := []struct {
		name        string
		url         string
		contentType string
		force       bool
		wantProto   string
		wantErr     bool
	}{
		{"h1 plain", h1, "", false, "1", false},
		{"h1 plain with body type", h1, "application/json", false, "1", false},
		{"h2c server, plain request stays h1", h2c, "text/plain", false, "1", false},
		{"h2c grpc", h2c, "application/grpc", false, "2", false},
		{"h2c grpc+proto", h2c, "application/grpc+proto", false, "2", false},
		{"h2c grpc upper case", h2c, "Application/GRPC", false, "2", false},
		{"h2c grpc params", h2c, "application/grpc;charset=utf-8", false, "2", false},
		{"h2c grpc-web stays h1", h2c, "application/grpc-web", false, "1", false},
		{"h2c grpc-web-text stays h1", h2c, "application/grpc-web-text", false, "1", false},
		{"h2c forced", h2c, "", true, "2", false},
		{"h1-only server forced fails", h1, "", true, "", true},
		{"https h2 server, plain request stays h1", tlsH2.URL, "", false, "1", false},
		{"https grpc uses ALPN h2", tlsH2.URL, "application/grpc", false, "2", false},
		{"https forced h2", tlsH2.URL, "text/html", true, "2", false},
		{"https h1-only server", tlsH1.URL, "", false, "1", false},
		{"https h1-only server refuses grpc", tlsH1.URL, "application/grpc", false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := backendRoundTrip(t, b, http.MethodGet, tt.url+"/", tt.contentType, tt.force)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("request succeeded over HTTP/%s, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.wantProto {
				t.Errorf("backend saw HTTP/%s, want HTTP/%s", got, tt.wantProto)
			}
		})
	}
}

func TestIsGRPC(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{"application/grpc", true},
		{"application/grpc+proto", true},
		{"application/grpc+json", true},
		{"application/grpc; charset=utf-8", true},
		{"APPLICATION/GRPC", true},
		{"application/grpc-web", false},
		{"application/grpc-web+proto", false},
		{"application/grpcx", false},
		{"application/grp", false},
		{"application/json", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := isGRPC(tt.ct); got != tt.want {
			t.Errorf("isGRPC(%q) = %v, want %v", tt.ct, got, tt.want)
		}
	}
}

func TestBackendsTLSProfiles(t *testing.T) {
	srv := startTLSBackend(t, protoEchoHandler, false)
	ca := writeBackendCA(t, srv)
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)

	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
	)
	tests := []struct {
		name     string
		profiles []BackendTLS
		url      string
		wantErr  any // pointer to the error type expected via errors.As; nil means success
	}{
		{"system roots refuse self-signed", nil, srv.URL, &unknownCA},
		{"ca file trusts it", []BackendTLS{{Hosts: []string{addr}, CAFile: ca}}, srv.URL, nil},
		{"ca file via any-port pattern", []BackendTLS{{Hosts: []string{"127.0.0.1:*"}, CAFile: ca}}, srv.URL, nil},
		{"insecure accepts self-signed", []BackendTLS{{Hosts: []string{addr}, InsecureSkipVerify: true}}, srv.URL, nil},
		{"profile for another host does not apply", []BackendTLS{{Hosts: []string{"other.example:443"}, CAFile: ca}}, srv.URL, &unknownCA},
		{"profile for another port does not apply", []BackendTLS{{Hosts: []string{"127.0.0.1:1"}, InsecureSkipVerify: true}}, srv.URL, &unknownCA},
		{"first match wins", []BackendTLS{
			{Hosts: []string{"127.0.0.1:*"}},
			{Hosts: []string{addr}, InsecureSkipVerify: true},
		}, srv.URL, &unknownCA},
		{"server name override", []BackendTLS{{Hosts: []string{addr}, CAFile: ca, ServerName: "example.com"}}, srv.URL, nil},
		{"wrong server name", []BackendTLS{{Hosts: []string{addr}, CAFile: ca, ServerName: "wrong.example"}}, srv.URL, &hostErr},
		{"ca only from file, not system roots, still verifies names", []BackendTLS{{Hosts: []string{"*.test:*"}, CAFile: ca}},
			"https://backend.test:" + port, &hostErr},
		{"cidr profile", []BackendTLS{{Hosts: []string{"127.0.0.0/8"}, CAFile: ca}}, srv.URL, nil},
		{"cidr:port profile", []BackendTLS{{Hosts: []string{"127.0.0.0/8:" + port}, CAFile: ca}}, srv.URL, nil},
		{"cidr profile for another port does not apply", []BackendTLS{{Hosts: []string{"127.0.0.0/8:1"}, CAFile: ca}}, srv.URL, &unknownCA},
		{"cidr profile does not apply to names", []BackendTLS{{Hosts: []string{"127.0.0.0/8"}, CAFile: ca, ServerName: "example.com"}},
			"https://backend.test:" + port, &hostErr},
		{"wildcard profile with server name", []BackendTLS{{Hosts: []string{"*.test:*"}, CAFile: ca, ServerName: "example.com"}},
			"https://backend.test:" + port, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allow := mustParseAllowlist(t, "127.0.0.0/8")
			allow.LookupNetIP = (&fakeAllowResolver{addrs: map[string][]string{"backend.test": {"127.0.0.1"}}}).LookupNetIP
			b := mustBackends(t, allow, tt.profiles...)
			got, _, err := backendRoundTrip(t, b, http.MethodGet, tt.url+"/", "", false)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if got != "1" {
					t.Errorf("proto %s, want 1", got)
				}
				return
			}
			if !errors.As(err, tt.wantErr) {
				t.Fatalf("err = %v (%T), want %T", err, err, tt.wantErr)
			}
			if code, _ := ClassifyBackendError(err); code != CodeBackendUnreachable {
				t.Errorf("classified as %q, want %q", code, CodeBackendUnreachable)
			}
		})
	}
}

func TestNewBackendsErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name     string
		allow    *Allowlist
		profiles []BackendTLS
		want     string
	}{
		{"nil allowlist", nil, nil, "allowlist"},
		{"missing CA file", &Allowlist{}, []BackendTLS{{Hosts: []string{"a.example:443"}, CAFile: missing}}, missing},
		{"unparsable CA file", &Allowlist{}, []BackendTLS{{Hosts: []string{"a.example:443"}, CAFile: garbage}}, garbage},
		{"bad cidr host", &Allowlist{}, []BackendTLS{{Hosts: []string{"10.0.0.0/33"}}}, "10.0.0.0/33"},
		{"bad host", &Allowlist{}, []BackendTLS{{}, {Hosts: []string{"a.example"}}}, "profile 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBackends(tt.allow, tt.profiles)
			if err == nil {
				b.CloseIdleConnections()
				t.Fatal("NewBackends succeeded, want error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestBackendsRefuseUnlisted checks that every transport dials through the
// allowlist: the backend exists and listens, but is not listed.
func TestBackendsRefuseUnlisted(t *testing.T) {
	var hits atomic.Int32
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	h1 := startPlainBackend(t, count).URL
	h2c := startH2CBackend(t, count)
	tlsSrv := startTLSBackend(t, count, true)
	b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:1", "backend.example:*"),
		BackendTLS{Hosts: []string{"127.0.0.1:*"}, InsecureSkipVerify: true})

	tests := []struct {
		name, url, contentType string
	}{
		{"http/1.1", h1, ""},
		{"h2c", h2c, "application/grpc"},
		{"https http/1.1", tlsSrv.URL, ""},
		{"https h2", tlsSrv.URL, "application/grpc"},
		{"localhost name", strings.Replace(h1, "127.0.0.1", "localhost", 1), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := backendRoundTrip(t, b, http.MethodGet, tt.url+"/", tt.contentType, false)
			var na *NotAllowedError
			if !errors.As(err, &na) {
				t.Fatalf("err = %v, want *NotAllowedError", err)
			}
			u, _ := url.Parse(tt.url)
			if na.HostPort != u.Host {
				t.Errorf("HostPort = %q, want %q", na.HostPort, u.Host)
			}
			if code, _ := ClassifyBackendError(err); code != CodeBackendNotAllowed {
				t.Errorf("classified as %q", code)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("backends were reached %d times", n)
	}
}

// TestBackendsCIDRHostname checks names allowed through a CIDR: the answer
// is checked and dialled (backend.test exists only in the injected resolver).
func TestBackendsCIDRHostname(t *testing.T) {
	srv := startPlainBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Host)
	}))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	allow := mustParseAllowlist(t, "127.0.0.0/8")
	allow.LookupNetIP = (&fakeAllowResolver{addrs: map[string][]string{
		"backend.test": {"127.0.0.1"},
		"outside.test": {"192.0.2.10"},
		"mixed.test":   {"127.0.0.1", "192.0.2.10"},
	}}).LookupNetIP
	b := mustBackends(t, allow)

	tests := []struct {
		host     string
		wantErr  bool
		resolved string
	}{
		{"backend.test", false, ""},
		{"outside.test", true, "192.0.2.10"},
		{"mixed.test", true, "192.0.2.10"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			hostport := net.JoinHostPort(tt.host, port)
			got, _, err := backendRoundTrip(t, b, http.MethodGet, "http://"+hostport+"/", "", false)
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if got != hostport {
					t.Errorf("backend saw Host %q, want %q", got, hostport)
				}
				return
			}
			var na *NotAllowedError
			if !errors.As(err, &na) {
				t.Fatalf("err = %v, want *NotAllowedError", err)
			}
			if na.Resolved.String() != tt.resolved {
				t.Errorf("Resolved = %v, want %s", na.Resolved, tt.resolved)
			}
		})
	}
}

// TestBackendsBodiesUnchanged checks that compressed responses are passed
// through as sent and no Accept-Encoding is added.
func TestBackendsBodiesUnchanged(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, strings.Repeat("hello ", 100))
	zw.Close()
	var sawAE atomic.Value
	srv := startPlainBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAE.Store(r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gz.Bytes())
	}))
	b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	body, resp, err := backendRoundTrip(t, b, http.MethodGet, srv.URL+"/", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if body != gz.String() {
		t.Errorf("body changed: got %d bytes, want the %d gzip bytes", len(body), gz.Len())
	}
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Uncompressed {
		t.Errorf("Content-Encoding %q, Uncompressed %v", resp.Header.Get("Content-Encoding"), resp.Uncompressed)
	}
	if ae := sawAE.Load(); ae != "" {
		t.Errorf("backend saw Accept-Encoding %q, want none", ae)
	}
}

func TestBackendsTransportSettings(t *testing.T) {
	ca := writeBackendCA(t, startTLSBackend(t, protoEchoHandler, false))
	b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
		BackendTLS{Hosts: []string{"a.example:443"}, CAFile: ca, ServerName: "sni.example"},
		BackendTLS{Hosts: []string{"b.example:443"}, InsecureSkipVerify: true})
	if len(b.profiles) != 3 {
		t.Fatalf("%d profiles, want 3", len(b.profiles))
	}
	for i, p := range b.profiles {
		for _, tc := range []struct {
			name  string
			tr    *http.Transport
			h1    bool
			h2    bool
			h2c   bool
			wantP string
		}{
			{"h1", p.h1.Transport, true, false, false, "{HTTP1}"},
			{"h2", p.h2, false, true, true, "{HTTP2,UnencryptedHTTP2}"},
		} {
			tr := tc.tr
			where := fmt.Sprintf("profile %d %s", i, tc.name)
			if tr.Proxy != nil {
				t.Errorf("%s: Proxy set, want nil", where)
			}
			if !tr.DisableCompression {
				t.Errorf("%s: compression enabled", where)
			}
			if tr.MaxIdleConnsPerHost != 256 || tr.MaxIdleConns != 1024 || tr.IdleConnTimeout != 90*time.Second {
				t.Errorf("%s: pool %d/%d/%v", where, tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tr.IdleConnTimeout)
			}
			if tr.TLSHandshakeTimeout != 10*time.Second || tr.ExpectContinueTimeout != time.Second {
				t.Errorf("%s: timeouts %v/%v", where, tr.TLSHandshakeTimeout, tr.ExpectContinueTimeout)
			}
			if tr.DialContext == nil {
				t.Errorf("%s: no DialContext", where)
			}
			if got := tr.Protocols.String(); got != tc.wantP {
				t.Errorf("%s: Protocols %s, want %s", where, got, tc.wantP)
			}
			cfg := tr.TLSClientConfig
			if cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("%s: MinVersion %x", where, cfg.MinVersion)
			}
			switch i {
			case 0:
				if cfg.RootCAs != nil || cfg.InsecureSkipVerify || cfg.ServerName != "" {
					t.Errorf("%s: default profile customised: %+v", where, cfg)
				}
			case 1:
				if cfg.RootCAs == nil || cfg.InsecureSkipVerify || cfg.ServerName != "sni.example" {
					t.Errorf("%s: want CA pool and server name", where)
				}
			case 2:
				if cfg.RootCAs != nil || !cfg.InsecureSkipVerify {
					t.Errorf("%s: want insecure without CA pool", where)
				}
			}
		}
	}
}

func TestBackendsTransportPicksPool(t *testing.T) {
	b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"),
		BackendTLS{Hosts: []string{"a.example:443"}, InsecureSkipVerify: true},
		BackendTLS{Hosts: []string{"*.corp:*"}, InsecureSkipVerify: true})
	tests := []struct {
		url      string
		ct       string
		force    bool
		wantProf int
		wantH2   bool
	}{
		{"http://a.example/", "", false, 0, false},
		{"http://a.example/", "application/grpc", false, 0, true},
		{"https://a.example/", "", false, 1, false},
		{"https://A.Example:443/", "", false, 1, false},
		{"https://a.example:8443/", "", false, 0, false},
		{"https://a.example/", "", true, 1, true},
		{"https://x.y.corp:9/", "application/grpc+proto", false, 2, true},
		{"https://corp/", "", false, 0, false},
		{"http://x.corp/", "", false, 0, false}, // TLS profiles only matter for https
	}
	for _, tt := range tests {
		req := httptest.NewRequest(http.MethodPost, tt.url, nil)
		if tt.ct != "" {
			req.Header.Set("Content-Type", tt.ct)
		}
		want := http.RoundTripper(b.profiles[tt.wantProf].h1)
		if tt.wantH2 {
			want = b.profiles[tt.wantProf].h2
		}
		if got := b.Transport(req, tt.force); got != want {
			t.Errorf("Transport(%s, %q, force=%v) picked the wrong pool", tt.url, tt.ct, tt.force)
		}
	}
	// An upgrade exists only in HTTP/1.1: it takes h1 also where HTTP/2
	// is forced (backend_http2), whose client refuses it.
	req := httptest.NewRequest(http.MethodGet, "https://a.example/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	if got := b.Transport(req, true); got != http.RoundTripper(b.profiles[1].h1) {
		t.Errorf("an upgrade with backend_http2 did not take the HTTP/1.1 pool")
	}
}

// TestBackendsResponseHeadBound: a backend that sends an endless response
// head to a request with a body (http.Transport's, not the synchronous
// client's) is cut off at the same bound as the synchronous client's,
// rather than net/http's 10 MiB, which a few bad exchanges at once would
// make the agent hold in memory.
func TestBackendsResponseHeadBound(t *testing.T) {
	addr, _ := rawBackend(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		line := "X-Filler: " + strings.Repeat("f", 1000) + "\r\n"
		bw := bufio.NewWriter(c)
		bw.WriteString("HTTP/1.1 200 OK\r\n")
		for n := 0; n < 2*h1MaxResponseHeaderBytes; n += len(line) {
			if _, err := bw.WriteString(line); err != nil {
				return
			}
		}
		bw.WriteString("Content-Length: 0\r\n\r\n")
		bw.Flush()
	})
	b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/", strings.NewReader("body"))
	rt := b.Transport(req, false)
	if _, ok := rt.(*h1Transport); !ok {
		t.Fatalf("a POST went to %T, want the HTTP/1.1 Transport (h1Transport)", rt)
	}
	res, err := rt.RoundTrip(req)
	if err == nil {
		res.Body.Close()
		t.Fatalf("a %d MiB response head was accepted", 2*h1MaxResponseHeaderBytes>>20)
	}
	if !strings.Contains(err.Error(), "exceeded") {
		t.Errorf("err = %v, want one that says the head exceeded the limit", err)
	}
}
