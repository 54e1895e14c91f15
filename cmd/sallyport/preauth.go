//go:build !agentonly

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/config"
)

// Files in data_dir that pre-authentication keeps.
const (
	sessionKeyFile    = "session.key"         // AES-256 key of the session cookies
	assertionKeysFile = "assertion-keys.json" // ES256 keys of X-Sallyport-Assertion
	assertionSeedName = "assertion-seed"      // with a shared store: the seed the assertion keys derive from
)

// preauthService builds the pre-authentication when an app asks for it
// (nil otherwise) and returns each app's policy by app index. Client
// secrets are read now: a missing file or variable stops the start. The
// session cookie key comes from shared, the replicas' common store, when
// it is not nil, else from data_dir (see sessionKey).
func preauthService(cfg *config.Gateway, log *zap.Logger, shared secretStore) (*preauth.Service, map[int]*preauth.Policy, error) {
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
	key, err := sessionKey(filepath.Join(dir, sessionKeyFile), shared)
	if err != nil {
		return nil, nil, err
	}
	keys, err := assertionKeys(filepath.Join(dir, assertionKeysFile), shared)
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

// secretStore keeps secrets that every gateway on it shares (store.DB).
type secretStore interface {
	Secret(ctx context.Context, name string, create func() (string, error)) (string, error)
}

// sessionKey returns the session cookie key: from file (created on first
// start) when shared is nil; else from the shared store, which replicas
// on one database read alike. The first gateway to put a key there puts
// the one of its file if it has one, so that users stay signed in when a
// gateway moves its store to PostgreSQL.
func sessionKey(file string, shared secretStore) ([]byte, error) {
	if shared == nil {
		return preauth.LoadOrCreateKey(file)
	}
	return sharedBytes(shared, sessionKeyFile, preauth.KeySize, func() ([]byte, error) {
		if _, err := os.Stat(file); err != nil {
			return nil, nil
		}
		return preauth.LoadOrCreateKey(file)
	}, "everybody must sign in again")
}

// assertionKeys returns the key set that signs identity assertions: kept
// in file when shared is nil; else derived from a seed in the shared
// store, so that every replica signs with and publishes the same keys
// (assertion.KeySetConfig.Seed).
func assertionKeys(file string, shared secretStore) (*assertion.KeySet, error) {
	if shared == nil {
		return assertion.NewKeySet(assertion.KeySetConfig{File: file})
	}
	seed, err := sharedBytes(shared, assertionSeedName, assertion.MinSeed, nil,
		"verifiers fetch the new keys when they meet them; assertions in flight, valid for two minutes, fail")
	if err != nil {
		return nil, err
	}
	return assertion.NewKeySet(assertion.KeySetConfig{Seed: seed})
}

// sharedBytes returns the size bytes kept under name in the shared store.
// When there are none yet, the first gateway puts there what initial
// gives, or random bytes when initial is nil or gives nil. afterDelete
// says, in the error for a damaged value, what deleting it costs.
func sharedBytes(shared secretStore, name string, size int, initial func() ([]byte, error), afterDelete string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := shared.Secret(ctx, name, func() (string, error) {
		var b []byte
		if initial != nil {
			var err error
			if b, err = initial(); err != nil {
				return "", err
			}
		}
		if b == nil {
			b = make([]byte, size)
			if _, err := rand.Read(b); err != nil {
				return "", err
			}
		}
		return base64.StdEncoding.EncodeToString(b), nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s in the store: %w", name, err)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("%s in the store (secrets table, name %q): want %d random bytes in base64; "+
			"delete the row to make a new one (%s)", name, name, size, afterDelete)
	}
	return b, nil
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
