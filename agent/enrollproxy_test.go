package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/tunnel"
)

// httpProxyWithoutRoute is an HTTP/2 server over TLS on loopback that
// answers every request with status, as an ingress or reverse proxy at the
// gateway's address without a route (yet) to its tunnel listener does
// (404), or one that wants a login (401) or refuses (403). gRPC reads
// such a status as a code of its own: 404 Unimplemented, 401
// Unauthenticated, 403 PermissionDenied. It returns the address and the
// server's certificate.
func httpProxyWithoutRoute(t *testing.T, status int) (addr string, cert tls.Certificate) {
	t.Helper()
	ln, tc, cert := loopbackTLS(t)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, http.StatusText(status), status)
		}),
		TLSConfig: tc,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String(), cert
}

// TestEnrollAtHTTPProxyWithoutRoute: an HTTP 404 from an ingress or proxy
// without a route to the tunnel listener, which gRPC reports as
// Unimplemented, was taken for a gateway older than connector enrollment
// (ErrEnrollUnsupported: "upgrade the gateway", and the agent retried at
// the renewal pace, up to 10 minutes apart); a proxy's 401 for a token
// refusal and its 403 for a revoked connector (both final). Each is now
// ErrGatewayUnreachable, retried at the reconnect pace, with a message
// that names the HTTP answer and says to check the address or the proxy's
// route.
func TestEnrollAtHTTPProxyWithoutRoute(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			addr, _ := httpProxyWithoutRoute(t, status)
			_, err := Enroll(context.Background(), EnrollConfig{Gateway: addr, Token: "spt_x",
				TLS: &tls.Config{InsecureSkipVerify: true}}) //nolint:gosec // a test server
			if err == nil {
				t.Fatal("enrolled at an HTTP server")
			}
			for _, wrong := range []error{ErrEnrollUnsupported, ErrEnrollRefused, ErrTokenRefused, tunnel.ErrRevoked} {
				if errors.Is(err, wrong) {
					t.Errorf("enroll at a proxy answering HTTP %d: %v\nis taken for %q; want ErrGatewayUnreachable "+
						"(a wrong address, or a proxy without a route: retry at the reconnect pace)", status, err, wrong)
				}
			}
			if !errors.Is(err, ErrGatewayUnreachable) {
				t.Errorf("enroll at a proxy answering HTTP %d: %v; want ErrGatewayUnreachable", status, err)
			}
			msg := err.Error()
			for _, want := range []string{"enroll at " + addr, "an HTTP server or proxy answered", http.StatusText(status),
				"tunnel.addr", "the token was not used"} {
				if !strings.Contains(msg, want) {
					t.Errorf("enroll at a proxy answering HTTP %d: %v\nwant it to say %q", status, err, want)
				}
			}
		})
	}
}

// TestRenewAtHTTPProxyRefusing: a proxy's HTTP 403 during a certificate
// renewal, which gRPC reports as PermissionDenied, was taken for the
// gateway's "revoked" (tunnel.ErrRevoked), which stops the agent for good.
// It is ErrGatewayUnreachable: the renewal is tried again.
func TestRenewAtHTTPProxyRefusing(t *testing.T) {
	addr, cert := httpProxyWithoutRoute(t, http.StatusForbidden)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := renew(ctx, addr, &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a test server
		&Credentials{Cert: cert}, "agent", nil)
	if errors.Is(err, tunnel.ErrRevoked) || !errors.Is(err, ErrGatewayUnreachable) {
		t.Fatalf("renew at a proxy answering HTTP 403: %v; want ErrGatewayUnreachable, not a revocation "+
			"(which would stop the agent)", err)
	}
}

// TestAgentRetriesHTTPProxyWithoutRoute: an agent with a token, whose
// gateway address leads to an ingress without a route (yet) to the tunnel
// listener, tries again at the reconnect pace (here 1 ms), warning "cannot
// enroll yet", as for a gateway not reachable yet. Before, it logged an
// error to upgrade the gateway and waited at the renewal pace (here an
// hour).
func TestAgentRetriesHTTPProxyWithoutRoute(t *testing.T) {
	addr, _ := httpProxyWithoutRoute(t, http.StatusNotFound)
	var warnings atomic.Int32
	// met at the second "cannot enroll yet", or at "does not support
	// enrollment"
	r := startAgent(t, enrollingAgent(t, addr), func(e zapcore.Entry) bool {
		switch {
		case strings.Contains(e.Message, "cannot enroll yet"):
			return warnings.Add(1) >= 2
		case strings.Contains(e.Message, "does not support enrollment"):
			return true
		}
		return false
	})
	logs := r.logs
	select {
	case <-r.met:
		if unsupported := logs.FilterMessageSnippet("does not support enrollment").All(); len(unsupported) != 0 {
			t.Fatalf("an ingress's 404 is taken for a gateway older than enrollment, waited for at the renewal pace "+
				"(an hour): %v", unsupported[0].ContextMap()["error"])
		}
	case <-r.done:
		t.Fatalf("Run returned %v before it tried to enroll twice; logs: %v", r.err, logs.All())
	case <-time.After(10 * time.Second):
		t.Fatalf("no second enrollment attempt after 10s with a reconnect pace of 1ms; logs: %v", logs.All())
	}
	if err := r.stop(); errors.Is(err, ErrEnrollUnsupported) {
		t.Errorf("Run: %v; an ingress's 404 is taken for a gateway older than enrollment", err)
	}
	if n := logs.FilterMessageSnippet("does not support enrollment").Len(); n != 0 {
		t.Errorf("logged %d times that the gateway does not support enrollment, for an ingress's 404: %v", n, logs.All())
	}
	w := logs.FilterMessageSnippet("cannot enroll yet").All()
	if len(w) == 0 {
		t.Fatalf("no warning \"cannot enroll yet\"; logs: %v", logs.All())
	}
	fields := w[0].ContextMap()
	if msg, _ := fields["error"].(string); !strings.Contains(msg, "an HTTP server or proxy answered") {
		t.Errorf("logged error %q; want it to say that an HTTP server or proxy answered", msg)
	}
	if wait, _ := fields["retry_in"].(time.Duration); wait > time.Second {
		t.Errorf("retry_in %v; want the reconnect pace (1ms), not the renewal pace", wait)
	}
}
