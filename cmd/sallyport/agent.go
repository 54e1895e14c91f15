package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/config"
)

func newAgentCmd(g *globals) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "agent --config agent.yaml",
		Short: "Run a connector agent: dial out to the gateway and serve its exchanges",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runFromConfig(g, path, config.LoadAgent, func(ctx context.Context, cfg *config.Agent, log *zap.Logger) error {
				settings, err := agentConfig(cfg, log)
				if err != nil {
					return err
				}
				a, err := agent.New(settings)
				if err != nil {
					return err
				}
				return a.Run(ctx)
			})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "agent config file (YAML)")
	return cmd
}

// agentConfig turns a validated config file into the agent's settings.
func agentConfig(cfg *config.Agent, log *zap.Logger) (agent.Config, error) {
	out := agent.Config{
		Gateway:         cfg.Gateway,
		Token:           cfg.Token,
		Name:            cfg.NameOrDefault(),
		Connections:     cfg.ConnectionsOrDefault(),
		Allow:           cfg.Allow,
		VerifyAssertion: cfg.VerifyAssertion,
		Log:             log,
	}
	if cfg.Proxy != "" {
		return out, fmt.Errorf("proxy: outbound proxies for the tunnel are not supported by this build yet; remove `proxy`")
	}
	if t := cfg.TransportOrDefault(); t != config.TransportGRPC {
		return out, fmt.Errorf("transport %q is not supported by this build yet; use grpc", t)
	}
	host, _, err := net.SplitHostPort(cfg.Gateway)
	if err != nil {
		return out, fmt.Errorf("gateway: %w", err)
	}
	out.TLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if cfg.GatewayCAFile != "" {
		pem, err := os.ReadFile(cfg.GatewayCAFile)
		if err != nil {
			return out, fmt.Errorf("gateway_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return out, fmt.Errorf("gateway_ca_file %s: no PEM certificate in it", cfg.GatewayCAFile)
		}
		out.TLS.RootCAs = pool
	}
	for _, b := range cfg.BackendTLS {
		out.BackendTLS = append(out.BackendTLS, agent.BackendTLS{
			Hosts: b.Hosts, CAFile: b.CAFile, InsecureSkipVerify: b.InsecureSkipVerify, ServerName: b.ServerName,
		})
	}
	return out, nil
}
