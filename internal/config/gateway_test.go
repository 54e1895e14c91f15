package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/shortskip"
)

func TestLoadGatewayDesignExample(t *testing.T) {
	g, err := LoadGateway("testdata/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Gateway{
		Public: Public{Addr: ":8080"},
		Tunnel: Tunnel{
			Addr:   ":8443",
			Tokens: []Token{{Token: "change-me", Group: "default"}},
		},
		Admin:         Admin{Addr: "127.0.0.1:9090"},
		DataDir:       "./data/gateway",
		ShutdownGrace: 30 * time.Second,
		OIDC: OIDC{Providers: []OIDCProvider{{
			Name:             "corp",
			Issuer:           "https://login.example.com/",
			ClientID:         "sallyport",
			ClientSecretFile: "/etc/sallyport/oidc-secret",
			Scopes:           []string{"openid", "email", "profile"},
			GroupsClaim:      "groups",
			Audiences:        []string{},
		}}},
		Apps: []App{{
			Name:         "hello",
			Hosts:        []string{"hello.example.com", "*.apps.example.com"},
			PathPrefix:   "/",
			Backend:      "http://127.0.0.1:9000",
			Group:        "default",
			Timeout:      85 * time.Second,
			Preauth:      "none",
			OIDCProvider: "corp",
			Policy:       Policy{Emails: []string{}, Domains: []string{}, Groups: []string{}},
			PublicPaths:  []string{},
		}},
	}
	g.src = source{} // where it came from: see TestFileError
	if !reflect.DeepEqual(g, want) {
		t.Errorf("got\n%+v\nwant\n%+v", g, want)
	}
}

func TestLoadGatewayFull(t *testing.T) {
	g, err := LoadGateway("testdata/gateway-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Gateway{
		Public: Public{
			Addr:                "127.0.0.1:80",
			TLS:                 TLSFiles{CertFile: "pub.crt", KeyFile: "pub.key"},
			ReadHeaderTimeout:   5 * time.Second,
			IdleTimeout:         time.Minute,
			SendTimeout:         45 * time.Second,
			MaxConnections:      5000,
			MaxStalledExchanges: 200,
			MaxHeaderBytes:      32768,
			TrustedProxies:      []string{"10.0.0.0/8", "2001:db8::7"},
		},
		Tunnel: Tunnel{
			Addr:                 "0.0.0.0:9443",
			TLS:                  TLSFiles{CertFile: "tun.crt", KeyFile: "tun.key"},
			Tokens:               []Token{{Token: "t1", Group: "g1"}, {Token: "t2", Group: "g2"}},
			MaxStreamsPerSession: 500,
			Keepalive:            5 * time.Second,
		},
		Admin:         Admin{Addr: "127.0.0.1:9191", TokenFile: "/run/admin-token"},
		DataDir:       "/var/lib/sallyport",
		Store:         Store{PostgresEnv: "SALLYPORT_STORE_DSN"},
		ShutdownGrace: 90 * time.Second,
		OIDC: OIDC{Providers: []OIDCProvider{
			{
				Name:            "corp",
				Issuer:          "https://login.example.com/",
				ClientID:        "sallyport",
				ClientSecretEnv: "OIDC_SECRET",
				Scopes:          []string{"openid", "email"},
				GroupsClaim:     "roles",
				Audiences:       []string{"api://sallyport"},
			},
			{Name: "other", Issuer: "https://other.example.com/", ClientID: "sp"},
		}},
		Apps: []App{
			{
				Name:         "wiki",
				Hosts:        []string{"wiki.example.com", "*.wiki.example.com"}, // lowercased
				PathPrefix:   "/docs",
				Backend:      "https://wiki.corp:8443/base",
				Group:        "g1",
				Timeout:      2 * time.Minute,
				PreserveHost: true,
				BackendHTTP2: true,
				Preauth:      "oidc",
				OIDCProvider: "other",
				Policy: Policy{
					Emails:  []string{"alice@example.com"},
					Domains: []string{"example.com"},
					Groups:  []string{"wiki-users"},
				},
				PublicPaths: []string{"/docs/public", "/favicon.ico"},
			},
			{Name: "grpc", Hosts: []string{"10.1.2.3"}, Backend: "http://127.0.0.1:50051", Group: "g2"},
		},
	}
	g.src = source{} // where it came from: see TestFileError
	if !reflect.DeepEqual(g, want) {
		t.Errorf("got\n%+v\nwant\n%+v", g, want)
	}

	// Set values win over defaults.
	if got := g.Public.AddrOrDefault(); got != "127.0.0.1:80" {
		t.Errorf("Public.AddrOrDefault = %q", got)
	}
	if got := g.Public.ReadHeaderTimeoutOrDefault(); got != 5*time.Second {
		t.Errorf("ReadHeaderTimeoutOrDefault = %v", got)
	}
	if got := g.Public.IdleTimeoutOrDefault(); got != time.Minute {
		t.Errorf("IdleTimeoutOrDefault = %v", got)
	}
	if got := g.Public.SendTimeoutOrDefault(); got != 45*time.Second {
		t.Errorf("SendTimeoutOrDefault = %v", got)
	}
	if got := g.Public.MaxHeaderBytesOrDefault(); got != 32768 {
		t.Errorf("MaxHeaderBytesOrDefault = %v", got)
	}
	if got := g.Tunnel.AddrOrDefault(); got != "0.0.0.0:9443" {
		t.Errorf("Tunnel.AddrOrDefault = %q", got)
	}
	if got := g.Tunnel.MaxStreamsPerSessionOrDefault(); got != 500 {
		t.Errorf("MaxStreamsPerSessionOrDefault = %v", got)
	}
	if got := g.Tunnel.KeepaliveOrDefault(); got != 5*time.Second {
		t.Errorf("Tunnel.KeepaliveOrDefault = %v", got)
	}
	if got := g.Admin.AddrOrDefault(); got != "127.0.0.1:9191" {
		t.Errorf("Admin.AddrOrDefault = %q", got)
	}
	if got := g.DataDirOrDefault(); got != "/var/lib/sallyport" {
		t.Errorf("DataDirOrDefault = %q", got)
	}
	if got := g.ShutdownGraceOrDefault(); got != 90*time.Second {
		t.Errorf("ShutdownGraceOrDefault = %v", got)
	}
	wiki := &g.Apps[0]
	if wiki.PathPrefixOrDefault() != "/docs" || wiki.TimeoutOrDefault() != 2*time.Minute || wiki.PreauthOrDefault() != PreauthOIDC {
		t.Errorf("wiki accessors: %q %v %q", wiki.PathPrefixOrDefault(), wiki.TimeoutOrDefault(), wiki.PreauthOrDefault())
	}
	if p := g.ProviderFor(wiki); p == nil || p.Name != "other" {
		t.Errorf("ProviderFor(wiki) = %+v, want other", p)
	}
	corp := &g.OIDC.Providers[0]
	if got := corp.ScopesOrDefault(); !reflect.DeepEqual(got, []string{"openid", "email"}) {
		t.Errorf("ScopesOrDefault = %v", got)
	}
	if got := corp.GroupsClaimOrDefault(); got != "roles" {
		t.Errorf("GroupsClaimOrDefault = %q", got)
	}
	if got := corp.AudiencesOrDefault(); !reflect.DeepEqual(got, []string{"api://sallyport"}) {
		t.Errorf("AudiencesOrDefault = %v", got)
	}
	if !g.Public.TLS.Enabled() || !g.Tunnel.TLS.Enabled() {
		t.Error("TLS.Enabled = false, want true")
	}
	u, err := wiki.BackendURL()
	if err != nil || u.Host != "wiki.corp:8443" || u.Path != "/base" {
		t.Errorf("BackendURL = %v, %v", u, err)
	}
}

