package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadAgentDesignExample(t *testing.T) {
	a, err := LoadAgent("testdata/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Agent{
		Gateway:       "127.0.0.1:8443",
		GatewayCAFile: "./data/gateway/tunnel-cert.pem",
		Token:         "change-me",
		DataDir:       "./data/agent",
		Transport:     "grpc",
		Connections:   2,
		Allow:         []string{"127.0.0.1:9000", "*.corp.example:443", "10.0.0.0/8"},
	}
	a.src = source{} // where it came from: see TestFileError
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got\n%+v\nwant\n%+v", a, want)
	}
}

func TestLoadAgentFull(t *testing.T) {
	a, err := LoadAgent("testdata/agent-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Agent{
		Gateway:       "gw.example.com:443",
		GatewayCAFile: "/etc/sallyport/gw-ca.pem",
		Token:         "s3cret",
		DataDir:       "/var/lib/sallyport-agent",
		Transport:     "auto",
		Connections:   8,
		Keepalive:     7 * time.Second,
		Proxy:         "http://proxy.corp:3128",
		Allow:         []string{"app.corp:443", "*.corp:*", "[::1]:9000", "fd00::/8"},
		Name:          "agent-7",
		MetricsAddr:   "127.0.0.1:9091",
		BackendTLS: []BackendTLS{
			{Hosts: []string{"app.corp:443", "*.corp:443"}, CAFile: "/etc/ssl/corp-ca.pem", ServerName: "app.corp"},
			{Hosts: []string{"10.0.0.0/8"}, InsecureSkipVerify: true},
		},
	}
	a.src = source{} // where it came from: see TestFileError
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got\n%+v\nwant\n%+v", a, want)
	}
	if got := a.TransportOrDefault(); got != TransportAuto {
		t.Errorf("TransportOrDefault = %q, want auto", got)
	}
	if got := a.ConnectionsOrDefault(); got != 8 {
		t.Errorf("ConnectionsOrDefault = %d", got)
	}
	if got := a.KeepaliveOrDefault(); got != 7*time.Second {
		t.Errorf("KeepaliveOrDefault = %v", got)
	}
	if got := a.NameOrDefault(); got != "agent-7" {
		t.Errorf("NameOrDefault = %q", got)
	}
	if got := a.DataDirOrDefault(); got != "/var/lib/sallyport-agent" {
		t.Errorf("DataDirOrDefault = %q", got)
	}
}

func TestAgentZeroDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = DefaultAgentName
	}
	parsed, err := ParseAgent("agent.yaml", []byte("gateway: gw:8443\ntoken: t\n"))
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]*Agent{"zero": {}, "parsed": parsed} {
		t.Run(name, func(t *testing.T) {
			if got := a.DataDirOrDefault(); got != "./data/agent" {
				t.Errorf("DataDirOrDefault = %q", got)
			}
			if got := a.ConnectionsOrDefault(); got != 2 {
				t.Errorf("ConnectionsOrDefault = %d", got)
			}
			if got := a.TransportOrDefault(); got != "auto" {
				t.Errorf("TransportOrDefault = %q", got)
			}
			if got := a.KeepaliveOrDefault(); got != 15*time.Second {
				t.Errorf("KeepaliveOrDefault = %v", got)
			}
			if got := a.NameOrDefault(); got != host {
				t.Errorf("NameOrDefault = %q, want host name %q", got, host)
			}
		})
	}
}

func TestTransportOrDefault(t *testing.T) {
	for in, want := range map[string]string{"": "auto", "auto": "auto", "grpc": "grpc", "quic": "quic", "yamux": "yamux"} {
		a := Agent{Transport: in}
		if got := a.TransportOrDefault(); got != want {
			t.Errorf("TransportOrDefault(%q) = %q, want %q", in, got, want)
		}
	}
}

// minimalAgent is a valid agent config to build error cases from.
const minimalAgent = "gateway: gw.example.com:8443\ntoken: t\n"

func TestParseAgentErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty", "", []string{"agent.yaml: file is empty"}},
		{"unknown key", minimalAgent + "tokn: x\n", []string{`agent.yaml:3: unknown key "tokn" (did you mean "token"?)`}},
		// token_file looks like the admin token's file key, but the agent takes the token itself.
		{"token_file", "gateway: gw:8443\ntoken_file: /etc/sallyport/token\n", []string{`agent.yaml:2: unknown key "token_file" (the agent config takes the enrollment token itself in "token"`,
			`sallyport agent enroll --token-file FILE`}},
		{"unknown key in backend_tls", minimalAgent + "backend_tls:\n  - hosts: [a:443]\n    ca: x\n", []string{`agent.yaml:5: unknown key "ca" in backend_tls[0]`}},
		{"type error", minimalAgent + "connections: two\n", []string{`agent.yaml:3: connections: want a whole number, got "two"`}},
		{"bool type error", minimalAgent + "backend_tls:\n  - hosts: [a:443]\n    insecure_skip_verify: sure\n", []string{`agent.yaml:5: backend_tls[0].insecure_skip_verify: want true or false, got "sure"`}},
		{"allow not a list", minimalAgent + "allow: 10.0.0.0/8\n", []string{`agent.yaml:3: allow: want a list, got "10.0.0.0/8"`}},

		{"missing gateway and token", "data_dir: x\n", []string{`agent.yaml: gateway: required`}},
		{"gateway without port", "gateway: gw.example.com\ntoken: t\n", []string{`agent.yaml:1: gateway: must be host:port, got "gw.example.com"`}},
		{"gateway IP without port", "gateway: 127.0.0.1\ntoken: t\n", []string{`agent.yaml:1: gateway: must be host:port, got "127.0.0.1": e.g. 127.0.0.1:8443 (the port of the gateway's tunnel.addr, 8443 by default)`}},
		{"gateway without host", "gateway: \":8443\"\ntoken: t\n", []string{`agent.yaml:1: gateway: host missing in ":8443"`}},
		{"gateway port zero", "gateway: \"gw:0\"\ntoken: t\n", []string{`agent.yaml:1: gateway: port "0" must be a number from 1 to 65535`}},
		{"gateway port name", "gateway: \"gw:https\"\ntoken: t\n", []string{`agent.yaml:1: gateway: port "https" must be a number`}},
		{"blank token", "gateway: gw:1\ntoken: \"  \"\n", []string{`agent.yaml:2: token: blank; remove it, or give an enrollment token`}},
		{"quic with proxy", minimalAgent + "transport: quic\nproxy: http://p:3128\n", []string{`agent.yaml:4: proxy: transport quic cannot pass an HTTP proxy`}},
		{"transport unknown", minimalAgent + "transport: websocket\n", []string{`agent.yaml:3: transport: must be grpc, quic, yamux or auto, got "websocket"`}},
		{"keepalive too short", minimalAgent + "keepalive: 1s\n", []string{`agent.yaml:3: keepalive: 1s is too short`, `GOAWAY too_many_pings`, `use at least 5s`}},
		{"keepalive too long", minimalAgent + "keepalive: 1h\n", []string{`agent.yaml:3: keepalive: 1h0m0s is too long`, `use at most 2m0s`}},
		{"keepalive negative", minimalAgent + "keepalive: -5s\n", []string{`agent.yaml:3: keepalive: must not be negative`}},
		{"connections negative", minimalAgent + "connections: -1\n", []string{`agent.yaml:3: connections: must be from 1 to 64 (0 means 2), got -1`}},
		{"connections too many", minimalAgent + "connections: 65\n", []string{`agent.yaml:3: connections: must be from 1 to 64`}},
		{"proxy scheme", minimalAgent + "proxy: ftp://p:21\n", []string{`agent.yaml:3: proxy: must be an http:// or https:// URL of an HTTP CONNECT proxy, got "ftp://p:21"`}},
		{"proxy socks5", minimalAgent + "proxy: socks5://u:secret@p:1080\n", []string{`agent.yaml:3: proxy: must be an http:// or https:// URL of an HTTP CONNECT proxy, got "socks5://u:xxxxx@p:1080"`}},
		{"proxy bare", minimalAgent + "proxy: proxy.corp:3128\n", []string{`agent.yaml:3: proxy: must be an http://`}},
		{"allow entries", minimalAgent + "allow:\n  - 127.0.0.1:9000\n  - app.corp\n  - 10.0.0.0/33\n  - 10.0.0.1\n  - a.*.corp:443\n  - app.corp:0\n  - \"\"\n", []string{
			`agent.yaml:5: allow[1]: "app.corp": must be host:port`,
			`agent.yaml:6: allow[2]: "10.0.0.0/33": not a valid CIDR prefix`,
			`agent.yaml:7: allow[3]: "10.0.0.1": add a port (10.0.0.1:PORT, or :* for any port)`,
			`agent.yaml:8: allow[4]: "a.*.corp:443": a wildcard may only be a leading "*."`,
			`agent.yaml:9: allow[5]: "app.corp:0": port must be a number from 1 to 65535 or *`,
			`agent.yaml:10: allow[6]: must not be empty`,
		}},
		{"metrics_addr without port", minimalAgent + "metrics_addr: 127.0.0.1\n", []string{`agent.yaml:3: metrics_addr: must be host:port or :port, got "127.0.0.1"`}},
		{"metrics_addr bad port", minimalAgent + "metrics_addr: \"127.0.0.1:http\"\n", []string{`agent.yaml:3: metrics_addr: port "http" must be a number from 0 to 65535`}},
		{"name unprintable", minimalAgent + "name: \"a\\tb\"\n", []string{`agent.yaml:3: name: must be at most 128 printable characters`}},
		{"name too long", minimalAgent + "name: " + strings.Repeat("n", 129) + "\n", []string{`agent.yaml:3: name: must be at most 128`}},
		{"backend_tls no hosts", minimalAgent + "backend_tls:\n  - ca_file: ca.pem\n", []string{`agent.yaml:4: backend_tls[0].hosts: at least one host pattern is required`}},
		{"backend_tls bad host", minimalAgent + "backend_tls:\n  - ca_file: ca.pem\n    hosts:\n      - ok.corp:443\n      - bad.corp\n", []string{`agent.yaml:7: backend_tls[0].hosts[1]: "bad.corp": must be host:port`}},
		{"backend_tls both", minimalAgent + "backend_tls:\n  - hosts: [a.corp:443]\n    ca_file: ca.pem\n    insecure_skip_verify: true\n", []string{`agent.yaml:6: backend_tls[0].insecure_skip_verify: cannot be combined with ca_file`}},
		{"backend_tls nothing", minimalAgent + "backend_tls:\n  - hosts: [a.corp:443]\n", []string{`agent.yaml:4: backend_tls[0]: sets nothing: give ca_file, server_name or insecure_skip_verify`}},
		{"backend_tls server name", minimalAgent + "backend_tls:\n  - hosts: [a.corp:443]\n    server_name: \"a b\"\n", []string{`agent.yaml:5: backend_tls[0].server_name: "a b" is not a valid host name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent("agent.yaml", []byte(tt.yaml))
			wantRefused(t, a, err, tt.want)
		})
	}
}

// TestAgentProxyHidesPassword: a `proxy` value that is not a well-formed
// proxy URL is refused with file, line and key, and without its password,
// also when it does not parse as a URL at all.
func TestAgentProxyHidesPassword(t *testing.T) {
	for _, c := range []struct{ proxy, want string }{
		{"http://user:pa#s3cr3t@proxy.corp:3128", `got "http://user:xxxxx@proxy.corp:3128"; percent-encode`},
		{"http://user:pa/s3cr3t@proxy.corp:3128", `got "http://user:xxxxx@proxy.corp:3128"; percent-encode`},
		{"user:s3cr3tpw@proxy.corp:3128", `got "user:xxxxx@proxy.corp:3128"; write it as http://`},
		{"http://user:s3cr3tpw@proxy corp:3128", `got "http://user:xxxxx@proxy corp:3128"; invalid character`},
		{"http://us#s3cr3t@proxy.corp:3128", `got "http://xxxxx@proxy.corp:3128"`},
	} {
		_, err := ParseAgent("agent.yaml", []byte(minimalAgent+"proxy: \""+c.proxy+"\"\n"))
		if err == nil {
			t.Errorf("proxy %q accepted", c.proxy)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "agent.yaml:3: proxy: must be an http:// or https:// URL of an HTTP CONNECT proxy, "+c.want) ||
			strings.Contains(msg, "s3cr3t") {
			t.Errorf("proxy %q: error %q, want it to contain %q and no password", c.proxy, msg, c.want)
		}
	}
}

