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
