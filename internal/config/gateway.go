package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/credurl"
	"github.com/sallyport/sallyport/internal/groupname"
)

// Gateway defaults: what a zero field means.
const (
	DefaultPublicAddr           = ":8080"
	DefaultReadHeaderTimeout    = 10 * time.Second
	DefaultIdleTimeout          = 120 * time.Second
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultSendTimeout          = 5 * time.Minute
	DefaultMaxStalledExchanges  = 512
	DefaultTunnelAddr           = ":8443"
	DefaultMaxStreamsPerSession = 10000
	DefaultCertLifetime         = 30 * 24 * time.Hour
	DefaultAdminAddr            = "127.0.0.1:9090"
	DefaultGatewayDataDir       = "./data/gateway"
	DefaultShutdownGrace        = 30 * time.Second
	DefaultAppTimeout           = 85 * time.Second
	DefaultPathPrefix           = "/"
	DefaultGroupsClaim          = "groups"
)

// Keepalive bounds, for tunnel.keepalive and the agent's keepalive.
const (
	// DefaultKeepalive is the ping interval when none is set.
	DefaultKeepalive = 15 * time.Second
	// MinKeepalive is the shortest: the gateway closes a gRPC connection
	// whose agent pings more often (GOAWAY too_many_pings), and the
	// timeouts that follow from shorter ones would end sessions that are
	// merely busy.
	MinKeepalive = 5 * time.Second
	// MaxKeepalive is the longest: beyond it a dead path goes unnoticed
	// for minutes, and NAT gateways and load balancers drop TCP flows
	// idle for about 4 to 6 minutes (Azure: 4 min, AWS NAT gateway: 350 s).
	MaxKeepalive = 2 * time.Minute
)

// Pre-authentication modes for App.Preauth.
const (
	PreauthNone = "none" // requests go to the backend unauthenticated
	PreauthOIDC = "oidc" // users sign in with an OIDC provider first
)

// DefaultScopes are the OIDC scopes requested when a provider lists none.
var DefaultScopes = []string{"openid", "email", "profile"}

// Gateway is the gateway's configuration file (gateway.yaml).
type Gateway struct {
	Public Public `yaml:"public"` // user-facing listener
	Tunnel Tunnel `yaml:"tunnel"` // listener agents connect to
	Admin  Admin  `yaml:"admin"`  // metrics, health and admin API listener

	// DataDir holds state that must survive restarts (the generated tunnel
	// certificate, the pre-authentication keys, and the store unless Store
	// names a database). Empty means DefaultGatewayDataDir.
	DataDir string `yaml:"data_dir"`

	// Store names the database of the gateway's state. Empty means a
	// SQLite file in DataDir.
	Store Store `yaml:"store"`

	// ShutdownGrace is how long in-flight exchanges may run after a stop
	// signal. Zero means DefaultShutdownGrace (30s); negative is invalid.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`

	// ShutdownDelay is how long, after a stop signal, the gateway goes on
	// serving (public listener included) with /readyz answering 503, so
	// that a load balancer's health check takes it out before it refuses
	// connections; ShutdownGrace follows. Zero (the default): none;
	// negative is invalid.
	ShutdownDelay time.Duration `yaml:"shutdown_delay"`

	OIDC OIDC  `yaml:"oidc"` // user pre-authentication providers
	Apps []App `yaml:"apps"` // published applications; empty → every request is no-route

	src source // the file it was parsed from; zero when built in code
}

// SettingError reports err, a problem found when the setting at key was
// put to use (a database that does not answer), as an *Error with the
// config file and the setting's line; err itself says what to check.
func (g *Gateway) SettingError(key string, err error) error { return g.src.settingError(key, err) }

// FileError reports err, a problem with the file that the setting at key
// names (a missing certificate, an unreadable token file), as an *Error
// with the config file and the setting's line and what to do. key is
// spelt as in Error.Path: "public.tls", "oidc.providers[0].client_secret_file".
func (g *Gateway) FileError(key string, err error) error { return g.src.fileError(key, err) }

// TLSFiles names a PEM certificate (chain) and its private key.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"` // empty only together with KeyFile
	KeyFile  string `yaml:"key_file"`  // empty only together with CertFile
}

