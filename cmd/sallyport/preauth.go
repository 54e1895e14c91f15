//go:build !agentonly

package main

import (
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/config"
)

// Files in data_dir that pre-authentication keeps.
const (
	sessionKeyFile    = "session.key"         // AES-256 key of the session cookies
	assertionKeysFile = "assertion-keys.json" // ES256 keys of X-Sallyport-Assertion
)

// preauthService builds the pre-authentication when an app asks for it
// (nil otherwise) and returns each app's policy by app index. Client
// secrets are read now: a missing file or variable stops the start.
func preauthService(cfg *config.Gateway, log *zap.Logger) (*preauth.Service, map[int]*preauth.Policy, error) {
	policies, err := appPolicies(cfg)
	if err != nil {
		return nil, nil, err
	}
	if len(policies) == 0 {
		return nil, policies, nil
	}
	var providers []preauth.ProviderConfig
	for i := range cfg.OIDC.Providers {
		p := &cfg.OIDC.Providers[i]
		secret, err := clientSecret(p)
		if err != nil {
			key := "client_secret_env"
			if p.ClientSecretFile != "" {
				key = "client_secret_file"
			}
			return nil, nil, cfg.FileError(fmt.Sprintf("oidc.providers[%d].%s", i, key), err)
		}
		providers = append(providers, preauth.ProviderConfig{
			Name: p.Name, Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: secret,
			Scopes: p.ScopesOrDefault(), GroupsClaim: p.GroupsClaimOrDefault(), Audiences: p.AudiencesOrDefault(),
		})
	}
	dir := cfg.DataDirOrDefault()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("data_dir: %w", err)
	}
	key, err := preauth.LoadOrCreateKey(filepath.Join(dir, sessionKeyFile))
	if err != nil {
		return nil, nil, err
	}
	keys, err := assertion.NewKeySet(assertion.KeySetConfig{File: filepath.Join(dir, assertionKeysFile)})
	if err != nil {
		return nil, nil, err
	}
	svc, err := preauth.New(preauth.Config{
		Providers: providers, CookieDomain: cfg.OIDC.CookieDomain, SessionLifetime: cfg.OIDC.SessionLifetimeOrDefault(),
		CookieKey: key, Keys: keys, Log: log.Named("preauth"),
	})
	if err != nil {
		return nil, nil, err
	}
	return svc, policies, nil
}

// appPolicies returns the sign-in policy of each app with preauth: oidc,
// by app index.
func appPolicies(cfg *config.Gateway) (map[int]*preauth.Policy, error) {
	policies := map[int]*preauth.Policy{}
	for i := range cfg.Apps {
		app := &cfg.Apps[i]
		if app.PreauthOrDefault() != config.PreauthOIDC {
			continue
		}
		pr := cfg.ProviderFor(app)
		if pr == nil {
			return nil, fmt.Errorf("apps[%d] (%s): no OIDC provider", i, app.Name)
		}
		policies[i] = &preauth.Policy{
			Provider: pr.Name, Emails: app.Policy.Emails, Domains: app.Policy.Domains, Groups: app.Policy.Groups,
			PublicPaths: app.PublicPaths,
		}
	}
	return policies, nil
}

// clientSecret reads a provider's client secret from its file or variable;
// neither set means a public client.
func clientSecret(p *config.OIDCProvider) (string, error) {
	return readSecret(p.ClientSecretFile, p.ClientSecretEnv)
}
