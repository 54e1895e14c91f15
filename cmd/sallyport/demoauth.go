//go:build !agentonly

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/devoidc"
)

// Demo users of the development OIDC provider: alice may use the protected
// app, bob is signed in but not allowed (403).
var demoUsers = []devoidc.User{
	{Username: "alice", Password: "alice", Subject: "alice", Email: "alice@example.com", Name: "Alice Example", Groups: []string{"staff"}},
	{Username: "bob", Password: "bob", Subject: "bob", Email: "bob@example.org", Name: "Bob Example", Groups: []string{"guests"}},
}

// demoPrivateHost is the host of the demo's protected app. Browsers and curl
// resolve every *.localhost name to the loopback address.
const demoPrivateHost = "private.localhost"

// demoProvider is the development OIDC provider the demo runs on loopback.
type demoProvider struct {
	srv    *http.Server
	issuer string
}

// startDemoProvider starts the development provider and adds it, and a
// protected app in front of backend, to gcfg. The client secret is written
// to dir, as a real deployment would keep it in a file.
func startDemoProvider(gcfg *config.Gateway, dir, backend string) (*demoProvider, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo OIDC provider: %w", err)
	}
	issuer := "http://" + ln.Addr().String()
	secret := randomToken()
	secretFile := filepath.Join(dir, "oidc-client-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	idp := devoidc.New(devoidc.Config{
		Issuer: issuer, Users: demoUsers, Clients: []devoidc.Client{{ID: "sallyport-demo", Secret: secret}},
	})
	p := &demoProvider{srv: &http.Server{Handler: idp.Handler(), ReadHeaderTimeout: 10 * time.Second}, issuer: issuer}
	go p.srv.Serve(ln) //nolint:errcheck // ends with Close
	gcfg.OIDC.Providers = append(gcfg.OIDC.Providers, config.OIDCProvider{
		Name: "demo", Issuer: issuer, ClientID: "sallyport-demo", ClientSecretFile: secretFile,
		Scopes: []string{"openid", "email", "profile", "groups"},
	})
	gcfg.Apps = append(gcfg.Apps, config.App{
		Name: "private", Hosts: []string{demoPrivateHost}, Backend: backend, Group: "demo",
		Preauth: config.PreauthOIDC, OIDCProvider: "demo", Policy: config.Policy{Groups: []string{"staff"}},
		PublicPaths: []string{"/healthz"},
	})
	return p, nil
}

func (p *demoProvider) Close() { p.srv.Close() }
