package agent

import (
	"strings"
	"testing"

	"golang.org/x/net/http/httpproxy"
)

// TestProxyFor: the explicit `proxy` wins; else HTTPS_PROXY applies unless
// NO_PROXY names the gateway; only http(s) CONNECT proxies are accepted,
// and errors never show the password.
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
		{"socks5://u:s3cret@proxy:1080", nil, "gw:1", "error: proxy socks5://u:xxxxx@proxy:1080: only http:// and https://"},
		{"http://", nil, "gw:1", "error: proxy http:: no host"},
	}
	for _, c := range cases {
		u, err := proxyFor(c.explicit, c.env, c.gateway)
		got := ""
		switch {
		case err != nil:
			got = "error: " + err.Error()
			if strings.Contains(got, "s3cret") {
				t.Errorf("error shows the password: %s", got)
			}
		case u != nil:
			got = u.Redacted()
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