// Enabled reports whether both files are set.
func (t TLSFiles) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// Public is the user-facing HTTP listener.
type Public struct {
	// Addr is the listen address. Empty means DefaultPublicAddr (":8080").
	Addr string `yaml:"addr"`

	// TLS serves HTTPS (h2 and HTTP/1.1) when set; both empty means plain
	// HTTP/1.1 and h2c.
	TLS TLSFiles `yaml:"tls"`

	// ReadHeaderTimeout bounds reading a request's head. Zero means
	// DefaultReadHeaderTimeout (10s).
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`

	// IdleTimeout closes idle keep-alive connections. Zero means
	// DefaultIdleTimeout (120s).
	IdleTimeout time.Duration `yaml:"idle_timeout"`

	// MaxHeaderBytes bounds a request head's size. Zero means
	// DefaultMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int `yaml:"max_header_bytes"`

	// MaxConnections bounds the public listener's connections at once.
	// Zero means three quarters of the process's open-file limit; -1
	// means no limit.
	MaxConnections int `yaml:"max_connections"`

	// SendTimeout cuts an exchange when a write of its response to the
	// client does not return within it (the client stopped reading). Zero
	// means DefaultSendTimeout (5 minutes).
	SendTimeout time.Duration `yaml:"send_timeout"`

	// MaxStalledExchanges bounds the exchanges whose write to the client
	// has blocked for a second or more (the client stopped reading),
	// gateway wide: beyond it, the one blocked longest is cut as
	// send_timeout cuts it. Zero means DefaultMaxStalledExchanges (512);
	// -1 means no limit.
	MaxStalledExchanges int `yaml:"max_stalled_exchanges"`

	// TrustedProxies are the addresses (IPs or CIDR prefixes) of load
	// balancers in front of the gateway. Requests from them take the
	// client's address from X-Forwarded-For and HTTPS from
	// X-Forwarded-Proto, and keep their sane X-Request-Id. Empty means no
	// proxy is trusted: both headers are ignored and X-Request-Id replaced.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// TrustedProxyPrefixes returns TrustedProxies as prefixes (an IP as a
// single-address prefix). Entries that do not parse are left out; validate
// reports them.
func (p *Public) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range p.TrustedProxies {
		if prefix, err := parseTrustedProxy(s); err == nil {
			out = append(out, prefix)
		}
	}
	return out
}

// parseTrustedProxy parses one public.trusted_proxies entry.
func parseTrustedProxy(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var prefix netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return prefix, fmt.Errorf("%q: not an IP address or CIDR prefix such as 10.0.0.0/8", s)
		}
		prefix = p.Masked()
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return prefix, fmt.Errorf("%q: not an IP address or CIDR prefix such as 10.0.0.0/8", s)
		}
		prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	if prefix.Bits() == 0 {
		return prefix, fmt.Errorf("%q trusts every address, so any client could claim any address in X-Forwarded-For; list the load balancers' addresses or subnets", s)
	}
	return prefix, nil
}

// AddrOrDefault returns Addr, or DefaultPublicAddr when it is empty.
func (p *Public) AddrOrDefault() string { return or(p.Addr, DefaultPublicAddr) }

// ReadHeaderTimeoutOrDefault returns ReadHeaderTimeout, or DefaultReadHeaderTimeout when it is zero.
func (p *Public) ReadHeaderTimeoutOrDefault() time.Duration {
	return or(p.ReadHeaderTimeout, DefaultReadHeaderTimeout)
}

// IdleTimeoutOrDefault returns IdleTimeout, or DefaultIdleTimeout when it is zero.
func (p *Public) IdleTimeoutOrDefault() time.Duration { return or(p.IdleTimeout, DefaultIdleTimeout) }

// SendTimeoutOrDefault returns SendTimeout, or DefaultSendTimeout when it is zero.
func (p *Public) SendTimeoutOrDefault() time.Duration { return or(p.SendTimeout, DefaultSendTimeout) }

// MaxHeaderBytesOrDefault returns MaxHeaderBytes, or DefaultMaxHeaderBytes when it is zero.
func (p *Public) MaxHeaderBytesOrDefault() int { return or(p.MaxHeaderBytes, DefaultMaxHeaderBytes) }

// Tunnel is the listener agents dial. It always uses TLS.
type Tunnel struct {
	// Addr is the listen address. Empty means DefaultTunnelAddr (":8443").
	Addr string `yaml:"addr"`

	// TLS is the tunnel certificate. Both empty means a self-signed
	// certificate generated once into data_dir (tunnel-cert.pem).
	TLS TLSFiles `yaml:"tls"`

	// Tokens are pre-provisioned enrollment tokens: reusable, never
	// expiring. An agent with one of them in its `token:` enrolls itself.
	// Empty means agents enroll only with tokens made by `sallyport token
	// create`.
	Tokens []Token `yaml:"tokens"`

	// CertLifetime is how long agent client certificates are valid; agents
	// renew at two thirds of it. Zero means DefaultCertLifetime (720h).
	CertLifetime time.Duration `yaml:"cert_lifetime"`

	// MaxStreamsPerSession bounds concurrent exchanges on one agent session.
	// Zero means DefaultMaxStreamsPerSession (10000); negative is invalid.
	MaxStreamsPerSession int `yaml:"max_streams_per_session"`

	// Keepalive is how often the gateway pings each agent session to find
	// a dead network path, MinKeepalive to MaxKeepalive. Zero means
	// DefaultKeepalive (15s). Agents ping on their own schedule (their
	// keepalive), down to MinKeepalive whatever this is. On QUIC it sets
	// the idle timeout (twice it), and both ends ping after min(5 s, it)
	// without a packet.
	Keepalive time.Duration `yaml:"keepalive"`
}

