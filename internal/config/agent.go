package config

import (
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/sallyport/sallyport/internal/credurl"
)

// Agent defaults: what a zero field means.
const (
	DefaultAgentDataDir = "./data/agent"
	DefaultConnections  = 2
	MaxConnections      = 64
	DefaultAgentName    = "sallyport-agent" // only when the host name cannot be read
)

// Transports for Agent.Transport.
const (
	TransportGRPC  = "grpc"
	TransportQUIC  = "quic"
	TransportYamux = "yamux"
	TransportAuto  = "auto"
)

// Agent is the connector agent's configuration file (agent.yaml).
type Agent struct {
	// Gateway is the gateway's tunnel address, host:port. Required.
	Gateway string `yaml:"gateway"`

	// GatewayCAFile is a PEM file of certificates trusted for the tunnel
	// (for a self-signed gateway, its data_dir/tunnel-cert.pem). Empty means
	// the system roots.
	GatewayCAFile string `yaml:"gateway_ca_file"`

	// Token is an enrollment token (from `sallyport token create` or the
	// gateway's tunnel.tokens). An agent without a certificate in DataDir
	// enrolls itself with it first. Empty means the agent must have been
	// enrolled with `sallyport agent enroll`.
	Token string `yaml:"token"`

	// DataDir holds the agent's key, client certificate and the connector
	// CA bundle. Empty means DefaultAgentDataDir.
	DataDir string `yaml:"data_dir"`

	// Transport is grpc, quic, yamux or auto. Empty means auto: QUIC first,
	// gRPC when QUIC does not come up, back to QUIC when it works again
	// (gRPC straight away when a proxy is configured). See
	// TransportOrDefault.
	Transport string `yaml:"transport"`

	// Connections is how many tunnel connections the agent keeps open, 1 to
	// MaxConnections. Zero means DefaultConnections (2).
	Connections int `yaml:"connections"`

	// Keepalive is how often the agent pings its sessions to find a dead
	// network path, MinKeepalive to MaxKeepalive. Zero means
	// DefaultKeepalive (15s). It need not match the gateway's
	// tunnel.keepalive: each side pings on its own schedule.
	Keepalive time.Duration `yaml:"keepalive"`

	// Proxy is an outbound HTTP proxy URL (http:// or https://, with
	// optional user:password for Basic auth) for the TCP transports (grpc,
	// yamux). Empty means the HTTPS_PROXY and NO_PROXY environment
	// variables.
	Proxy string `yaml:"proxy"`

	// Allow lists the backends this agent may call. Empty means none. Each
	// entry is host:port, *.domain:port, IP:port (port may be "*"), or a
	// CIDR prefix such as 10.0.0.0/8 (any port). Validation lowercases host
	// names and canonicalises IP addresses and prefixes.
	Allow []string `yaml:"allow"`

	// Name identifies this agent in the gateway's logs and connector list.
	// Empty means the host name (see NameOrDefault).
	Name string `yaml:"name"`

	// BackendTLS adjusts certificate checks for https:// backends, such as
	// ones with a private CA or a self-signed certificate. The first entry
	// whose Hosts match the backend applies; no match means the system roots
	// and normal verification.
	BackendTLS []BackendTLS `yaml:"backend_tls"`

	// VerifyAssertion makes the agent check the gateway's signed identity
	// assertion (X-Sallyport-Assertion) on every request before calling a
	// backend, and refuse requests without a valid one. Only for agents
	// whose apps all use preauth: oidc without public_paths. False means no
	// check.
	VerifyAssertion bool `yaml:"verify_assertion"`

	// MetricsAddr is a host:port where the agent serves Prometheus metrics
	// at /metrics, without authentication: keep it on a private address
	// such as 127.0.0.1:9091. Empty means no metrics listener (and no
	// metrics are collected).
	MetricsAddr string `yaml:"metrics_addr"`

	src source // the file it was parsed from; zero when built in code
}

// FileError reports err, a problem with the file that the setting at key
// names (such as "gateway_ca_file"), as an *Error with the config file and
// the setting's line and what to do.
func (a *Agent) FileError(key string, err error) error { return a.src.fileError(key, err) }

// SettingError reports err, a problem found when the setting at key was
// put to use (a metrics_addr already in use), as an *Error with the config
// file and the setting's line; err itself says what to do.
func (a *Agent) SettingError(key string, err error) error { return a.src.settingError(key, err) }

// BackendTLS is how the agent verifies the certificates of some https
// backends.
type BackendTLS struct {
	// Hosts are the backends this entry applies to, written like Allow
	// entries ("app.corp:443", "*.corp:443", "10.0.0.5:8443", "10.0.0.0/8").
	// They match the backend URL's host as written: a CIDR covers backends
	// addressed by an IP in it, not names that resolve into it. At least
	// one.
	Hosts []string `yaml:"hosts"`

	// CAFile is a PEM file of CA certificates (or the backend's self-signed
	// certificate itself) trusted instead of the system roots. Empty means
	// the system roots.
	CAFile string `yaml:"ca_file"`

	// InsecureSkipVerify turns certificate verification off for these
	// backends. Traffic is still encrypted but anyone on the path can
	// impersonate the backend; prefer CAFile. Cannot be combined with CAFile.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`

	// ServerName is the name the certificate is checked against (and sent as
	// SNI) instead of the backend URL's host, for backends reached by IP
	// address or by an internal alias. Empty means the URL's host.
	ServerName string `yaml:"server_name"`
}