// TestAgentAllowCIDRPort: an allow entry may be a CIDR with a port, as the
// README documents (10.0.0.0/8:443), also IPv6 with or without brackets;
// it is normalised to the prefix:port form the agent's allowlist parses.
func TestAgentAllowCIDRPort(t *testing.T) {
	a, err := ParseAgent("agent.yaml", []byte(minimalAgent+"allow:\n"+
		"  - 10.0.0.0/8:443\n  - 10.1.2.3/8:*\n  - 10.0.0.0/8\n  - \"[2001:DB8::]/32:443\"\n"+
		"  - \"[fd00::/8]:8443\"\n  - \"fd00::/8:22\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8:443", "10.0.0.0/8", "10.0.0.0/8", "2001:db8::/32:443", "fd00::/8:8443", "fd00::/8:22"}
	if !reflect.DeepEqual(a.Allow, want) {
		t.Errorf("allow = %q, want %q", a.Allow, want)
	}
	for _, c := range []struct{ entry, want string }{
		{"10.0.0.0/8:0", `allow[0]: "10.0.0.0/8:0": port must be a number from 1 to 65535 or *`},
		{"10.0.0.0/8:https", `allow[0]: "10.0.0.0/8:https": port must be`},
		{"10.0.0.0/8:", `allow[0]: "10.0.0.0/8:": port must be`},
		{"10.0.0.0/33:443", `allow[0]: "10.0.0.0/33:443": not a valid CIDR prefix such as 10.0.0.0/8 (any port) or 10.0.0.0/8:443`},
		{"[2001:db8::/32:443", `allow[0]: "[2001:db8::/32:443": missing ']'`},
	} {
		_, err := ParseAgent("agent.yaml", []byte(minimalAgent+"allow: [\""+c.entry+"\"]\n"))
		if err == nil || !strings.Contains(err.Error(), "agent.yaml:3: "+c.want) {
			t.Errorf("allow %q: error %v, want %q", c.entry, err, c.want)
		}
	}
}

func TestAgentAcceptsVariants(t *testing.T) {
	for _, y := range []string{
		minimalAgent + "transport: grpc\n",
		minimalAgent + "transport: auto\nconnections: 64\n",
		minimalAgent + "connections: 1\n",
		minimalAgent + "keepalive: 5s\n",
		minimalAgent + "keepalive: 2m\n",
		minimalAgent + "keepalive: 0s\n",
		minimalAgent + "transport: quic\n",
		minimalAgent + "transport: yamux\nproxy: http://127.0.0.1:3128\n",
		minimalAgent + "proxy: https://user:pw@proxy:443\n",
		"gateway: \"[::1]:8443\"\ntoken: t\n",
		minimalAgent + "allow: []\n",
		minimalAgent + "backend_tls:\n  - hosts: [\"10.0.0.5:8443\"]\n    server_name: 10.0.0.5\n",
		minimalAgent + "backend_tls:\n  - hosts: [\"*.corp:*\"]\n    server_name: internal.corp\n",
	} {
		if _, err := ParseAgent("agent.yaml", []byte(y)); err != nil {
			t.Errorf("%q: %v", y, err)
		}
	}
}

func TestAgentValidateInCode(t *testing.T) {
	a := &Agent{Gateway: "gw:443", Token: "t", Allow: []string{"APP.corp:443", "10.1.2.3/8"}}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"app.corp:443", "10.0.0.0/8"}; !reflect.DeepEqual(a.Allow, want) {
		t.Errorf("Allow = %q, want %q", a.Allow, want)
	}
	err := (&Agent{}).Validate()
	if err == nil || !strings.Contains(err.Error(), "gateway: required") || strings.Contains(err.Error(), "token") {
		t.Errorf("zero Agent: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.File != "" || e.Line != 0 {
		t.Errorf("errors.As = %+v", e)
	}
}

func TestLoadAgentFileErrors(t *testing.T) {
	if _, err := LoadAgent(filepath.Join(t.TempDir(), "nope.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAgent(p); err == nil || err.Error() != p+": file is empty; expected a YAML mapping of settings" {
		t.Errorf("empty file: %v", err)
	}
}