// AddrOrDefault returns Addr, or DefaultTunnelAddr when it is empty.
func (t *Tunnel) AddrOrDefault() string { return or(t.Addr, DefaultTunnelAddr) }

// MaxStreamsPerSessionOrDefault returns MaxStreamsPerSession, or
// DefaultMaxStreamsPerSession when it is zero.
func (t *Tunnel) MaxStreamsPerSessionOrDefault() int {
	return or(t.MaxStreamsPerSession, DefaultMaxStreamsPerSession)
}

// KeepaliveOrDefault returns Keepalive, or DefaultKeepalive when it is zero.
func (t *Tunnel) KeepaliveOrDefault() time.Duration { return or(t.Keepalive, DefaultKeepalive) }

// CertLifetimeOrDefault returns CertLifetime, or DefaultCertLifetime.
func (t *Tunnel) CertLifetimeOrDefault() time.Duration {
	return or(t.CertLifetime, DefaultCertLifetime)
}

// Store is where the gateway keeps the connector CA, enrolled connectors,
// enrollment tokens and sign-outs. All empty means a SQLite file in
// data_dir. Gateway replicas that share this state name one PostgreSQL
// database, with at most one of the three keys.
type Store struct {
	// Postgres is the database's DSN, as a URL
	// (postgres://USER@HOST:5432/DATABASE?sslmode=verify-full) or as
	// key=value pairs (host=... dbname=... user=...). What it leaves out
	// comes from the PG* environment variables and the password file, as
	// with psql: keep the password in PGPASSWORD or ~/.pgpass (PGPASSFILE)
	// rather than here.
	Postgres string `yaml:"postgres"`
	// PostgresFile is a file holding the DSN (password included), and
	// PostgresEnv the name of an environment variable holding it.
	PostgresFile string `yaml:"postgres_file"`
	PostgresEnv  string `yaml:"postgres_env"`
}

// PostgresKey is the key of the store setting in use ("store.postgres",
// "store.postgres_file", "store.postgres_env"), or "" for SQLite in
// data_dir.
func (s *Store) PostgresKey() string {
	switch {
	case s.Postgres != "":
		return "store.postgres"
	case s.PostgresFile != "":
		return "store.postgres_file"
	case s.PostgresEnv != "":
		return "store.postgres_env"
	}
	return ""
}

// Token is one pre-provisioned enrollment token.
type Token struct {
	Token string `yaml:"token"` // the secret the agent presents; required, unique
	Group string `yaml:"group"` // connector group the agent joins; required
}

// Admin is the metrics, health and admin API listener.
type Admin struct {
	// Addr is the listen address. Empty means DefaultAdminAddr
	// ("127.0.0.1:9090", loopback only).
	Addr string `yaml:"addr"`

	// TokenFile holds the admin API bearer token. Empty means no file; the
	// SALLYPORT_ADMIN_TOKEN environment variable overrides it (read by the
	// admin code, not here).
	TokenFile string `yaml:"token_file"`
}

// AddrOrDefault returns Addr, or DefaultAdminAddr when it is empty.
func (a *Admin) AddrOrDefault() string { return or(a.Addr, DefaultAdminAddr) }

// OIDC lists the providers apps can use for pre-authentication.
type OIDC struct {
	Providers []OIDCProvider `yaml:"providers"` // names unique

	// CookieDomain shares the sign-in session with every app host under
	// this domain ("example.com" covers a.example.com and b.example.com), so
	// users sign in once across apps. Empty means host-only cookies: one
	// sign-in per app host.
	CookieDomain string `yaml:"cookie_domain"`

	// SessionLifetime is how long a sign-in lasts. Zero means
	// DefaultSessionLifetime (12h); negative is invalid.
	SessionLifetime time.Duration `yaml:"session_lifetime"`
}

// DefaultSessionLifetime is how long a sign-in lasts when
// oidc.session_lifetime is not set.
const DefaultSessionLifetime = 12 * time.Hour

// SessionLifetimeOrDefault returns SessionLifetime, or DefaultSessionLifetime when it is zero.
func (o *OIDC) SessionLifetimeOrDefault() time.Duration {
	return or(o.SessionLifetime, DefaultSessionLifetime)
}

// OIDCProvider is one OpenID Connect identity provider.
type OIDCProvider struct {
	Name     string `yaml:"name"`      // referenced by App.OIDCProvider; required, unique
	Issuer   string `yaml:"issuer"`    // issuer URL (http:// or https://); required
	ClientID string `yaml:"client_id"` // required

	// ClientSecretFile is a file holding the client secret, and
	// ClientSecretEnv the name of an environment variable holding it. At
	// most one may be set; neither means a public client.
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecretEnv  string `yaml:"client_secret_env"`

	// Scopes requested at sign-in. Empty means DefaultScopes.
	Scopes []string `yaml:"scopes"`

	// GroupsClaim is the ID-token claim that lists the user's groups. Empty
	// means DefaultGroupsClaim ("groups").
	GroupsClaim string `yaml:"groups_claim"`

	// Audiences are the accepted `aud` values of bearer JWTs. Empty means
	// just ClientID.
	Audiences []string `yaml:"audiences"`
}