// TestGatewayZeroDefaults checks what a zero struct (or an empty mapping in
// the file) means.
func TestGatewayZeroDefaults(t *testing.T) {
	parsed, err := ParseGateway("gateway.yaml", []byte("{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]*Gateway{"zero": {}, "parsed": parsed} {
		t.Run(name, func(t *testing.T) {
			checks := []struct {
				name      string
				got, want any
			}{
				{"Public.AddrOrDefault", g.Public.AddrOrDefault(), ":8080"},
				{"Public.ReadHeaderTimeoutOrDefault", g.Public.ReadHeaderTimeoutOrDefault(), 10 * time.Second},
				{"Public.IdleTimeoutOrDefault", g.Public.IdleTimeoutOrDefault(), 120 * time.Second},
				{"Public.SendTimeoutOrDefault", g.Public.SendTimeoutOrDefault(), 5 * time.Minute},
				{"Public.MaxHeaderBytesOrDefault", g.Public.MaxHeaderBytesOrDefault(), 64 << 10},
				{"Public.TLS.Enabled", g.Public.TLS.Enabled(), false},
				{"Tunnel.AddrOrDefault", g.Tunnel.AddrOrDefault(), ":8443"},
				{"Tunnel.MaxStreamsPerSessionOrDefault", g.Tunnel.MaxStreamsPerSessionOrDefault(), 10000},
				{"Tunnel.KeepaliveOrDefault", g.Tunnel.KeepaliveOrDefault(), 15 * time.Second},
				{"Admin.AddrOrDefault", g.Admin.AddrOrDefault(), "127.0.0.1:9090"},
				{"DataDirOrDefault", g.DataDirOrDefault(), "./data/gateway"},
				{"ShutdownGraceOrDefault", g.ShutdownGraceOrDefault(), 30 * time.Second},
			}
			for _, c := range checks {
				if !reflect.DeepEqual(c.got, c.want) {
					t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
				}
			}
		})
	}

	var app App
	if got := app.PathPrefixOrDefault(); got != "/" {
		t.Errorf("PathPrefixOrDefault = %q", got)
	}
	if got := app.TimeoutOrDefault(); got != 85*time.Second {
		t.Errorf("TimeoutOrDefault = %v", got)
	}
	if got := app.PreauthOrDefault(); got != PreauthNone {
		t.Errorf("PreauthOrDefault = %q", got)
	}
	p := OIDCProvider{ClientID: "cid"}
	if got := p.ScopesOrDefault(); !reflect.DeepEqual(got, []string{"openid", "email", "profile"}) {
		t.Errorf("ScopesOrDefault = %v", got)
	}
	p.ScopesOrDefault()[0] = "mutated"
	if DefaultScopes[0] != "openid" {
		t.Error("ScopesOrDefault returned DefaultScopes itself; callers could change it")
	}
	if got := p.GroupsClaimOrDefault(); got != "groups" {
		t.Errorf("GroupsClaimOrDefault = %q", got)
	}
	if got := p.AudiencesOrDefault(); !reflect.DeepEqual(got, []string{"cid"}) {
		t.Errorf("AudiencesOrDefault = %v", got)
	}
}

func TestProviderFor(t *testing.T) {
	one := &Gateway{OIDC: OIDC{Providers: []OIDCProvider{{Name: "a"}}}}
	two := &Gateway{OIDC: OIDC{Providers: []OIDCProvider{{Name: "a"}, {Name: "b"}}}}
	tests := []struct {
		g    *Gateway
		app  App
		want string // "" → nil
	}{
		{one, App{}, "a"},
		{one, App{OIDCProvider: "a"}, "a"},
		{one, App{OIDCProvider: "x"}, ""},
		{two, App{}, ""},
		{two, App{OIDCProvider: "b"}, "b"},
		{&Gateway{}, App{}, ""},
	}
	for i, tt := range tests {
		got := tt.g.ProviderFor(&tt.app)
		switch {
		case tt.want == "" && got != nil:
			t.Errorf("%d: got %q, want nil", i, got.Name)
		case tt.want != "" && (got == nil || got.Name != tt.want):
			t.Errorf("%d: got %v, want %q", i, got, tt.want)
		}
	}
}

// minimalApp is a valid app to build error cases from.
const minimalApp = `
apps:
  - name: a
    hosts: [a.example.com]
    backend: http://127.0.0.1:9000
    group: g
`

func TestParseGatewayErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error
	}{
		{"empty", "", []string{"gateway.yaml: file is empty"}},
		{"comments only", "# nothing\n", []string{"gateway.yaml: file is empty"}},
		{"null", "~\n", []string{"gateway.yaml: file is empty"}},
		{"not a mapping", "- a\n- b\n", []string{"gateway.yaml:1: the top level must be a mapping"}},
		{"syntax", "public:\n  addr: [\n", []string{"gateway.yaml:2: did not find expected node content"}},
		{"two documents", "data_dir: a\n---\ndata_dir: b\n", []string{"gateway.yaml:2: a second YAML document"}},
		{"unknown top-level key", "data_dir: x\nbogus: 1\n", []string{`gateway.yaml:2: unknown key "bogus"`}},
		{"unknown nested key", "public:\n  addr: \":80\"\n  adr: x\n", []string{`gateway.yaml:3: unknown key "adr" in public (did you mean "addr"?)`}},
		{"unknown key in flow mapping", "tunnel:\n  tls: {cert_file: a, key_file: b, ca_file: c}\n", []string{`gateway.yaml:2: unknown key "ca_file" in tunnel.tls`}},
		{"unknown key in list item", minimalApp + "    bakend: x\n", []string{`gateway.yaml:7: unknown key "bakend" in apps[0] (did you mean "backend"?)`}},
		{"unknown key no hint", minimalApp + "    zzzzzz: x\n", []string{`gateway.yaml:7: unknown key "zzzzzz" in apps[0]`}},
		{"repeated key", "data_dir: a\ndata_dir: b\n", []string{`gateway.yaml:2: key "data_dir" is repeated (first on line 1)`}},
		{"duration not a string", "shutdown_grace: 30\n", []string{`gateway.yaml:1: shutdown_grace: want a duration such as "30s"`, `got "30"`}},
		{"duration garbage", minimalApp + "    timeout: soon\n", []string{`gateway.yaml:7: apps[0].timeout: want a duration`, `got "soon"`}},
		{"int garbage", "tunnel:\n  max_streams_per_session: many\n", []string{`gateway.yaml:2: tunnel.max_streams_per_session: want a whole number, got "many"`}},
		{"bool garbage", minimalApp + "    preserve_host: maybe\n", []string{`gateway.yaml:7: apps[0].preserve_host: want true or false, got "maybe"`}},
		{"list expected", minimalApp + "    public_paths: /x\n", []string{`gateway.yaml:7: apps[0].public_paths: want a list, got "/x"`}},
		{"mapping for string", "data_dir: {a: b}\n", []string{`gateway.yaml:1: data_dir: want a string, got a mapping`}},
		{"mapping expected", "public: 8080\n", []string{`gateway.yaml:1: public: want a mapping`}},
		{"several decode errors", "bogus: 1\nshutdown_grace: x\n", []string{`gateway.yaml:1: unknown key "bogus"`, `gateway.yaml:2: shutdown_grace: want a duration`}},

		{"public addr", "public: {addr: \"8080\"}\n", []string{`gateway.yaml:1: public.addr: must be host:port or :port, got "8080"`}},
		{"public addr port", "public: {addr: \":http\"}\n", []string{`public.addr: port "http" must be a number`}},
		{"tunnel addr", "tunnel:\n  addr: \"x:99999\"\n", []string{`gateway.yaml:2: tunnel.addr: port "99999"`}},
		{"admin addr", "admin:\n  addr: localhost\n", []string{`gateway.yaml:2: admin.addr: must be host:port`}},
		{"public tls half", "public:\n  tls: {cert_file: a.pem}\n", []string{`gateway.yaml:2: public.tls: cert_file and key_file must both be set or both be empty`}},
		{"trusted proxies", "public:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - lb.example.com\n    - 0.0.0.0/0\n    - \"::/0\"\n    - 10.1.2.3/33\n    - \"fe80::1%eth0\"\n", []string{
			`gateway.yaml:4: public.trusted_proxies[1]: "lb.example.com": not an IP address or CIDR prefix such as 10.0.0.0/8`,
			`gateway.yaml:5: public.trusted_proxies[2]: "0.0.0.0/0" trusts every address`,
			`gateway.yaml:6: public.trusted_proxies[3]: "::/0" trusts every address`,
			`gateway.yaml:7: public.trusted_proxies[4]: "10.1.2.3/33": not an IP address`,
			`gateway.yaml:8: public.trusted_proxies[5]: "fe80::1%eth0": not an IP address`,
		}},
		{"tunnel tls half", "tunnel:\n  tls:\n    key_file: k.pem\n", []string{`gateway.yaml:3: tunnel.tls: cert_file and key_file must both be set`}},
		{"negative durations", "shutdown_grace: -1s\npublic:\n  read_header_timeout: -1s\n  idle_timeout: -2s\n  max_header_bytes: -1\n  send_timeout: -3s\n", []string{
			`gateway.yaml:1: shutdown_grace: must not be negative`,
			`gateway.yaml:3: public.read_header_timeout: must not be negative`,
			`gateway.yaml:4: public.idle_timeout: must not be negative`,
			`gateway.yaml:5: public.max_header_bytes: must not be negative`,
			`gateway.yaml:6: public.send_timeout: must not be negative`,
		}},
		{"keepalive too short", "tunnel:\n  addr: \":8443\"\n  keepalive: 2s\n", []string{`gateway.yaml:3: tunnel.keepalive: 2s is too short: its pings would time out as fast`, `use at least 5s`}},
		{"keepalive too long", "tunnel: {keepalive: 10m}\n", []string{`gateway.yaml:1: tunnel.keepalive: 10m0s is too long`, `use at most 2m0s (0 means 15s)`}},
		{"keepalive negative", "tunnel:\n  keepalive: -15s\n", []string{`gateway.yaml:2: tunnel.keepalive: must not be negative`}},
		{"keepalive not a duration", "tunnel:\n  keepalive: 15\n", []string{`gateway.yaml:2: tunnel.keepalive: want a duration such as "30s"`}},
		{"negative streams", "tunnel: {max_streams_per_session: -5}\n", []string{`tunnel.max_streams_per_session: must not be negative`}},
		{"max connections", "public: {max_connections: -2}\n", []string{`public.max_connections: must be -1 (no limit), 0 (three quarters of the open-file limit) or a number of connections`}},
		{"max stalled exchanges", "public: {max_stalled_exchanges: -2}\n", []string{`gateway.yaml:1: public.max_stalled_exchanges: must be -1 (no limit), 0 (the default, 512) or a number of exchanges`}},
		{"token empty", "tunnel:\n  tokens:\n    - {token: x, group: g}\n    - {token: \"\", group: g}\n", []string{`gateway.yaml:4: tunnel.tokens[1].token: required`}},
		{"token missing", "tunnel:\n  tokens:\n    - group: g\n", []string{`gateway.yaml:3: tunnel.tokens[0].token: required`}},
		{"token group missing", "tunnel:\n  tokens:\n    - token: x\n", []string{`gateway.yaml:3: tunnel.tokens[0].group: required`}},
		{"token duplicate", "tunnel:\n  tokens:\n    - {token: x, group: a}\n    - {token: x, group: b}\n", []string{`gateway.yaml:4: tunnel.tokens[1].token: same token as tunnel.tokens[0]`}},

		{"provider fields", "oidc:\n  providers:\n    - name: \"\"\n      issuer: login.example.com\n", []string{
			`gateway.yaml:3: oidc.providers[0].name: required`,
			`gateway.yaml:4: oidc.providers[0].issuer: must be an http:// or https:// URL`,
			`gateway.yaml:3: oidc.providers[0].client_id: required`,
		}},
		{"provider duplicate", "oidc:\n  providers:\n    - {name: a, issuer: \"https://a/\", client_id: c}\n    - {name: a, issuer: \"https://a/\", client_id: c}\n", []string{`gateway.yaml:4: oidc.providers[1].name: "a" is already the name of oidc.providers[0]`}},
		{"store two dsns", "store:\n  postgres: postgres://gw@db/gw\n  postgres_env: DSN\n", []string{`gateway.yaml:2: store: set one of postgres, postgres_file and postgres_env, not 2`}},
		{"store not a dsn", "store:\n  postgres: db.internal:5432\n", []string{`gateway.yaml:2: store.postgres: "db.internal:5432" is not a PostgreSQL DSN; write postgres://`}},
		{"store mysql url", "store: {postgres: \"mysql://gw@db/gw\"}\n", []string{`store.postgres: "mysql://gw@db/gw" is not a PostgreSQL DSN`}},
		{"store env name", "store:\n  postgres_env: $DSN\n", []string{`gateway.yaml:2: store.postgres_env: "$DSN" is not an environment variable name`}},
		{"store unknown key", "store:\n  dsn: postgres://db/gw\n", []string{`gateway.yaml:2: unknown key "dsn"`}},
		{"provider two secrets", "oidc:\n  providers:\n    - name: a\n      issuer: https://a/\n      client_id: c\n      client_secret_file: f\n      client_secret_env: E\n", []string{`gateway.yaml:7: oidc.providers[0].client_secret_env: set client_secret_file or client_secret_env, not both`}},

		{"app empty", "apps:\n  - {}\n", []string{
			`gateway.yaml:2: apps[0].name: required`,
			`gateway.yaml:2: apps[0].hosts: at least one host is required`,
			`gateway.yaml:2: apps[0].backend: required`,
			`gateway.yaml:2: apps[0].group: required`,
		}},
		{"app null item", "apps:\n  -\n  - name: x\n", []string{`gateway.yaml:2: apps[0]: empty list item`}},
		{"null string item", "tunnel: {tokens: []}\napps:\n  - name: x\n    hosts: [a.b, ~, c.d]\n", []string{`gateway.yaml:4: apps[0].hosts[1]: empty list item`}},
		{"app duplicate name", minimalApp + "  - name: a\n    hosts: [b.example.com]\n    backend: http://b\n    group: g\n", []string{`gateway.yaml:7: apps[1].name: "a" is already the name of apps[0]`}},
		{"app backend scheme", minimalApp + "  - name: b\n    hosts: [b.example.com]\n    group: g\n    backend: ftp://b\n", []string{`gateway.yaml:10: apps[1].backend: must be an http:// or https:// URL`}},
		{"app backend no host", "apps:\n  - {name: a, hosts: [a.b], group: g, backend: \"http:///x\"}\n", []string{`apps[0].backend: must be an http:// or https:// URL`}},
		{"app backend relative", "apps:\n  - {name: a, hosts: [a.b], group: g, backend: \"/x\"}\n", []string{`apps[0].backend: must be an http:// or https:// URL`}},
		{"app backend port out of range", "apps:\n  - {name: a, hosts: [a.b], group: g, backend: \"http://10.0.0.1:70000\"}\n", []string{`gateway.yaml:2: apps[0].backend: port "70000" must be a number from 1 to 65535`}},
		{"app backend port zero", "apps:\n  - {name: a, hosts: [a.b], group: g, backend: \"http://10.0.0.1:0/\"}\n", []string{`gateway.yaml:2: apps[0].backend: port "0" must be a number from 1 to 65535`}},
		{"app backend port only", "apps:\n  - {name: a, hosts: [a.b], group: g, backend: \"http://:9000\"}\n", []string{`gateway.yaml:2: apps[0].backend: host missing in "http://:9000"`}},
		{"issuer port out of range", "oidc:\n  providers:\n    - {name: a, issuer: \"https://login:99999/\", client_id: c, client_secret_env: E}\n", []string{`oidc.providers[0].issuer: port "99999" must be a number from 1 to 65535`}},
		{"app backend userinfo", "apps:\n  - {name: a, hosts: [a.b], group: g, backend: \"http://u:p@x\"}\n", []string{`apps[0].backend: must not contain a user name or password`}},
		{"app backend fragment", "apps:\n  - {name: a, hosts: [a.b], group: g, backend: \"http://x/#f\"}\n", []string{`apps[0].backend: must not contain a #fragment`}},
		{"app host with port", "apps:\n  - name: a\n    backend: http://x\n    group: g\n    hosts:\n      - ok.example.com\n      - b.example.com:443\n", []string{`gateway.yaml:7: apps[0].hosts[1]: "b.example.com:443": must be a host name without a port`}},
		{"app host bad wildcard", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [\"a.*.example.com\"]}\n", []string{`apps[0].hosts[0]: "a.*.example.com": a wildcard may only be one whole leading label`}},
		{"app host bare wildcard", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [\"*\"]}\n", []string{`apps[0].hosts[0]: "*": a wildcard may only be`}},
		{"app host invalid", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [\"a b.example\"]}\n", []string{`apps[0].hosts[0]: "a b.example": not a valid host name`}},
		{"app host trailing dot", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [\"a.example.\"]}\n", []string{`remove the trailing dot`}},
		{"app host empty", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [\"\"]}\n", []string{`apps[0].hosts[0]: must not be empty`}},
		{"app host twice", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [a.example, A.EXAMPLE]}\n", []string{`apps[0].hosts[1]: "a.example" is listed twice`}},
		{"app route taken", minimalApp + "  - name: b\n    hosts: [x.example.com, A.Example.com]\n    backend: http://b\n    group: g\n", []string{`gateway.yaml:8: apps[1].hosts[1]: "a.example.com" with path_prefix "/" is already served by apps[0]`}},
		{"app route taken trailing slash", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [a.com], path_prefix: /api}\n" +
			"  - {name: b, backend: \"http://x\", group: g, hosts: [a.com], path_prefix: /api/}\n",
			[]string{`gateway.yaml:3: apps[1].hosts[0]: "a.com" with path_prefix "/api/" is already served by apps[0] with path_prefix "/api": a trailing slash does not make another prefix`}},
		{"app route taken root slashes", minimalApp + "  - {name: b, backend: \"http://x\", group: g, hosts: [a.example.com], path_prefix: //}\n",
			[]string{`gateway.yaml:7: apps[1].hosts[0]: "a.example.com" with path_prefix "//" is already served by apps[0] with path_prefix "/"`}},
		{"listeners same address", "public: {addr: \"127.0.0.1:8080\"}\ntunnel: {addr: \"127.0.0.1:8080\"}\n",
			[]string{`gateway.yaml:2: tunnel.addr: tunnel.addr (127.0.0.1:8080) listens on the same port as public.addr (127.0.0.1:8080); give each listener its own port`}},
		{"listener on every address", "public: {addr: \"127.0.0.1:9000\"}\nadmin:\n  addr: \":9000\"\n",
			[]string{`gateway.yaml:3: admin.addr: admin.addr (:9000) listens on the same port as public.addr (127.0.0.1:9000)`}},
		{"listener on a default", "public: {addr: \"[::]:8443\"}\n",
			[]string{`gateway.yaml:1: public.addr: public.addr ([::]:8443) listens on the same port as tunnel.addr (:8443 by default)`}},
		{"listen host not an ip", "public: {addr: \"256.1.1.1:8080\"}\n",
			[]string{`gateway.yaml:1: public.addr: host "256.1.1.1" in "256.1.1.1:8080" is neither an IP address nor a host name`}},
		{"listen host garbage", "admin: {addr: \"a b:8080\"}\n", []string{`admin.addr: host "a b" in "a b:8080" is neither`}},
		{"app path prefix", minimalApp + "    path_prefix: api\n", []string{`gateway.yaml:7: apps[0].path_prefix: must start with "/", got "api"`}},
		{"app path prefix query", minimalApp + "    path_prefix: /a?b\n", []string{`apps[0].path_prefix: must be a path without ? or #`}},
		{"app negative timeout", minimalApp + "    timeout: -1s\n", []string{`gateway.yaml:7: apps[0].timeout: must not be negative`}},
		{"app preauth unknown", minimalApp + "    preauth: saml\n", []string{`gateway.yaml:7: apps[0].preauth: must be none or oidc, got "saml"`}},
		{"app oidc without providers", minimalApp + "    preauth: oidc\n", []string{`gateway.yaml:7: apps[0].preauth: oidc needs a provider under oidc.providers`}},
		{"app oidc unknown provider", minimalApp + "    preauth: oidc\n    oidc_provider: nope\n", []string{`gateway.yaml:8: apps[0].oidc_provider: no provider named "nope" under oidc.providers`}},
		{"app oidc ambiguous provider", "oidc:\n  providers:\n    - {name: a, issuer: \"https://a/\", client_id: c}\n    - {name: b, issuer: \"https://b/\", client_id: c}\n" + minimalApp + "    preauth: oidc\n", []string{`gateway.yaml:7: apps[0].oidc_provider: required: there are 2 providers`}},
		{"app none with unknown provider", minimalApp + "    oidc_provider: nope\n", []string{`apps[0].oidc_provider: no provider named "nope"`}},
		{"app policy without oidc", minimalApp + "    policy:\n      emails: [a@b.c]\n", []string{`gateway.yaml:8: apps[0].policy: only enforced with preauth: oidc`}},
		{"app policy values", "oidc:\n  providers:\n    - {name: a, issuer: \"https://a/\", client_id: c}\n" + minimalApp + "    preauth: oidc\n    policy:\n      emails: [nobody]\n      domains: [\"@example.com\"]\n      groups: [\"\"]\n    public_paths: [health]\n", []string{
			`gateway.yaml:12: apps[0].policy.emails[0]: "nobody" is not an email address`,
			`gateway.yaml:13: apps[0].policy.domains[0]: "@example.com" must be a domain`,
			`gateway.yaml:14: apps[0].policy.groups[0]: must not be empty`,
			`gateway.yaml:15: apps[0].public_paths[0]: must start with "/"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := ParseGateway("gateway.yaml", []byte(tt.yaml))
			wantRefused(t, g, err, tt.want)
		})
	}
}

// TestGatewayErrorStructure checks the exact form promised in the package
// comment and that callers can pick *Error values out of the joined error.
// TestStoreDSNHidesPassword: a store.postgres value that is not a DSN is
// refused with file, line and key, and without its password, also when it
// does not parse as a URL.
func TestStoreDSNHidesPassword(t *testing.T) {
	for _, c := range []struct{ dsn, want string }{
		{"postgress://sally:Pa55w0rdSECRET@db.internal:5432/sallyport", `"postgress://sally:xxxxx@db.internal:5432/sallyport" is not a PostgreSQL DSN`},
		{"postgresql:/sally:Pa55w0rdSECRET@db.internal/sallyport", `"postgresql:xxxxx@db.internal/sallyport" is not a PostgreSQL DSN`},
		{"pg://sally:Pa5#5w0rdSECRET@db.internal/sallyport", `"pg://sally:xxxxx@db.internal/sallyport" is not a PostgreSQL DSN`},
		{"host=db password=Pa55w0rdSECRET url=x://y", `"host=db password=xxxxx url=x://y" is not a PostgreSQL DSN`},
		{"host=db password='Pa55 w0rdSECRET' url=x://y", `"host=db password=xxxxx url=x://y" is not a PostgreSQL DSN`},
	} {
		_, err := ParseGateway("gateway.yaml", []byte("store:\n  postgres: \""+c.dsn+"\"\n"))
		if err == nil {
			t.Errorf("store.postgres %q accepted", c.dsn)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "gateway.yaml:2: store.postgres: "+c.want) || strings.Contains(msg, "SECRET") {
			t.Errorf("store.postgres %q: error %q, want it to contain %q and no password", c.dsn, msg, c.want)
		}
	}
}

// TestGroupNames: apps[].group and tunnel.tokens[].group follow the admin
// API's rule for group names, so that `sallyport token create --group` can
// make tokens for every group the config names.
func TestGroupNames(t *testing.T) {
	const app = "apps:\n  - {name: a, hosts: [a.example.com], backend: \"http://127.0.0.1:9\", group: %q}\n"
	const token = "tunnel:\n  tokens:\n    - {token: x, group: %q}\n"
	for _, bad := range []string{"team a", "default ", "-a", "a/b", strings.Repeat("g", 65)} {
		for _, c := range []struct{ yaml, want string }{
			{fmt.Sprintf(app, bad), "gateway.yaml:2: apps[0].group: "},
			{fmt.Sprintf(token, bad), "gateway.yaml:3: tunnel.tokens[0].group: "},
		} {
			_, err := ParseGateway("gateway.yaml", []byte(c.yaml))
			want := c.want + fmt.Sprintf("%q is not a connector group name: want 1-64 letters, digits", bad)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("group %q: error %v, want %q", bad, err, want)
			}
		}
	}
	for _, good := range []string{"default", "team-a", "eu.west_1", strings.Repeat("g", 64)} {
		if _, err := ParseGateway("gateway.yaml", []byte(fmt.Sprintf(app, good)+fmt.Sprintf(token, good))); err != nil {
			t.Errorf("group %q: %v", good, err)
		}
	}
}

func TestGatewayErrorStructure(t *testing.T) {
	src := `public:
  addr: ":8080"
tunnel:
  tokens:
    - {token: t, group: g}
apps:
  - name: one
    hosts: [one.example.com]
    backend: http://127.0.0.1:9000
    group: g
  - name: two
    hosts: [two.example.com]
    backend: ftp://two.corp
    group: g
`
	_, err := ParseGateway("gateway.yaml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	const want = `gateway.yaml:13: apps[1].backend: must be an http:// or https:// URL, got "ftp://two.corp"`
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(*Error) failed on %T", err)
	}
	if e.File != "gateway.yaml" || e.Line != 13 || e.Path != "apps[1].backend" || !strings.HasPrefix(e.Msg, "must be an http://") {
		t.Errorf("Error = %+v", e)
	}

	_, err = ParseGateway("/etc/sallyport/gateway.yaml", []byte("public:\n  tls: {}\napps: []\n\nbogus: 7\n"))
	if err == nil || err.Error() != `/etc/sallyport/gateway.yaml:5: unknown key "bogus"` {
		t.Errorf("error = %v", err)
	}
}

func TestGatewayValidateInCode(t *testing.T) {
	g := &Gateway{Apps: []App{{Name: "a", Hosts: []string{"A.Example.COM"}, Backend: "http://x", Group: "g"}}}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	if g.Apps[0].Hosts[0] != "a.example.com" {
		t.Errorf("host not lowercased: %q", g.Apps[0].Hosts[0])
	}
	g.Apps[0].Backend = "x"
	err := g.Validate()
	if err == nil || err.Error() != `apps[0].backend: must be an http:// or https:// URL, got "x"` {
		t.Errorf("Validate = %v", err)
	}
	if err := (&Gateway{}).Validate(); err != nil {
		t.Errorf("zero Gateway: %v", err)
	}
}

func TestLoadGatewayFileErrors(t *testing.T) {
	_, err := LoadGateway(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}

	p := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(p, []byte("apps:\n  - name: x\n    bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadGateway(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+`:3: unknown key "bogus" in apps[0]`) {
		t.Errorf("error = %v, want it to name %s:3", err, p)
	}
}

func TestTrustedProxyPrefixes(t *testing.T) {
	p := Public{TrustedProxies: []string{"10.1.2.3/8", " 192.0.2.7 ", "2001:db8::/32", "::ffff:192.0.2.9", "bogus"}}
	got := fmt.Sprint(p.TrustedProxyPrefixes())
	if want := "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32 192.0.2.9/32]"; got != want {
		t.Errorf("prefixes %s, want %s", got, want)
	}
}

func TestGatewayAcceptsVariants(t *testing.T) {
	tests := []struct {
		name string
		yaml string
	}{
		{"ipv6 listen", "public: {addr: \"[::1]:8080\"}\ntunnel: {addr: \"[::]:8443\"}\n"},
		{"port zero", "public: {addr: \"127.0.0.1:0\"}\ntunnel: {addr: \"127.0.0.1:0\"}\nadmin: {addr: \":0\"}\n"},
		{"same port other hosts", "public: {addr: \"127.0.0.1:8080\"}\ntunnel: {addr: \"127.0.0.2:8080\"}\nadmin: {addr: \"localhost:9090\"}\n"},
		{"listen host names", "public: {addr: \"gw.example.com:80\"}\ntunnel: {addr: \"gw-1:8443\"}\nadmin: {addr: \"[fe80::1%eth0]:9090\"}\n"},
		{"trusted proxies", "public: {trusted_proxies: [10.0.0.0/8, 192.0.2.7, \"2001:db8::/32\", \"::ffff:192.0.2.9\"]}\n"},
		{"ip host", "apps:\n  - {name: a, backend: \"http://x\", group: g, hosts: [\"192.0.2.1\", \"[2001:db8::1]\", \"2001:db8::2\"]}\n"},
		{"same host other prefix", minimalApp + "  - {name: b, backend: \"http://x\", group: g, hosts: [a.example.com], path_prefix: /api}\n"},
		{"wildcard and exact", "apps:\n  - {name: a, backend: \"https://x:8443/p?q=1\", group: g, hosts: [\"*.example.com\", example.com, under_score.example.com]}\n"},
		{"oidc single provider", "oidc:\n  providers:\n    - {name: a, issuer: \"https://a/\", client_id: c}\n" + minimalApp + "    preauth: oidc\n    public_paths: [/health]\n"},
		{"store postgres url", "store: {postgres: \"postgresql://gw@db.internal:5432/gw?sslmode=verify-full\"}\n"},
		{"store postgres key=value", "store: {postgres: \"host=db.internal dbname=gw user=gw\"}\n"},
		{"store postgres file", "store: {postgres_file: /etc/sallyport/dsn}\n"},
		{"store postgres env", "store: {postgres_env: SALLYPORT_DSN}\n"},
		{"keepalive shortest", "tunnel: {keepalive: 5s}\n"},
		{"keepalive longest", "tunnel: {keepalive: 2m}\n"},
		{"anchors and merge keys", "apps:\n  - &a {name: a, backend: \"http://x\", group: g, hosts: [a.b]}\n  - <<: *a\n    name: b\n    hosts: [b.b]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseGateway("gateway.yaml", []byte(tt.yaml)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSettingError: a setting that turns out unusable when put to use (a
// database that does not answer) is reported at its file and line, with
// the cause's own advice alone.
func TestSettingError(t *testing.T) {
	g, err := ParseGateway("gateway.yaml", []byte("data_dir: d\nstore:\n  postgres: postgres://gw@db/gw\n"))
	if err != nil {
		t.Fatal(err)
	}
	if key := g.Store.PostgresKey(); key != "store.postgres" {
		t.Fatalf("PostgresKey = %q", key)
	}
	got := g.SettingError("store.postgres", errors.New("cannot reach it; check the server")).Error()
	if want := "gateway.yaml:3: store.postgres: cannot reach it; check the server"; got != want {
		t.Fatalf("SettingError = %q, want %q", got, want)
	}
}

// TestFileError: a file that a setting names and that turns out unusable
// after parsing (missing, unreadable, not PEM) is reported at the config
// file and line of that setting, with what to do; a configuration built in
// code names only the setting.
func TestFileError(t *testing.T) {
	const yaml = "data_dir: d\npublic:\n  tls: {cert_file: c.pem, key_file: k.pem}\noidc:\n  providers:\n    - name: a\n      issuer: https://a/\n      client_id: c\n      client_secret_file: s\n"
	g, err := ParseGateway("gateway.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("open c.pem: no such file or directory")
	for _, tc := range []struct{ key, want string }{
		{"public.tls", "gateway.yaml:3: public.tls: open c.pem: no such file or directory (fix the path, or the file's contents or permissions)"},
		{"oidc.providers[0].client_secret_file", "gateway.yaml:9: oidc.providers[0].client_secret_file: open c.pem"},
		{"admin.token_file", "gateway.yaml: admin.token_file: open c.pem"}, // not in the file: no line
		{"oidc.providers[0].client_secret_env", "set the variable in the environment"},
	} {
		if got := g.FileError(tc.key, cause).Error(); !strings.Contains(got, tc.want) {
			t.Errorf("FileError(%q) = %q, want it to contain %q", tc.key, got, tc.want)
		}
	}
	a, err := ParseAgent("agent.yaml", []byte("gateway: gw:8443\ntoken: t\ngateway_ca_file: ca.pem\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.FileError("gateway_ca_file", cause).Error(), "agent.yaml:3: gateway_ca_file: open c.pem"; !strings.HasPrefix(got, want) {
		t.Errorf("agent FileError = %q, want prefix %q", got, want)
	}
	var inCode Gateway
	if got, want := inCode.FileError("public.tls", cause).Error(), "public.tls: open c.pem"; !strings.HasPrefix(got, want) {
		t.Errorf("FileError of a config built in code = %q, want prefix %q", got, want)
	}
}

func TestChangedBesidesApps(t *testing.T) {
	parse := func(s string) *Gateway {
		t.Helper()
		g, err := ParseGateway("gateway.yaml", []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	const base = `public: {addr: ":8080"}
tunnel:
  tokens: [{token: a, group: default}]
shutdown_grace: 30s
apps:
  - {name: one, hosts: [one.test], backend: "http://127.0.0.1:1", group: default}
`
	a := parse(base)
	if keys := a.ChangedBesidesApps(parse(base)); len(keys) != 0 {
		t.Fatalf("the same file: %v", keys)
	}
	onlyApps := strings.Replace(base, "one.test", "two.test", 1) +
		`  - {name: two, hosts: [x.test], backend: "http://127.0.0.1:2", group: default}` + "\n"
	if keys := a.ChangedBesidesApps(parse(onlyApps)); len(keys) != 0 {
		t.Fatalf("only apps changed: %v", keys)
	}
	more := strings.NewReplacer(`":8080"`, `":9090"`, "token: a", "token: b", "30s", "10s").Replace(base) +
		"admin: {addr: \"127.0.0.1:9999\"}\n"
	got := strings.Join(a.ChangedBesidesApps(parse(more)), " ")
	if got != "public.addr tunnel.tokens admin.addr shutdown_grace" {
		t.Fatalf("changed keys: %q", got)
	}
}

// TestFileErrorRelativePath: a file the config names by a relative path
// that cannot be opened is reported with the working directory it was
// looked for in, since that is not the config file's directory (under
// systemd it is / unless WorkingDirectory= is set). An absolute path, or
// an error that names no path, gets no such note.
func TestFileErrorRelativePath(t *testing.T) {
	a, err := ParseAgent("agent.yaml", []byte("gateway: gw:8443\ntoken: t\ngateway_ca_file: ca.pem\n"))
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	relative := &fs.PathError{Op: "open", Path: "ca.pem", Err: fs.ErrNotExist}
	got := a.FileError("gateway_ca_file", relative).Error()
	want := "agent.yaml:3: gateway_ca_file: open ca.pem: file does not exist (fix the path, or the file's contents or permissions) " +
		"(relative paths are taken from the working directory " + wd + ", not the config file's)"
	if got != want {
		t.Errorf("FileError for a relative path =\n%q\nwant\n%q", got, want)
	}
	for _, cause := range []error{
		&fs.PathError{Op: "open", Path: filepath.Join(wd, "ca.pem"), Err: fs.ErrNotExist},
		errors.New("ca.pem: no PEM certificate in it"),
	} {
		if got := a.FileError("gateway_ca_file", cause).Error(); strings.Contains(got, "working directory") {
			t.Errorf("FileError(%v) = %q: names the working directory, though the path is absolute or not in the error", cause, got)
		}
	}
}

// TestRelativeDirNote: the note a command adds for a relative directory
// (sallyport gateway ca rotate's data_dir) names the working directory and
// the directory there; an absolute directory gets none. It and FileError's
// note share the working-directory lookup, so when the working directory
// is gone both say so instead of naming a wrong one.
func TestRelativeDirNote(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(gone, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(gone)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	want := "; a relative path, taken from the working directory " + wd + ", so " + filepath.Join(wd, "data") +
		", not from the config file's directory"
	if got := RelativeDirNote("data"); got != want {
		t.Errorf("RelativeDirNote(data) =\n%q\nwant\n%q", got, want)
	}
	if got := RelativeDirNote(wd); got != "" {
		t.Errorf("RelativeDirNote(%s) = %q; want none for an absolute path", wd, got)
	}

	if err := os.Remove(gone); err != nil {
		shortskip.Unsupported(t, "this system cannot remove the working directory ("+err.Error()+"); run on Linux")
	}
	if _, err := os.Getwd(); err == nil {
		shortskip.Unsupported(t, "os.Getwd finds a removed working directory on this system; run on Linux")
	}
	if got, want := RelativeDirNote("data"), "; a relative path, taken from the working directory (unknown: "; !strings.HasPrefix(got, want) || strings.Contains(got, ", so ") {
		t.Errorf("RelativeDirNote(data) in a removed working directory = %q; want it to begin %q and name no path", got, want)
	}
	a, err := ParseAgent("agent.yaml", []byte("gateway: gw:8443\ntoken: t\ngateway_ca_file: ca.pem\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := a.FileError("gateway_ca_file", &fs.PathError{Op: "open", Path: "ca.pem", Err: fs.ErrNotExist}).Error()
	if want := "(relative paths are taken from the working directory (unknown: "; !strings.Contains(got, want) {
		t.Errorf("FileError in a removed working directory = %q; want it to say %q", got, want)
	}
}
