package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// BackendTLS is the TLS client setup for a set of https:// backends.
type BackendTLS struct {
	// Hosts selects the backends this profile applies to, with the allow
	// pattern syntax ("app.corp.example:443", "*.corp:*", "10.1.2.3:8443",
	// "10.0.0.0/8", "10.0.0.0/8:443"). Patterns match the backend URL's host
	// as written, nothing is resolved: a CIDR covers backends addressed by
	// an IP in it, not names that resolve into it. The first profile that
	// matches wins.
	Hosts []string
	// CAFile is a PEM bundle of the CAs to trust, replacing (not adding to)
	// the system roots. Empty means the system roots.
	CAFile string
	// InsecureSkipVerify turns certificate verification off. Only for
	// backends that cannot be given a proper certificate.
	InsecureSkipVerify bool
	// ServerName, if set, is sent as SNI and checked against the certificate
	// instead of the host name from the backend URL.
	ServerName string
}

// Backends holds the pooled HTTP clients the agent calls backends with: per
// TLS profile an http.Transport for HTTP/1.1, one for HTTP/2 and the
// synchronous HTTP/1.1 client for simple requests (h1Sync), all created up
// front and shared by every exchange. Every connection is dialled through
// the allowlist.
// Methods are safe for concurrent use.
type Backends struct {
	profiles []backendProfile // index 0 is the default (system roots); immutable
	// SendTimeout cuts an upgraded connection (a WebSocket) when one write
	// to the backend does not return within it: the backend stopped
	// reading. Zero means DefaultBackendSendTimeout. Set before first use.
	SendTimeout time.Duration
}

// DefaultBackendSendTimeout is Backends.SendTimeout when it is zero: the
// gateway's default public.send_timeout, which bounds the other direction.
const DefaultBackendSendTimeout = 5 * time.Minute

func (b *Backends) sendTimeout() time.Duration {
	if b.SendTimeout > 0 {
		return b.SendTimeout
	}
	return DefaultBackendSendTimeout
}

// backendProfile is one TLS setup with its three clients.
type backendProfile struct {
	rules []allowRule     // which https backends use it; empty for the default
	h1    *h1Transport    // HTTP/1.1 only, plain or TLS
	up    *upgradeClient  // h1 for upgrades, with the send guard
	h2    *http.Transport // HTTP/2 only: h2c prior knowledge for http://, ALPN h2 for https://
	sync  *h1Sync         // HTTP/1.1 GET, HEAD and OPTIONS without a body, on Unix; h1 serves the rest
}

// Transport tuning; see newBackendTransport.
const (
	backendDialTimeout     = 10 * time.Second
	backendKeepAlive       = 30 * time.Second
	backendMaxIdleConns    = 1024
	backendMaxIdlePerHost  = 256
	backendIdleConnTimeout = 90 * time.Second
	backendTLSTimeout      = 10 * time.Second
	backendContinueTimeout = 1 * time.Second
	grpcContentType        = "application/grpc"
	defaultHTTPSPort       = "443"
)

// NewBackends builds the backend clients. allow must not be nil (an empty
// Allowlist refuses everything). CA files are read now; a missing or
// unparsable file is an error naming it.
func NewBackends(allow *Allowlist, tlsProfiles []BackendTLS) (*Backends, error) {
	if allow == nil {
		return nil, errors.New("agent: NewBackends needs an allowlist (an empty one refuses everything)")
	}
	dialer := &net.Dialer{Timeout: backendDialTimeout, KeepAlive: backendKeepAlive}
	dial := allow.DialContext(dialer.DialContext)

	b := &Backends{profiles: make([]backendProfile, 0, 1+len(tlsProfiles))}
	b.profiles = append(b.profiles, newBackendProfile(nil, &tls.Config{MinVersion: tls.VersionTLS12}, dial))
	for i, p := range tlsProfiles {
		rules := make([]allowRule, 0, len(p.Hosts))
		for _, h := range p.Hosts {
			r, err := parseAllowRule(h)
			if err != nil {
				return nil, fmt.Errorf("backend tls profile %d: %w", i+1, err)
			}
			rules = append(rules, r)
		}
		cfg := &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: p.InsecureSkipVerify,
			ServerName:         p.ServerName,
		}
		if p.CAFile != "" {
			pool, err := loadCAFile(p.CAFile)
			if err != nil {
				return nil, fmt.Errorf("backend tls profile %d: %w", i+1, err)
			}
			cfg.RootCAs = pool
		}
		b.profiles = append(b.profiles, newBackendProfile(rules, cfg, dial))
	}
	for i := range b.profiles {
		b.profiles[i].up.b = b
	}
	return b, nil
}