// ScopesOrDefault returns Scopes, or DefaultScopes when it is empty.
func (p *OIDCProvider) ScopesOrDefault() []string {
	if len(p.Scopes) == 0 {
		return append([]string(nil), DefaultScopes...)
	}
	return p.Scopes
}

// GroupsClaimOrDefault returns GroupsClaim, or DefaultGroupsClaim when it is empty.
func (p *OIDCProvider) GroupsClaimOrDefault() string { return or(p.GroupsClaim, DefaultGroupsClaim) }

// AudiencesOrDefault returns Audiences, or just ClientID when it is empty.
func (p *OIDCProvider) AudiencesOrDefault() []string {
	if len(p.Audiences) == 0 {
		return []string{p.ClientID}
	}
	return p.Audiences
}

// App is one published application.
type App struct {
	Name string `yaml:"name"` // required, unique; shows in logs and metrics

	// Hosts are the external host names that reach this app: exact names
	// ("hello.example.com"), IP addresses, or one leading wildcard label
	// ("*.apps.example.com" matches "a.apps.example.com" only). No ports; the
	// request's port is ignored. At least one; validation lowercases them.
	Hosts []string `yaml:"hosts"`

	// PathPrefix limits the app to request paths under it; the longest
	// matching prefix wins. Must start with "/". Empty means "/".
	PathPrefix string `yaml:"path_prefix"`

	// Backend is the internal URL the agent calls, http:// or https://.
	// Required.
	Backend string `yaml:"backend"`

	// Group is the connector group whose agents can reach Backend. Required.
	Group string `yaml:"group"`

	// Timeout is how long to wait for the response head before answering 504
	// backend-timeout. Zero means DefaultAppTimeout (85s); negative is invalid.
	Timeout time.Duration `yaml:"timeout"`

	// PreserveHost sends the user's Host header to the backend; false means
	// the backend sees its own host from Backend.
	PreserveHost bool `yaml:"preserve_host"`

	// BackendHTTP2 makes the agent use HTTP/2 for every request (h2c prior
	// knowledge for http://, ALPN for https://). False means HTTP/1.1 except
	// for gRPC requests, which always use HTTP/2.
	BackendHTTP2 bool `yaml:"backend_http2"`

	// Preauth is PreauthNone or PreauthOIDC. Empty means PreauthNone.
	Preauth string `yaml:"preauth"`

	// OIDCProvider names the provider for Preauth oidc; if set it must exist.
	// Empty is allowed when exactly one provider exists.
	OIDCProvider string `yaml:"oidc_provider"`

	// Policy says who may use the app after sign-in. An empty policy admits
	// any signed-in user. A non-empty policy without Preauth oidc is an
	// error, since it would not be enforced.
	Policy Policy `yaml:"policy"`

	// PublicPaths are path prefixes (starting with "/") that skip sign-in.
	// Without Preauth oidc every path is public anyway.
	PublicPaths []string `yaml:"public_paths"`
}

// PathPrefixOrDefault returns PathPrefix, or DefaultPathPrefix ("/") when it is empty.
func (a *App) PathPrefixOrDefault() string { return or(a.PathPrefix, DefaultPathPrefix) }

// TimeoutOrDefault returns Timeout, or DefaultAppTimeout when it is zero.
func (a *App) TimeoutOrDefault() time.Duration { return or(a.Timeout, DefaultAppTimeout) }

// PreauthOrDefault returns Preauth, or PreauthNone when it is empty.
func (a *App) PreauthOrDefault() string { return or(a.Preauth, PreauthNone) }

// BackendURL parses Backend. After validation it does not fail.
func (a *App) BackendURL() (*url.URL, error) { return url.Parse(a.Backend) }

// Policy is an allow list of users; a user matching any entry is admitted.
type Policy struct {
	Emails  []string `yaml:"emails"`  // exact addresses, compared case-insensitively
	Domains []string `yaml:"domains"` // email domains such as "example.com" (no "@")
	Groups  []string `yaml:"groups"`  // values of the provider's groups claim
}

// Empty reports whether the policy lists nobody (any signed-in user may pass).
func (p Policy) Empty() bool { return len(p.Emails)+len(p.Domains)+len(p.Groups) == 0 }

// DataDirOrDefault returns DataDir, or DefaultGatewayDataDir when it is empty.
func (g *Gateway) DataDirOrDefault() string { return or(g.DataDir, DefaultGatewayDataDir) }

