package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestPreauthEarlyHintsCannotSetGatewayCookies: an app without sign-in
// that answers with a 103 Early Hints carrying a Set-Cookie for the
// gateway's session cannot plant it through the 1xx either (clients that
// keep cookies from a 1xx, as RFC 6265 allows and curl does, took it:
// review12). The hint itself and the app's own cookies still pass.
func TestPreauthEarlyHintsCannotSetGatewayCookies(t *testing.T) {
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Set-Cookie", "sallyport_session=planted; Path=/")
		h.Add("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		clear(h)
		h.Add("Set-Cookie", "sallyport_session=planted200; Path=/")
		h.Add("Set-Cookie", "app=kept")
		w.Write([]byte("ok")) //nolint:errcheck // the test reads what arrives
	}))
	a := newAuthRig(t, preauth.Policy{}, nil, func(c *gateway.Config) {
		c.Routes = append(c.Routes, gateway.Route{App: "plant", Hosts: []string{"plant.test"},
			Backend: testrig.MustURL(t, backend.URL), Group: testrig.Group})
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: plant.test\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(conn))
	hints := 0
	for {
		line, err := tp.ReadLine()
		if err != nil {
			t.Fatal(err)
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, "HTTP/1.1 1") {
			if got := hdr.Values("Set-Cookie"); !slices.Equal(got, []string{"app=kept"}) {
				t.Errorf("final response (%s) Set-Cookie %q, want only the app's own", line, got)
			}
			break
		}
		hints++
		if got := hdr.Values("Set-Cookie"); len(got) > 0 {
			t.Errorf("the informational response (%s) carried the app's Set-Cookie %q", line, got)
		}
		if hdr.Get("Link") == "" {
			t.Errorf("the informational response (%s) lost its Link header", line)
		}
	}
	if hints != 1 {
		t.Errorf("%d informational responses, want the app's one 103", hints)
	}
}

// TestProxyHeaderDropped: a client's Proxy header does not reach apps: CGI
// and FastCGI hand it to them as HTTP_PROXY, which HTTP clients inside the
// app took for their outbound proxy (httpoxy, CVE-2016-5385). Proxy_ is
// another variable (HTTP_PROXY_) and passes, as do ordinary headers.
func TestProxyHeaderDropped(t *testing.T) {
	got := make(chan http.Header, 1)
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	}))
	a := newAuthRig(t, preauth.Policy{}, nil, func(c *gateway.Config) {
		c.Routes = append(c.Routes, gateway.Route{App: "oxy", Hosts: []string{"oxy.test"},
			Backend: testrig.MustURL(t, backend.URL), Group: testrig.Group})
	})
	req, _ := http.NewRequest("GET", a.URL+"/x", nil)
	req.Host = "oxy.test"
	for _, k := range []string{"Proxy", "Proxy_", "X-Api-Key"} {
		req.Header[k] = []string{"v"}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	h := <-got
	if _, ok := h["Proxy"]; ok {
		t.Error("the client's Proxy header reached the app (CGI: HTTP_PROXY, httpoxy)")
	}
	for _, k := range []string{"Proxy_", "X-Api-Key"} {
		if _, ok := h[k]; !ok {
			t.Errorf("the client's %s header did not reach the app", k)
		}
	}
}
