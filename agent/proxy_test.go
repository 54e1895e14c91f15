package agent

import (
	"strings"
	"testing"

	"golang.org/x/net/http/httpproxy"
)

// TestProxyFor: the explicit `proxy` wins; else HTTPS_PROXY applies unless
// NO_PROXY names the gateway; only well-formed http(s) CONNECT proxy URLs
// are accepted (a malformed HTTPS_PROXY too is an error, not a direct
// connection), and errors never show the password.
func TestProxyFor(t *testing.T) {
	env := &httpproxy.Config{HTTPSProxy: "http://env:envpass@envproxy:3128", NoProxy: "internal.corp"}
	cases := []struct {
		explicit string
		env      *httpproxy.Config
		gateway  string
		want     string // redacted proxy URL, "" for direct, "error: …" for an error
	}{
		{"http://u:s3cret@proxy:8080", env, "gw.example.com:8443", "http://u:xxxxx@proxy:8080"},
		{"", env, "gw.example.com:8443", "http://env:xxxxx@envproxy:3128"},
		{"", env, "gw.internal.corp:8443", ""},
		{"", nil, "gw.example.com:8443", ""},
		{"", &httpproxy.Config{}, "gw.example.com:8443", ""},
		{"socks5://u:s3cret@proxy:1080", nil, "gw:1", `error: proxy: must be an http:// or https:// URL of an HTTP CONNECT proxy, got "socks5://u:xxxxx@proxy:1080"`},
		{"http://", nil, "gw:1", `error: proxy: must be an http:// or https:// URL of an HTTP CONNECT proxy, got "http://"; it names no host`},
		{"http://u:pa#s3cret@proxy:8080", nil, "gw:1", `error: proxy: must be an http:// or https:// URL of an HTTP CONNECT proxy, got "http://u:xxxxx@proxy:8080"; percent-encode`},
		// A scheme-less HTTPS_PROXY means http://, as in curl and Go.
		{"", &httpproxy.Config{HTTPSProxy: "u:s3cret@envproxy:3128"}, "gw.example.com:8443", "http://u:xxxxx@envproxy:3128"},
		// A malformed HTTPS_PROXY is an error, not a direct connection
		// (httpproxy drops it) nor a dial to a host made of the password.
		{"", &httpproxy.Config{HTTPSProxy: "http://u:pa#s3cret@envproxy:3128"}, "gw.example.com:8443",
			`error: HTTPS_PROXY (or https_proxy) in the environment: must be an http:// or https:// URL of an HTTP CONNECT proxy, got "http://u:xxxxx@envproxy:3128"; percent-encode`},
		{"", &httpproxy.Config{HTTPSProxy: "http://u:pa/s3cret@envproxy:3128"}, "gw.example.com:8443", `error: HTTPS_PROXY`},
		{"", &httpproxy.Config{HTTPSProxy: "http://u:s3cret%zz@envproxy:3128"}, "gw.example.com:8443", `error: HTTPS_PROXY`},
		{"", &httpproxy.Config{HTTPSProxy: "u:pa#s3cret@envproxy:3128"}, "gw.example.com:8443", `error: HTTPS_PROXY`},
		// … unless the gateway bypasses the proxy anyway.
		{"", &httpproxy.Config{HTTPSProxy: "http://u:s3cret%zz@envproxy:3128", NoProxy: "internal.corp"}, "gw.internal.corp:8443", ""},
		{"", &httpproxy.Config{HTTPSProxy: "http://u:s3cret%zz@envproxy:3128"}, "127.0.0.1:8443", ""},
	}
	for _, c := range cases {
		u, err := proxyFor(c.explicit, c.env, c.gateway)
		got := ""
		switch {
		case err != nil:
			got = "error: " + err.Error()
		case u != nil:
			got = u.Redacted()
		}
		if strings.Contains(got, "s3cret") {
			t.Errorf("proxyFor(%q, %v, %q) shows the password: %s", c.explicit, c.env, c.gateway, got)
		}
		if !strings.HasPrefix(got, c.want) || (c.want == "" && got != "") {
			t.Errorf("proxyFor(%q, %v, %q) = %q, want %q", c.explicit, c.env, c.gateway, got, c.want)
		}
	}
}

func TestProxyErrorText(t *testing.T) {
	for code, hint := range map[int]string{407: "user and password", 403: "policy", 502: "could not reach the gateway"} {
		e := &ProxyError{Proxy: "http://u:xxxxx@p:3128", Target: "gw:8443", StatusCode: code, Status: "status line"}
		if msg := e.Error(); !strings.Contains(msg, "http://u:xxxxx@p:3128") || !strings.Contains(msg, "gw:8443") ||
			!strings.Contains(msg, "status line") || !strings.Contains(msg, hint) {
			t.Errorf("%d: %q", code, msg)
		}
	}
}