// ShutdownGraceOrDefault returns ShutdownGrace, or DefaultShutdownGrace when it is zero.
func (g *Gateway) ShutdownGraceOrDefault() time.Duration {
	return or(g.ShutdownGrace, DefaultShutdownGrace)
}

// ProviderFor returns the OIDC provider app signs users in with: the one it
// names, or the only one when it names none. It returns nil when there is no
// such provider (validation rejects that for Preauth oidc).
func (g *Gateway) ProviderFor(app *App) *OIDCProvider {
	ps := g.OIDC.Providers
	if app.OIDCProvider == "" {
		if len(ps) == 1 {
			return &ps[0]
		}
		return nil
	}
	for i := range ps {
		if ps[i].Name == app.OIDCProvider {
			return &ps[i]
		}
	}
	return nil
}

// LoadGateway reads and validates a gateway configuration file.
func LoadGateway(path string) (*Gateway, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseGateway(path, data)
}

// ParseGateway parses and validates gateway configuration; name is used in
// error messages.
func ParseGateway(name string, data []byte) (*Gateway, error) {
	g := new(Gateway)
	root, err := decode(name, data, g)
	if err != nil {
		return nil, err
	}
	c := &checker{file: name, root: root}
	g.validate(c)
	if err := c.err(); err != nil {
		return nil, err
	}
	g.src = source{file: name, root: root}
	return g, nil
}

// Validate checks a Gateway built in code, as ParseGateway does for a file,
// and lowercases host patterns in place. Errors carry key paths but no file
// or line.
func (g *Gateway) Validate() error {
	c := new(checker)
	g.validate(c)
	return c.err()
}

func (g *Gateway) validate(c *checker) {
	c.checkListenAddr(path{"public", "addr"}, g.Public.Addr)
	c.checkTLSFiles(path{"public", "tls"}, g.Public.TLS)
	checkNonNegative(c, path{"public", "read_header_timeout"}, g.Public.ReadHeaderTimeout)
	checkNonNegative(c, path{"public", "idle_timeout"}, g.Public.IdleTimeout)
	checkNonNegative(c, path{"public", "send_timeout"}, g.Public.SendTimeout)
	if g.Public.MaxConnections < -1 {
		c.errorf(path{"public", "max_connections"}, "must be -1 (no limit), 0 (three quarters of the open-file limit) or a number of connections")
	}
	if g.Public.MaxStalledExchanges < -1 {
		c.errorf(path{"public", "max_stalled_exchanges"}, "must be -1 (no limit), 0 (the default, %d) or a number of exchanges", DefaultMaxStalledExchanges)
	}
	checkNonNegative(c, path{"public", "max_header_bytes"}, g.Public.MaxHeaderBytes)
	for i, s := range g.Public.TrustedProxies {
		if _, err := parseTrustedProxy(s); err != nil {
			c.errorf(path{"public", "trusted_proxies"}.index(i), "%v", err)
		}
	}

	c.checkListenAddr(path{"tunnel", "addr"}, g.Tunnel.Addr)
	c.checkTLSFiles(path{"tunnel", "tls"}, g.Tunnel.TLS)
	checkNonNegative(c, path{"tunnel", "max_streams_per_session"}, g.Tunnel.MaxStreamsPerSession)
	checkNonNegative(c, path{"tunnel", "cert_lifetime"}, g.Tunnel.CertLifetime)
	if g.Tunnel.CertLifetime != 0 && g.Tunnel.CertLifetime < time.Hour {
		c.errorf(path{"tunnel", "cert_lifetime"}, "%s is too short; use at least 1h", g.Tunnel.CertLifetime)
	}
	c.checkKeepalive(path{"tunnel", "keepalive"}, g.Tunnel.Keepalive,
		"its pings would time out as fast and end sessions that are merely busy or on a slow link")
	seenTokens := make(map[string]int)
	for i, t := range g.Tunnel.Tokens {
		p := path{"tunnel", "tokens"}.index(i)
		if strings.TrimSpace(t.Token) == "" {
			c.errorf(p.key("token"), "required (a non-empty secret)")
		} else if first, dup := seenTokens[t.Token]; dup {
			c.errorf(p.key("token"), "same token as tunnel.tokens[%d]", first)
		} else {
			seenTokens[t.Token] = i
		}
		if strings.TrimSpace(t.Group) == "" {
			c.errorf(p.key("group"), "required (the connector group agents with this token join)")
		} else {
			c.checkGroup(p.key("group"), t.Group)
		}
	}

	c.checkListenAddr(path{"admin", "addr"}, g.Admin.Addr)
	g.checkListenersApart(c)
	checkNonNegative(c, path{"shutdown_grace"}, g.ShutdownGrace)
	checkNonNegative(c, path{"shutdown_delay"}, g.ShutdownDelay)
	g.Store.validate(c)

	g.validateProviders(c)
	g.validateApps(c)
}

