package agent

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestHTTPSProxyUntrustedCertSaysWhatToDo: an https:// proxy whose
// certificate the system roots do not vouch for is reported with what to do
// (the old text was "connect to proxy …: tls: tls: failed to verify
// certificate: x509: certificate signed by unknown authority").
func TestHTTPSProxyUntrustedCertSaysWhatToDo(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = newProxyDialer(u).DialContext(context.Background(), "tcp", "gw.example:8443")
	if err == nil {
		t.Fatal("dial through a proxy with an untrusted certificate succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, "tls: tls:") || !strings.Contains(msg, "SSL_CERT_FILE") || !strings.Contains(msg, srv.URL) {
		t.Fatalf("error %q: want the proxy, no doubled \"tls:\", and what to do (trust store, SSL_CERT_FILE)", msg)
	}
}
