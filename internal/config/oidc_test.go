package config

import (
	"strings"
	"testing"
	"time"
)

func TestGatewayOIDCSessionSettings(t *testing.T) {
	g, err := ParseGateway("gateway.yaml", []byte("oidc:\n  cookie_domain: Apps.Example.com\n  session_lifetime: 8h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g.OIDC.CookieDomain != "Apps.Example.com" || g.OIDC.SessionLifetimeOrDefault() != 8*time.Hour {
		t.Fatalf("%+v", g.OIDC)
	}
	if d := (&OIDC{}).SessionLifetimeOrDefault(); d != DefaultSessionLifetime {
		t.Errorf("default lifetime %v", d)
	}
	for yaml, want := range map[string]string{
		"oidc: {session_lifetime: -1h}":       "oidc.session_lifetime",
		"oidc: {cookie_domain: '*.ex.com'}":   "oidc.cookie_domain",
		"oidc: {cookie_domain: 'a b'}":        "oidc.cookie_domain",
		"oidc: {cookie_domain: 'x..example'}": "oidc.cookie_domain",
	} {
		if _, err := ParseGateway("gateway.yaml", []byte(yaml)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", yaml, err)
		}
	}
}

func TestAgentVerifyAssertion(t *testing.T) {
	a, err := ParseAgent("agent.yaml", []byte("gateway: 127.0.0.1:8443\ntoken: t\nverify_assertion: true\n"))
	if err != nil || !a.VerifyAssertion {
		t.Fatalf("%+v %v", a, err)
	}
}

// TestOIDCScopesNeedOpenID: scopes without openid get no ID token from the
// provider, so every sign-in would fail ("sent no ID token"); the config
// says so at start instead.
func TestOIDCScopesNeedOpenID(t *testing.T) {
	const base = "oidc:\n  providers:\n    - {name: corp, issuer: 'https://idp.example', client_id: c, scopes: %s}\n"
	if _, err := ParseGateway("gateway.yaml", []byte(strings.Replace(base, "%s", "[email, profile]", 1))); err == nil ||
		!strings.Contains(err.Error(), "oidc.providers[0].scopes") || !strings.Contains(err.Error(), "openid") {
		t.Fatalf("scopes without openid: %v", err)
	}
	for _, ok := range []string{"[openid]", "[email, openid, offline_access]", "[]"} {
		if _, err := ParseGateway("gateway.yaml", []byte(strings.Replace(base, "%s", ok, 1))); err != nil {
			t.Errorf("scopes %s: %v", ok, err)
		}
	}
}
