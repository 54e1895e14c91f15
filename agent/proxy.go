package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/sallyport/sallyport/internal/credurl"
)

// ProxyError is a refusal by the outbound HTTP proxy (407, 403, 5xx, …).
type ProxyError struct {
	Proxy      string // the proxy URL without its password
	Target     string // the gateway address the CONNECT asked for
	StatusCode int
	Status     string // the proxy's status line, e.g. "407 Proxy Authentication Required"
}

func (e *ProxyError) Error() string {
	hint := ""
	switch {
	case e.StatusCode == http.StatusProxyAuthRequired:
		hint = "; check the user and password in `proxy` (or HTTPS_PROXY)"
	case e.StatusCode == http.StatusForbidden:
		hint = "; the proxy's policy does not allow this destination: ask its admins to allow the gateway's host and port"
	case e.StatusCode >= 500:
		hint = "; the proxy could not reach the gateway or failed itself"
	}
	return fmt.Sprintf("proxy %s refused CONNECT %s: %s%s", e.Proxy, e.Target, e.Status, hint)
}

// proxyTimeout bounds the connection to the proxy and its CONNECT answer.
const proxyTimeout = 30 * time.Second

// proxyFor returns the outbound proxy for reaching gateway (host:port):
// explicit (the agent config's `proxy`) if set, else HTTPS_PROXY/NO_PROXY
// as env describes them. Nil means a direct connection.
//
// A malformed HTTPS_PROXY that applies to the gateway is an error:
// httpproxy silently drops a value that does not parse (the agent would
// bypass the proxy it was told to use) and reads some others, such as a
// password with an unencoded '#' or '/', as a different host.
func proxyFor(explicit string, env *httpproxy.Config, gateway string) (*url.URL, error) {
	if explicit != "" {
		u, err := credurl.ParseProxy(explicit)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		return u, nil
	}
	if env == nil || env.HTTPSProxy == "" {
		return nil, nil
	}
	// httpproxy decides whether the gateway bypasses the proxy (NO_PROXY,
	// loopback); ask it about a well-formed stand-in, since it would
	// answer "direct" for a malformed value too.
	probe := *env
	probe.HTTPSProxy = "http://proxy.invalid"
	if u, err := probe.ProxyFunc()(&url.URL{Scheme: "https", Host: gateway}); err != nil || u == nil {
		return nil, nil
	}
	s := env.HTTPSProxy
	if !strings.Contains(s, "://") {
		s = "http://" + s // as httpproxy and curl read "host:port"
	}
	u, err := credurl.ParseProxy(s)
	if err != nil {
		return nil, fmt.Errorf("HTTPS_PROXY (or https_proxy) in the environment: %w; "+
			"fix it, set `proxy` in the agent config, or add the gateway's host to NO_PROXY", err)
	}
	return u, nil
}

// proxyDialer opens TCP connections through an HTTP CONNECT proxy.
type proxyDialer struct {
	proxy *url.URL
	// dial opens the connection to the proxy itself.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func newProxyDialer(proxy *url.URL) *proxyDialer {
	return &proxyDialer{proxy: proxy, dial: (&net.Dialer{Timeout: proxyTimeout}).DialContext}
}

func (d *proxyDialer) proxyAddr() string {
	host, port := d.proxy.Hostname(), d.proxy.Port()
	if port == "" {
		port = "80"
		if d.proxy.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(host, port)
}

// DialContext connects to the proxy and asks it to CONNECT to addr. A
// refusal is a *ProxyError.
func (d *proxyDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	name := d.proxy.Redacted()
	ctx, cancel := context.WithTimeout(ctx, proxyTimeout)
	defer cancel()
	c, err := d.dial(ctx, "tcp", d.proxyAddr())
	if err != nil {
		return nil, fmt.Errorf("connect to proxy %s: %w", name, err)
	}
	if d.proxy.Scheme == "https" {
		tc := tls.Client(c, &tls.Config{ServerName: d.proxy.Hostname(), MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			hint := ""
			if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
				hint = "; this machine does not trust the proxy's TLS certificate: add the CA that signed it to the " +
					"system's trust store (or name a PEM bundle that holds it in SSL_CERT_FILE), or reach the proxy " +
					"with http:// if it takes plain connections too"
			}
			return nil, fmt.Errorf("connect to proxy %s over TLS: %w%s", name, err, hint)
		}
		c = tc
	}
	// The CONNECT exchange must not outlive ctx.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	conn, err := d.connect(c, addr)
	if !stop() {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", name, addr, ctx.Err())
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return conn, nil
}

func (d *proxyDialer) connect(c net.Conn, addr string) (net.Conn, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sallyport-agent\r\n", addr, addr)
	if u := d.proxy.User; u != nil {
		pass, _ := u.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.Username() + ":" + pass))
		fmt.Fprintf(&b, "Proxy-Authorization: Basic %s\r\n", cred)
	}
	b.WriteString("\r\n")
	if _, err := c.Write([]byte(b.String())); err != nil {
		return nil, fmt.Errorf("proxy %s: send CONNECT: %w", d.proxy.Redacted(), err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("proxy %s: read the answer to CONNECT %s: %w", d.proxy.Redacted(), addr, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, &ProxyError{Proxy: d.proxy.Redacted(), Target: addr, StatusCode: res.StatusCode, Status: res.Status}
	}
	if br.Buffered() > 0 {
		// The proxy sent tunnel bytes right after its answer: keep them.
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// isProxyError reports whether err is the proxy's refusal.
func isProxyError(err error) bool {
	var pe *ProxyError
	return errors.As(err, &pe)
}