func loadCAFile(name string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err) // *PathError names the file
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificates found", name)
	}
	return pool, nil
}

type backendDialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

func newBackendProfile(rules []allowRule, cfg *tls.Config, dial backendDialFunc) backendProfile {
	var h1, h2 http.Protocols
	h1.SetHTTP1(true)
	h2.SetHTTP2(true)
	h2.SetUnencryptedHTTP2(true)
	p := backendProfile{
		rules: rules,
		h1:    &h1Transport{newBackendTransport(cfg, h1, withH10Guard(withBodyConns(dial)))},
		h2:    newBackendTransport(cfg, h2, dial),
	}
	// The HTTP/1.1 transport's TLS is the agent's own, so that its
	// h10Guard sees the plain bytes of an https backend too.
	p.h1.DialTLSContext = guardedTLSDial(dial, cfg, backendTLSTimeout)
	p.up = &upgradeClient{h1: p.h1}
	p.sync = &h1Sync{
		Dial:             dial,
		TLS:              cfg.Clone(),
		Fallback:         p.h1,
		MaxIdlePerHost:   backendMaxIdlePerHost,
		MaxIdle:          backendMaxIdleConns,
		IdleTimeout:      backendIdleConnTimeout,
		HandshakeTimeout: backendTLSTimeout,
	}
	return p
}

// guardedTLSDial dials addr through dial and runs the TLS client handshake
// with cfg (ALPN http/1.1; the server name from addr unless cfg sets one),
// bounded by timeout, as h1Conn.handshake does: http.Transport's own TLS
// dial, but returning an h10Guard around the TLS connection.
func guardedTLSDial(dial backendDialFunc, cfg *tls.Config, timeout time.Duration) backendDialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := cfg.Clone()
		c.NextProtos = []string{"http/1.1"}
		if c.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				c.ServerName = host
			} else {
				c.ServerName = addr
			}
		}
		tc := tls.Client(raw, c)
		_ = raw.SetDeadline(time.Now().Add(timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			var ne net.Error
			switch {
			case ctx.Err() != nil:
				return nil, fmt.Errorf("tls handshake with backend %s: %w", addr, context.Cause(ctx))
			case errors.As(err, &ne) && ne.Timeout():
				return nil, fmt.Errorf("tls handshake with backend %s timed out after %v: %w", addr, timeout, err)
			}
			return nil, fmt.Errorf("tls handshake with backend %s: %w", addr, err)
		}
		_ = raw.SetDeadline(time.Time{})
		g := newH10Guard(tc)
		st := tc.ConnectionState()
		g.tls = &st
		return g, nil
	}
}

// h1Transport is the HTTP/1.1 backend transport. It tells each
// connection's h10Guard the method of the request net/http is about to
// write on it (GotConn runs before the request is written), and gives an
// https response the connection's TLS state, which net/http sets only for
// a *tls.Conn. Do not use the embedded Transport's Clone: the copy would
// dial guarded connections but never tell them a request begins.
type h1Transport struct{ *http.Transport }

func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	method := cmp.Or(req.Method, http.MethodGet)
	var g *h10Guard
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if g, _ = i.Conn.(*h10Guard); g != nil {
			g.begin(method)
		}
	}}
	res, err := t.Transport.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err == nil && res.TLS == nil && g != nil {
		res.TLS = g.tls
	}
	return res, err
}

