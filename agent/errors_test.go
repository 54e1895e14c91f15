package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// closedLoopbackAddr returns a loopback address nothing listens on.
func closedLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func backendTLSDialErr(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	d := &tls.Dialer{Config: cfg}
	c, err := d.DialContext(t.Context(), "tcp", addr)
	if err == nil {
		c.Close()
		t.Fatal("TLS dial succeeded, want an error")
	}
	return err
}

func TestClassifyBackendError(t *testing.T) {
	tlsSrv := startTLSBackend(t, protoEchoHandler, false)
	plainSrv := startPlainBackend(t, protoEchoHandler)
	tlsAddr := tlsSrv.Listener.Addr().String()
	trusted := x509.NewCertPool()
	trusted.AddCert(tlsSrv.Certificate())

	tests := []struct {
		name     string
		err      func(t *testing.T) error
		wantCode string
		wantMsg  []string
	}{
		{"nil", func(*testing.T) error { return nil }, "", nil},
		{"not allowed", func(*testing.T) error {
			return &NotAllowedError{HostPort: "10.1.2.3:22"}
		}, CodeBackendNotAllowed, []string{"10.1.2.3:22", "allow"}},
		{"backend stopped reading the body", func(*testing.T) error {
			// The tunnel server passes the request context's cause;
			// wrapped, it is still recognised.
			return fmt.Errorf("backend request: %w", &tunnel.BodyStallError{After: 5 * time.Minute})
		}, CodeBackendTimeout, []string{"read none of the request body for 5m0s", "should read"}},
		{"not allowed wrapped", func(*testing.T) error {
			return &url.Error{Op: "Get", URL: "http://x", Err: fmt.Errorf("dial: %w", &NotAllowedError{HostPort: "x:80"})}
		}, CodeBackendNotAllowed, []string{"x:80"}},
		{"connection refused", func(t *testing.T) error {
			addr := closedLoopbackAddr(t)
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				t.Skip("something listens on the closed port")
			}
			return err
		}, CodeBackendUnreachable, []string{"refused", "127.0.0.1:", "listening"}},
		{"refused through a transport", func(t *testing.T) error {
			b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
			_, _, err := backendRoundTrip(t, b, http.MethodGet, "http://"+closedLoopbackAddr(t)+"/", "", false)
			return err
		}, CodeBackendUnreachable, []string{"refused"}},
		{"lookup of .invalid", func(t *testing.T) error {
			_, err := net.DefaultResolver.LookupHost(t.Context(), "sallyport-test.invalid")
			return err
		}, CodeBackendUnreachable, []string{"resolve", "sallyport-test.invalid", "DNS"}},
		{"dial of .invalid", func(t *testing.T) error {
			_, err := net.Dial("tcp", "sallyport-test.invalid:80")
			return err
		}, CodeBackendUnreachable, []string{"sallyport-test.invalid"}},
		{"allowlist lookup failure", func(t *testing.T) error {
			a := mustParseAllowlist(t, "10.0.0.0/8")
			a.LookupNetIP = (&fakeAllowResolver{}).LookupNetIP
			return a.Allowed(t.Context(), "gone.internal:80")
		}, CodeBackendUnreachable, []string{"gone.internal", "no such host"}},
		{"dial timeout", func(t *testing.T) error {
			d := &net.Dialer{Deadline: time.Now().Add(-time.Second)}
			_, err := d.Dial("tcp", closedLoopbackAddr(t))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("dial timeout %v does not match context.DeadlineExceeded; the ordering test is moot", err)
			}
			return err
		}, CodeBackendUnreachable, []string{"timed out", "firewall"}},
		{"unknown authority", func(t *testing.T) error {
			return backendTLSDialErr(t, tlsAddr, &tls.Config{RootCAs: x509.NewCertPool()})
		}, CodeBackendUnreachable, []string{"authority", "CA file"}},
		{"wrong host name", func(t *testing.T) error {
			return backendTLSDialErr(t, tlsAddr, &tls.Config{RootCAs: trusted, ServerName: "wrong.example"})
		}, CodeBackendUnreachable, []string{"wrong.example", "server name"}},
		{"not TLS", func(t *testing.T) error {
			return backendTLSDialErr(t, plainSrv.Listener.Addr().String(), &tls.Config{RootCAs: trusted})
		}, CodeBackendUnreachable, []string{"http://"}},
		{"TLS alert from backend", func(t *testing.T) error {
			return backendTLSDialErr(t, tlsAddr, &tls.Config{RootCAs: trusted, NextProtos: []string{"h2"}})
		}, CodeBackendUnreachable, []string{"handshake", "no application protocol"}},
		{"deadline", func(*testing.T) error {
			return context.DeadlineExceeded
		}, CodeBackendTimeout, []string{"in time", "timeout"}},
		{"deadline wrapped", func(*testing.T) error {
			return &url.Error{Op: "Get", URL: "http://x", Err: fmt.Errorf("read: %w", context.DeadlineExceeded)}
		}, CodeBackendTimeout, []string{"in time"}},
		{"slow backend through a transport", func(t *testing.T) error {
			release := make(chan struct{})
			srv := startPlainBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-release:
				}
			}))
			defer close(release)
			b := mustBackends(t, mustParseAllowlist(t, "127.0.0.1:*"))
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			resp, err := b.Transport(req, false).RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			return err
		}, CodeBackendTimeout, []string{"in time"}},
		{"other", func(*testing.T) error {
			return fmt.Errorf("read response: %w", io.ErrUnexpectedEOF)
		}, CodeBackendUnreachable, []string{"unexpected EOF"}},
		{"plain text", func(*testing.T) error { return errors.New("boom") }, CodeBackendUnreachable, []string{"boom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err(t)
			if tt.wantCode != "" && err == nil {
				t.Fatal("no error produced")
			}
			code, msg := ClassifyBackendError(err)
			t.Logf("%s: %s", code, msg)
			if code != tt.wantCode {
				t.Errorf("code = %q, want %q (err: %v)", code, tt.wantCode, err)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
			if tt.wantCode == "" && msg != "" {
				t.Errorf("message %q for nil error", msg)
			}
		})
	}
}