// DataDirOrDefault returns DataDir, or DefaultAgentDataDir when it is empty.
func (a *Agent) DataDirOrDefault() string { return or(a.DataDir, DefaultAgentDataDir) }

// ConnectionsOrDefault returns Connections, or DefaultConnections when it is zero.
func (a *Agent) ConnectionsOrDefault() int { return or(a.Connections, DefaultConnections) }

// KeepaliveOrDefault returns Keepalive, or DefaultKeepalive when it is zero.
func (a *Agent) KeepaliveOrDefault() time.Duration { return or(a.Keepalive, DefaultKeepalive) }

// TransportOrDefault returns the transport to use: the one place that
// decides what "" means (auto); other values are returned as they are.
func (a *Agent) TransportOrDefault() string {
	if a.Transport == "" {
		return TransportAuto
	}
	return a.Transport
}

// NameOrDefault returns Name, or the machine's host name when it is empty,
// or DefaultAgentName when the host name cannot be read.
func (a *Agent) NameOrDefault() string {
	if a.Name != "" {
		return a.Name
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return DefaultAgentName
}

// LoadAgent reads and validates an agent configuration file.
func LoadAgent(path string) (*Agent, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseAgent(path, data)
}

// ParseAgent parses and validates agent configuration; name is used in error
// messages.
func ParseAgent(name string, data []byte) (*Agent, error) {
	a := new(Agent)
	root, err := decode(name, data, a)
	if err != nil {
		return nil, err
	}
	c := &checker{file: name, root: root}
	a.validate(c)
	if err := c.err(); err != nil {
		return nil, err
	}
	a.src = source{file: name, root: root}
	return a, nil
}

// Validate checks an Agent built in code, as ParseAgent does for a file, and
// normalises Allow and BackendTLS hosts in place. Errors carry key paths but
// no file or line.
func (a *Agent) Validate() error {
	c := new(checker)
	a.validate(c)
	return c.err()
}

func (a *Agent) validate(c *checker) {
	c.checkDialAddr(path{"gateway"}, a.Gateway)
	c.checkListenAddr(path{"metrics_addr"}, a.MetricsAddr)
	// token may be empty: an agent enrolled with `sallyport agent enroll`
	// has its certificate in data_dir. Without either, the agent says so
	// when it starts. A blank one is a mistake.
	if a.Token != "" && strings.TrimSpace(a.Token) == "" {
		c.errorf(path{"token"}, "blank; remove it, or give an enrollment token")
	}

	switch a.Transport {
	case "", TransportGRPC, TransportAuto, TransportQUIC, TransportYamux:
	default:
		c.errorf(path{"transport"}, "must be grpc, quic, yamux or auto, got %q", a.Transport)
	}

	c.checkKeepalive(path{"keepalive"}, a.Keepalive,
		"the gateway closes gRPC connections whose agent pings more often than every 5s (GOAWAY too_many_pings)")

	if a.Connections < 0 || a.Connections > MaxConnections {
		c.errorf(path{"connections"}, "must be from 1 to %d (0 means %d), got %d", MaxConnections, DefaultConnections, a.Connections)
	}

	if a.Proxy != "" {
		_, err := credurl.ParseProxy(a.Proxy)
		switch {
		case err != nil:
			c.errorf(path{"proxy"}, "%v", err)
		case a.Transport == TransportQUIC:
			c.errorf(path{"proxy"}, "transport quic cannot pass an HTTP proxy; use grpc, yamux or auto (which then uses grpc)")
		}
	}

	for i, s := range a.Allow {
		norm, err := normalizeBackendPattern(s)
		if err != nil {
			c.errorf(path{"allow"}.index(i), "%v", err)
			continue
		}
		a.Allow[i] = norm
	}

	if strings.IndexFunc(a.Name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 || len(a.Name) > 128 {
		c.errorf(path{"name"}, "must be at most 128 printable characters")
	}

	for i := range a.BackendTLS {
		b := &a.BackendTLS[i]
		p := path{"backend_tls"}.index(i)
		if len(b.Hosts) == 0 {
			c.errorf(p.key("hosts"), "at least one host pattern is required")
		}
		for j, s := range b.Hosts {
			norm, err := normalizeBackendPattern(s)
			if err != nil {
				c.errorf(p.key("hosts").index(j), "%v", err)
				continue
			}
			b.Hosts[j] = norm
		}
		switch {
		case b.InsecureSkipVerify && b.CAFile != "":
			c.errorf(p.key("insecure_skip_verify"), "cannot be combined with ca_file (which would be ignored)")
		case !b.InsecureSkipVerify && b.CAFile == "" && b.ServerName == "":
			c.errorf(p, "sets nothing: give ca_file, server_name or insecure_skip_verify")
		}
		if _, ipErr := netip.ParseAddr(b.ServerName); b.ServerName != "" && ipErr != nil && !validHostname(b.ServerName) {
			c.errorf(p.key("server_name"), "%q is not a valid host name", b.ServerName)
		}
	}
}