// newBackendTransport returns a transport tuned for many concurrent exchanges
// to a few local backends. Proxy stays nil (backends are local; the
// environment's proxy is for the tunnel, not for them) and compression is
// off so bodies pass through byte for byte.
func newBackendTransport(cfg *tls.Config, protocols http.Protocols, dial backendDialFunc) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
		TLSClientConfig:       cfg.Clone(),
		TLSHandshakeTimeout:   backendTLSTimeout,
		DisableCompression:    true,
		MaxIdleConns:          backendMaxIdleConns,
		MaxIdleConnsPerHost:   backendMaxIdlePerHost,
		IdleConnTimeout:       backendIdleConnTimeout,
		ExpectContinueTimeout: backendContinueTimeout,
		// The synchronous client's bound rather than net/http's 10 MiB:
		// an endless head from a bad backend costs the agent at most this.
		MaxResponseHeaderBytes: h1MaxResponseHeaderBytes,
		Protocols:              &protocols,
	}
}

// Transport picks the round tripper for req. HTTP/2 is used when forceHTTP2
// is set (the app's backend_http2) or the request is gRPC (Content-Type
// application/grpc, application/grpc+proto, ...): h2c with prior knowledge
// for http:// URLs, ALPN h2 for https://. Everything else uses HTTP/1.1, for
// https too: a GET, HEAD or OPTIONS without a body, upgrade or Expect goes
// to the synchronous client (h1Sync) on Unix, the rest to the
// http.Transport. gRPC-Web (application/grpc-web...) is made for HTTP/1.1 and is
// not treated as gRPC. https:// requests use the first TLS profile whose
// Hosts match the URL's host and port, or the default profile.
func (b *Backends) Transport(req *http.Request, forceHTTP2 bool) http.RoundTripper {
	p := &b.profiles[0]
	if req.URL != nil && strings.EqualFold(req.URL.Scheme, "https") {
		p = b.profileFor(req.URL.Hostname(), req.URL.Port())
	}
	if (forceHTTP2 || isGRPC(req.Header.Get("Content-Type"))) && !tunnel.IsUpgradeRequest(req) {
		// An upgrade (WebSocket) exists only in HTTP/1.1: it takes h1
		// also for an app with backend_http2, whose HTTP/2 client
		// refused it ("invalid Upgrade request header").
		return p.h2
	}
	if rawWaits && h1SyncEligible(req) {
		// Outside Unix the synchronous client cannot check a reused
		// connection for bytes the backend sent while it was idle
		// (h1Conn.checkable): net/http's Transport, whose idle
		// connections each have a goroutine reading them, serves
		// those requests there.
		return p.sync
	}
	return p.h1
}

// forExchange is Transport for the agent's exchanges: an upgrade gets
// its profile's HTTP/1.1 pool behind the send guard (upgradeClient).
func (b *Backends) forExchange(req *http.Request, forceHTTP2 bool) http.RoundTripper {
	rt := b.Transport(req, forceHTTP2)
	if !tunnel.IsUpgradeRequest(req) {
		return rt
	}
	for i := range b.profiles {
		if rt == http.RoundTripper(b.profiles[i].h1) {
			return b.profiles[i].up
		}
	}
	return rt
}

func (b *Backends) profileFor(host, port string) *backendProfile {
	if port == "" {
		port = defaultHTTPSPort
	}
	t, ok := parseAllowTarget(net.JoinHostPort(host, port))
	if !ok {
		return &b.profiles[0]
	}
	for i := 1; i < len(b.profiles); i++ {
		for j := range b.profiles[i].rules {
			if b.profiles[i].rules[j].matches(t) {
				return &b.profiles[i]
			}
		}
	}
	return &b.profiles[0]
}

