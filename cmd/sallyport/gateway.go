//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/store"
)

func newGatewayCmd(g *globals) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "gateway --config gateway.yaml",
		Short: "Run the gateway: the public listener and the tunnel listener agents dial",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runFromConfig(g, path, config.LoadGateway, func(ctx context.Context, cfg *config.Gateway, log *zap.Logger) error {
				settings, err := gatewayConfig(cfg, log)
				if err != nil {
					return err
				}
				st, err := store.Open(ctx, cfg.DataDirOrDefault())
				if err != nil {
					return fmt.Errorf("data_dir: %w", err)
				}
				defer st.Close()
				settings.Store = st
				gw, err := gateway.New(settings)
				if err != nil {
					return err
				}
				if err := gw.Listen(); err != nil {
					return err
				}
				return gw.Serve(ctx)
			})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "gateway config file (YAML)")
	cmd.AddCommand(newCACmd())
	return cmd
}

// adminToken reads the admin API token: SALLYPORT_ADMIN_TOKEN, else the
// file. Empty when neither is set.
func adminToken(file string) (string, error) {
	if t := strings.TrimSpace(os.Getenv("SALLYPORT_ADMIN_TOKEN")); t != "" {
		return t, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin token file %s is empty", file)
	}
	return t, nil
}

// gatewayConfig turns a validated config file into the gateway's settings:
// it loads certificates (or creates the self-signed tunnel certificate) and
// refuses settings this build does not implement yet.
func gatewayConfig(cfg *config.Gateway, log *zap.Logger) (gateway.Config, error) {
	out := gateway.Config{
		PublicAddr:           cfg.Public.AddrOrDefault(),
		TunnelAddr:           cfg.Tunnel.AddrOrDefault(),
		ShutdownGrace:        cfg.ShutdownGraceOrDefault(),
		ReadHeaderTimeout:    cfg.Public.ReadHeaderTimeoutOrDefault(),
		IdleTimeout:          cfg.Public.IdleTimeoutOrDefault(),
		MaxHeaderBytes:       cfg.Public.MaxHeaderBytesOrDefault(),
		TrustedProxies:       cfg.Public.TrustedProxyPrefixes(),
		MaxStreamsPerSession: cfg.Tunnel.MaxStreamsPerSessionOrDefault(),
		CertLifetime:         cfg.Tunnel.CertLifetimeOrDefault(),
		AdminAddr:            cfg.Admin.AddrOrDefault(),
		Log:                  log,
	}
	tok, err := adminToken(cfg.Admin.TokenFile)
	if err != nil {
		return out, cfg.FileError("admin.token_file", err)
	}
	out.AdminToken = tok
	if cfg.Public.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(cfg.Public.TLS.CertFile, cfg.Public.TLS.KeyFile)
		if err != nil {
			return out, cfg.FileError("public.tls", err)
		}
		out.PublicTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	tunnelTLS, err := tunnelCertificate(cfg, log)
	if err != nil {
		return out, err
	}
	out.TunnelTLS = tunnelTLS
	for _, t := range cfg.Tunnel.Tokens {
		out.Tokens = append(out.Tokens, gateway.Token{Token: t.Token, Group: t.Group})
	}
	svc, policies, err := preauthService(cfg, log)
	if err != nil {
		return out, err
	}
	out.Preauth = svc
	for i := range cfg.Apps {
		app := &cfg.Apps[i]
		u, err := app.BackendURL()
		if err != nil {
			return out, fmt.Errorf("apps[%d].backend: %w", i, err)
		}
		out.Routes = append(out.Routes, gateway.Route{
			App:          app.Name,
			Hosts:        app.Hosts,
			PathPrefix:   app.PathPrefixOrDefault(),
			Backend:      u,
			Group:        app.Group,
			Timeout:      app.TimeoutOrDefault(),
			PreserveHost: app.PreserveHost,
			BackendHTTP2: app.BackendHTTP2,
			Preauth:      policies[i],
		})
	}
	return out, nil
}

// tunnelCertificate loads the configured tunnel certificate, or creates a
// self-signed one in data_dir on first start and reuses it afterwards.
func tunnelCertificate(cfg *config.Gateway, log *zap.Logger) (*tls.Config, error) {
	if cfg.Tunnel.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(cfg.Tunnel.TLS.CertFile, cfg.Tunnel.TLS.KeyFile)
		if err != nil {
			return nil, cfg.FileError("tunnel.tls", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	}
	hosts := []string{}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	if host, _, err := net.SplitHostPort(cfg.Tunnel.AddrOrDefault()); err == nil && host != "" {
		hosts = append(hosts, host)
	}
	dir := cfg.DataDirOrDefault()
	cert, certPath, fp, err := selfsigned.LoadOrCreate(dir, hosts)
	if err != nil {
		return nil, fmt.Errorf("tunnel certificate in data_dir %s: %w", dir, err)
	}
	if cert.Leaf == nil {
		return nil, errors.New("tunnel certificate: no leaf")
	}
	log.Info("tunnel certificate (self-signed); agents trust it with gateway_ca_file",
		zap.String("file", certPath), zap.String("fingerprint", fp),
		zap.Strings("names", append(cert.Leaf.DNSNames, ipStrings(cert.Leaf.IPAddresses)...)),
		zap.Time("expires", cert.Leaf.NotAfter))
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