// checkKeepalive reports a keepalive (gateway or agent) outside
// MinKeepalive to MaxKeepalive; zero means the default. tooShort says why
// a shorter one is refused.
func (c *checker) checkKeepalive(p path, d time.Duration, tooShort string) {
	switch {
	case d < 0:
		c.errorf(p, "must not be negative")
	case d != 0 && d < MinKeepalive:
		c.errorf(p, "%s is too short: %s; use at least %s, which notices a dead path in about 10 to 15 s", d, tooShort, MinKeepalive)
	case d > MaxKeepalive:
		c.errorf(p, "%s is too long: a dead path would go unnoticed for longer than that, and NAT gateways and "+
			"load balancers drop TCP flows idle for a few minutes; use at most %s (0 means %s)", d, MaxKeepalive, DefaultKeepalive)
	}
}

// checkListenersApart reports two listeners (public, tunnel, admin) on
// one address, defaults included: the second would fail to bind. An empty
// host, 0.0.0.0 and :: listen on every address, so they overlap any host
// on the same port; port 0 picks a free port and overlaps nothing.
func (g *Gateway) checkListenersApart(c *checker) {
	type listener struct {
		key  path
		set  string // as written; empty means the default
		addr string // what is bound
	}
	ls := []listener{
		{path{"public", "addr"}, g.Public.Addr, g.Public.AddrOrDefault()},
		{path{"tunnel", "addr"}, g.Tunnel.Addr, g.Tunnel.AddrOrDefault()},
		{path{"admin", "addr"}, g.Admin.Addr, g.Admin.AddrOrDefault()},
	}
	describe := func(l listener) string {
		if l.set == "" {
			return fmt.Sprintf("%s (%s by default)", l.key, l.addr)
		}
		return fmt.Sprintf("%s (%s)", l.key, l.addr)
	}
	for i := range ls {
		for j := i + 1; j < len(ls); j++ {
			a, b := ls[i], ls[j]
			if !listenOverlap(a.addr, b.addr) {
				continue
			}
			at, other := b, a // reported at the later key, unless only the earlier one is written
			if b.set == "" && a.set != "" {
				at, other = a, b
			}
			c.errorf(at.key, "%s listens on the same port as %s; give each listener its own port", describe(at), describe(other))
		}
	}
}

// listenOverlap reports whether listeners on a and b (host:port, checked
// before) would both claim one address and port.
func listenOverlap(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	if anyHost(ha) || anyHost(hb) {
		return true
	}
	ia, errA := netip.ParseAddr(ha)
	ib, errB := netip.ParseAddr(hb)
	if errA == nil && errB == nil {
		return ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(ha, hb)
}

// anyHost reports whether a listen host means every local address.
func anyHost(h string) bool {
	if h == "" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsUnspecified()
}

func (s *Store) validate(c *checker) {
	set := 0
	for _, v := range []string{s.Postgres, s.PostgresFile, s.PostgresEnv} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		c.errorf(path{"store"}, "set one of postgres, postgres_file and postgres_env, not %d", set)
	}
	if d := s.Postgres; d != "" && !looksLikeDSN(d) {
		c.errorf(path{"store", "postgres"}, "%q is not a PostgreSQL DSN; write postgres://USER@HOST:5432/DATABASE "+
			"or host=HOST dbname=DATABASE user=USER", redactDSN(d))
	}
	if e := s.PostgresEnv; e != "" && !validEnvName(e) {
		c.errorf(path{"store", "postgres_env"}, "%q is not an environment variable name (letters, digits and _)", e)
	}
}

// checkGroup checks a connector group name by the rule the admin API
// applies when it creates enrollment tokens, so that agents can join every
// group the config names.
func (c *checker) checkGroup(p path, group string) {
	if !groupname.Valid(group) {
		c.errorf(p, "%q is not a connector group name: want %s", group, groupname.Rule)
	}
}

// dsnPassword is a password=VALUE pair of a key=value DSN, the value
// possibly quoted; compiled on first use.
var dsnPassword = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)
})

// redactDSN hides the passwords of a DSN for a message, in its userinfo
// (also when it does not parse as a URL) and in password=VALUE pairs.
func redactDSN(s string) string {
	return dsnPassword().ReplaceAllString(credurl.Redact(s), "${1}xxxxx")
}

// looksLikeDSN tells a PostgreSQL DSN (URL or key=value pairs) from
// something else written there; the database driver parses it at start.
func looksLikeDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") ||
		strings.Contains(s, "=") && !strings.Contains(s, "://")
}