// isGRPC reports whether a Content-Type is gRPC proper: "application/grpc"
// alone or followed by "+codec" or ";params", in any case.
func isGRPC(contentType string) bool {
	if len(contentType) < len(grpcContentType) || !strings.EqualFold(contentType[:len(grpcContentType)], grpcContentType) {
		return false
	}
	rest := contentType[len(grpcContentType):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// CloseIdleConnections closes idle connections in every pool.
func (b *Backends) CloseIdleConnections() {
	for i := range b.profiles {
		b.profiles[i].h1.CloseIdleConnections()
		b.profiles[i].h2.CloseIdleConnections()
		b.profiles[i].sync.CloseIdleConnections()
	}
}

// upgradeClient is the HTTP/1.1 client of upgrade requests: the connection
// of a 101 answer comes back as a guardedUpgrade, so that a backend that
// stops reading a WebSocket is cut after the send timeout instead of
// holding the exchange for ever (its tunnel stream, the flow-control
// windows of data queued for it, the client's connection).
type upgradeClient struct {
	h1 *h1Transport
	b  *Backends // whose sendTimeout applies; set by NewBackends
}

func (u *upgradeClient) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := u.h1.RoundTrip(req)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		return res, err
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		return res, nil // the exchange refuses it as not writable
	}
	g := &guardedUpgrade{ReadWriteCloser: rwc, timeout: u.b.sendTimeout()}
	g.timer = time.AfterFunc(time.Hour, g.fire)
	g.timer.Stop()
	res.Body = g
	return res, nil
}

// errBackendStoppedReading is the error of a write to an upgraded backend
// connection that the send timeout cut.
var errBackendStoppedReading = errors.New("the backend stopped reading the upgraded connection: " +
	"a write to it blocked for the send timeout; cutting it")

// guardedUpgrade is an upgraded backend connection whose every write must
// return within timeout. A timer armed for each write closes the
// connection when the write is still under way at the timeout: the write
// and the read of the other direction then fail, which ends the exchange.
// An idle connection, or one the backend reads however slowly, is never
// cut.
type guardedUpgrade struct {
	io.ReadWriteCloser
	timeout time.Duration
	timer   *time.Timer
	since   atomic.Int64 // when the write under way began (tunnel.MonoNow); 0 between writes
	cut     atomic.Bool  // the timer closed the connection
}

// Read reports a read that failed because the guard cut the connection as
// that cut.
func (g *guardedUpgrade) Read(p []byte) (int, error) {
	n, err := g.ReadWriteCloser.Read(p)
	if err != nil && err != io.EOF && g.cut.Load() {
		err = fmt.Errorf("%w (%v)", errBackendStoppedReading, err)
	}
	return n, err
}

func (g *guardedUpgrade) Write(p []byte) (int, error) {
	g.since.Store(tunnel.MonoNow())
	g.timer.Reset(g.timeout)
	n, err := g.ReadWriteCloser.Write(p)
	g.since.Store(0)
	g.timer.Stop()
	if err != nil && g.cut.Load() {
		err = fmt.Errorf("%w (%v)", errBackendStoppedReading, err)
	}
	return n, err
}

// fire runs on the timer's goroutine: it cuts the connection when a write
// began timeout ago and has not returned. A timer that fired just as its
// write returned, or as the next one began, finds nothing to cut.
func (g *guardedUpgrade) fire() {
	since := g.since.Load()
	if since == 0 || time.Duration(tunnel.MonoNow()-since) < g.timeout {
		return
	}
	g.cut.Store(true)
	g.ReadWriteCloser.Close()
}

// errNoHalfClose is CloseWrite's error for a connection that cannot be
// half-closed.
var errNoHalfClose = errors.New("the backend's upgraded connection cannot be half-closed")

// CloseWrite passes the client's half-close on to the backend.
func (g *guardedUpgrade) CloseWrite() error {
	if cw, ok := g.ReadWriteCloser.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

func (g *guardedUpgrade) Close() error {
	g.timer.Stop()
	return g.ReadWriteCloser.Close()
}