func validEnvName(s string) bool {
	for i, r := range s {
		if r != '_' && !(r >= 'A' && r <= 'Z') && !(r >= 'a' && r <= 'z') && !(i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

func (g *Gateway) validateProviders(c *checker) {
	checkNonNegative(c, path{"oidc", "session_lifetime"}, g.OIDC.SessionLifetime)
	if d := g.OIDC.CookieDomain; d != "" && (strings.Contains(d, "*") || !validHostname(strings.TrimPrefix(d, "."))) {
		c.errorf(path{"oidc", "cookie_domain"}, "%q must be a domain such as example.com", d)
	}
	seen := make(map[string]int)
	for i := range g.OIDC.Providers {
		pr := &g.OIDC.Providers[i]
		p := path{"oidc", "providers"}.index(i)
		if pr.Name == "" {
			c.errorf(p.key("name"), "required")
		} else if first, dup := seen[pr.Name]; dup {
			c.errorf(p.key("name"), "%q is already the name of oidc.providers[%d]", pr.Name, first)
		} else {
			seen[pr.Name] = i
		}
		c.checkHTTPURL(p.key("issuer"), pr.Issuer)
		if pr.ClientID == "" {
			c.errorf(p.key("client_id"), "required")
		}
		if pr.ClientSecretFile != "" && pr.ClientSecretEnv != "" {
			c.errorf(p.key("client_secret_env"), "set client_secret_file or client_secret_env, not both")
		}
		if len(pr.Scopes) > 0 && !slices.Contains(pr.Scopes, "openid") {
			c.errorf(p.key("scopes"), "must include openid: without it the provider sends no ID token and every sign-in fails")
		}
	}
}

// route identifies what an app claims, for duplicate detection: a
// normalised host pattern and a path prefix as routePrefix makes it.
type route struct{ host, prefix string }

// routePrefix is p as the gateway's router compares path prefixes:
// without trailing slashes, "/" for the root (gateway.normalisePrefix).
func routePrefix(p string) string {
	if p = strings.TrimRight(p, "/"); p == "" {
		return "/"
	}
	return p
}

func (g *Gateway) validateApps(c *checker) {
	names := make(map[string]int)
	routes := make(map[route]int)
	for i := range g.Apps {
		app := &g.Apps[i]
		p := path{"apps"}.index(i)
		if app.Name == "" {
			c.errorf(p.key("name"), "required")
		} else if first, dup := names[app.Name]; dup {
			c.errorf(p.key("name"), "%q is already the name of apps[%d]", app.Name, first)
		} else {
			names[app.Name] = i
		}

		prefix := app.PathPrefixOrDefault()
		if !strings.HasPrefix(prefix, "/") {
			c.errorf(p.key("path_prefix"), "must start with \"/\", got %q", app.PathPrefix)
		} else if strings.ContainsAny(prefix, "?#") {
			c.errorf(p.key("path_prefix"), "must be a path without ? or #, got %q", app.PathPrefix)
		} else if strings.Contains(prefix, "*") {
			c.errorf(p.key("path_prefix"), "%q: a path_prefix is a prefix, not a pattern; write %q for everything under it",
				prefix, publicPrefixOf(prefix))
		} else if strings.Contains(prefix, ";") || strings.Contains(strings.ToUpper(prefix), "%2F") {
			// The gateway refuses a request whose path, read with %2F as
			// a slash or without ;parameters, belongs to another app (or
			// none): every request under such a prefix.
			c.errorf(p.key("path_prefix"), "%q: an encoded slash (%%2F) or a ; in a path_prefix makes the app unreachable "+
				"(the gateway refuses such request paths, see Path normalisation in the README); write the path with /", prefix)
		} else if !isNormalPath(prefix) {
			c.errorf(p.key("path_prefix"), "%q must be written as requests are compared: no //, no . or .. segments, "+
				"no backslash, no control character, no %%-escape (write the character itself)", prefix)
		}
		// The router ignores trailing slashes ("/api/" is "/api"), so two
		// apps are compared the same way: it would refuse them at start.
		same := routePrefix(prefix)

		if len(app.Hosts) == 0 {
			c.errorf(p.key("hosts"), "at least one host is required")
		}
		for j, h := range app.Hosts {
			hp := p.key("hosts").index(j)
			norm, err := normalizeHostPattern(h)
			if err != nil {
				c.errorf(hp, "%v", err)
				continue
			}
			app.Hosts[j] = norm
			r := route{norm, same}
			if first, dup := routes[r]; dup {
				switch other := g.Apps[first].PathPrefixOrDefault(); {
				case first == i:
					c.errorf(hp, "%q is listed twice", norm)
				case other != prefix:
					c.errorf(hp, "%q with path_prefix %q is already served by apps[%d] with path_prefix %q: "+
						"a trailing slash does not make another prefix; give one of the apps another host or prefix",
						norm, prefix, first, other)
				default:
					c.errorf(hp, "%q with path_prefix %q is already served by apps[%d]", norm, prefix, first)
				}
				continue
			}
			routes[r] = i
		}

		c.checkHTTPURL(p.key("backend"), app.Backend)
		if strings.TrimSpace(app.Group) == "" {
			c.errorf(p.key("group"), "required (the connector group that reaches the backend)")
		} else {
			c.checkGroup(p.key("group"), app.Group)
		}
		checkNonNegative(c, p.key("timeout"), app.Timeout)
		g.validatePreauth(c, p, app)
	}
}

func (g *Gateway) validatePreauth(c *checker, p path, app *App) {
	if app.OIDCProvider != "" && g.ProviderFor(app) == nil {
		c.errorf(p.key("oidc_provider"), "no provider named %q under oidc.providers", app.OIDCProvider)
	}
	switch app.PreauthOrDefault() {
	case PreauthOIDC:
		switch {
		case app.OIDCProvider != "":
			// Checked above.
		case len(g.OIDC.Providers) == 0:
			c.errorf(p.key("preauth"), "oidc needs a provider under oidc.providers")
		case len(g.OIDC.Providers) > 1:
			c.errorf(p.key("oidc_provider"), "required: there are %d providers under oidc.providers", len(g.OIDC.Providers))
		}
	case PreauthNone:
		// A policy without sign-in would silently leave the app open.
		if !app.Policy.Empty() {
			c.errorf(p.key("policy"), "only enforced with preauth: oidc; as written the app is open to everyone")
		}
	default:
		c.errorf(p.key("preauth"), "must be none or oidc, got %q", app.Preauth)
	}
	for j, e := range app.Policy.Emails {
		if at := strings.LastIndexByte(e, '@'); at <= 0 || at == len(e)-1 {
			c.errorf(p.key("policy").key("emails").index(j), "%q is not an email address", e)
		}
	}
	for j, d := range app.Policy.Domains {
		if strings.Contains(d, "@") || !validHostname(d) {
			c.errorf(p.key("policy").key("domains").index(j), "%q must be a domain such as example.com (no @)", d)
		}
	}
	for j, gr := range app.Policy.Groups {
		if gr == "" {
			c.errorf(p.key("policy").key("groups").index(j), "must not be empty")
		}
	}
	for j, pp := range app.PublicPaths {
		pp = strings.ReplaceAll(pp, "%2f", "%2F") // the gateway compares the upper-case form
		app.PublicPaths[j] = pp
		key := p.key("public_paths").index(j)
		switch {
		case !strings.HasPrefix(pp, "/"):
			c.errorf(key, "must start with \"/\", got %q", pp)
		case strings.ContainsAny(pp, "?#"):
			c.errorf(key, "must be a path without ? or #, got %q (the query is never part of the path)", pp)
		case strings.Contains(pp, "*"):
			c.errorf(key, "%q: public_paths are path prefixes, not patterns; write %q for everything under it", pp, publicPrefixOf(pp))
		case !isNormalPath(pp):
			c.errorf(key, "%q must be written as requests are compared: no //, no . or .. segments (also "+
				"behind %%2F or ;), no backslash, no control character, no %%-escape other than %%2F", pp)
		}
	}
}

// publicPrefixOf is pp without the pattern part a user added ("/static/*"
// is "/static"), for the hint of a public path with "*".
func publicPrefixOf(pp string) string {
	before, _, _ := strings.Cut(pp, "*")
	if before = strings.TrimRight(before, "/"); before == "" {
		return "/"
	}
	return before
}

// isNormalPath reports whether p (starting with "/") is already in the form
// the gateway's path normalisation gives: no empty, "." or ".." segments
// (trailing slashes are fine), no backslash, no control character, no
// %-escape but %2F, and none of the segments the gateway refuses because
// some servers read them as dot segments (".." behind %2F or before ";":
// "..%2Fx", "..;x").
func isNormalPath(p string) bool {
	if strings.Contains(p, "\\") || strings.Contains(strings.ReplaceAll(p, "%2F", ""), "%") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return false
		}
	}
	rest := strings.TrimRight(p[1:], "/") // trailing slashes are ignored, as by the router
	if rest == "" {
		return true
	}
	for sg := range strings.SplitSeq(rest, "/") {
		if sg == "" {
			return false
		}
		for part := range strings.SplitSeq(sg, "%2F") {
			if before, _, _ := strings.Cut(part, ";"); before == "." || before == ".." {
				return false
			}
		}
	}
	return true
}

// ChangedBesidesApps lists the settings other than apps whose values
// differ between g and next, as dotted keys ("public.addr",
// "tunnel.tokens", "shutdown_grace"): what a reload of apps leaves for the
// next restart. Structs are compared field by field, lists and maps whole.
func (g *Gateway) ChangedBesidesApps(next *Gateway) []string {
	var out []string
	var walk func(prefix string, a, b reflect.Value)
	walk = func(prefix string, a, b reflect.Value) {
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" || prefix == "" && name == "apps" {
				continue
			}
			key := prefix + name
			fa, fb := a.Field(i), b.Field(i)
			if fa.Kind() == reflect.Struct {
				walk(key+".", fa, fb)
				continue
			}
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
				out = append(out, key)
			}
		}
	}
	walk("", reflect.ValueOf(g).Elem(), reflect.ValueOf(next).Elem())
	return out
}
