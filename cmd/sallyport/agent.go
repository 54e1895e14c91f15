package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpproxy"

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
				stop, err := serveAgentMetrics(cfg, a, log)
				if err != nil {
					return err
				}
				defer stop()
				return a.Run(ctx)
			})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "agent config file (YAML)")
	cmd.AddCommand(newEnrollCmd(g))
	return cmd
}

func newEnrollCmd(g *globals) *cobra.Command {
	var e agent.EnrollConfig
	var caFile, fingerprint string
	cmd := &cobra.Command{
		Use:   "enroll --gateway HOST:PORT --token T --data-dir DIR [--gateway-ca FILE | --gateway-fingerprint sha256:HEX]",
		Short: "Enroll this agent: get a client certificate for a key made here, with a one-time token",
		Long: "enroll generates the agent's private key in --data-dir (it never leaves this machine), sends\n" +
			"a certificate request with the token to the gateway, and stores the issued certificate and the\n" +
			"connector CA bundle beside the key. The gateway's tunnel certificate is checked against\n" +
			"--gateway-ca, or pinned with --gateway-fingerprint (the gateway logs it at start-up), or the\n" +
			"system roots. How the gateway was trusted is saved in --data-dir too, so `sallyport agent`\n" +
			"with the same data_dir needs no gateway_ca_file.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if e.Gateway == "" || e.Token == "" || e.DataDir == "" {
				return errors.New("enroll needs --gateway, --token and --data-dir; see --help")
			}
			if caFile != "" && fingerprint != "" {
				return errors.New("give --gateway-ca or --gateway-fingerprint, not both")
			}
			if _, err := agent.LoadCredentials(e.DataDir); err == nil {
				return fmt.Errorf("%s already holds an agent certificate; remove %s and %s (or use another --data-dir) to enroll again",
					e.DataDir, agent.CertFile, agent.KeyFile)
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // stderr
			tc, err := gatewayTrust(e.Gateway, caFile, fingerprint)
			if err != nil {
				return err
			}
			e.TLS = tc
			ctx, stop := signalContext(log)
			defer stop()
			creds, err := agent.Enroll(ctx, e)
			if err != nil {
				return enrollAdvice(err, fingerprint != "")
			}
			if err := saveGatewayTrust(e.DataDir, caFile, fingerprint); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled: connector %s in group %q; certificate valid until %s, kept in %s\n",
				creds.ConnectorID, creds.Group, creds.Expires().UTC().Format(time.RFC3339), e.DataDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&e.Gateway, "gateway", "", "the gateway's tunnel address, host:port")
	f.StringVar(&e.Token, "token", "", "enrollment token (from sallyport token create, or one of the gateway's tunnel.tokens)")
	f.StringVar(&e.DataDir, "data-dir", "", "where the key, certificate and CA bundle are kept")
	f.StringVar(&e.Name, "name", "", "name shown in the connector list (default: host name)")
	f.StringVar(&caFile, "gateway-ca", "", "PEM file trusted for the gateway's tunnel certificate")
	f.StringVar(&fingerprint, "gateway-fingerprint", "", "pin the gateway's tunnel certificate: sha256:HEX")
	return cmd
}

// enrollAdvice adds to an error of `agent enroll` what to do about it,
// in the command's own flags.
func enrollAdvice(err error, pinned bool) error {
	switch {
	case errors.Is(err, agent.ErrTokenRefused):
		return fmt.Errorf("%w; check --token, or create a new one on the gateway with `sallyport token create --group GROUP`", err)
	case pinned && isTrustError(err):
		return fmt.Errorf("%w; check --gateway-fingerprint against the fingerprint the gateway logs at start-up "+
			"(the fingerprint field of its 'tunnel certificate' line), and that --gateway names that gateway", err)
	case isTrustError(err):
		return fmt.Errorf("%w; pass --gateway-fingerprint with the fingerprint the gateway logs at start-up "+
			"(the fingerprint field of its 'tunnel certificate' line), or --gateway-ca with its tunnel-cert.pem or the CA that issued its certificate", err)
	}
	return err
}

func isTrustError(err error) bool {
	_, ok := errors.AsType[*agent.GatewayTrustError](err)
	return ok
}

// gatewayTrust is the TLS config that verifies the gateway: by CA file, by
// pinned fingerprint, or by the system roots.
func gatewayTrust(gatewayAddr, caFile, fingerprint string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(gatewayAddr)
	if err != nil {
		return nil, fmt.Errorf("gateway %q: %w", gatewayAddr, err)
	}
	if fingerprint != "" {
		return agent.PinnedTLS(fingerprint)
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// saveGatewayTrust records in dataDir how the gateway was trusted at
// enrollment, for later runs without gateway_ca_file.
func saveGatewayTrust(dataDir, caFile, fingerprint string) error {
	switch {
	case fingerprint != "":
		return os.WriteFile(filepath.Join(dataDir, agent.GatewayPinFile), []byte(strings.TrimSpace(fingerprint)+"\n"), 0o644)
	case caFile != "":
		b, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dataDir, agent.GatewayCAFile), b, 0o644)
	}
	return nil
}

// agentConfig turns a validated config file into the agent's settings.
func agentConfig(cfg *config.Agent, log *zap.Logger) (agent.Config, error) {
	out := agent.Config{
		Gateway:         cfg.Gateway,
		Token:           cfg.Token,
		DataDir:         cfg.DataDirOrDefault(),
		Name:            cfg.NameOrDefault(),
		Connections:     cfg.ConnectionsOrDefault(),
		Allow:           cfg.Allow,
		Transport:       cfg.TransportOrDefault(),
		Proxy:           cfg.Proxy,
		ProxyEnv:        httpproxy.FromEnvironment(),
		VerifyAssertion: cfg.VerifyAssertion,
		Metrics:         cfg.MetricsAddr != "",
		Log:             log,
	}
	// Trust for the tunnel certificate: gateway_ca_file, else what
	// `agent enroll` saved in data_dir, else the system roots.
	caFile, pin := cfg.GatewayCAFile, ""
	if caFile == "" {
		if p := filepath.Join(out.DataDir, agent.GatewayCAFile); fileExists(p) {
			caFile = p
		} else if b, err := os.ReadFile(filepath.Join(out.DataDir, agent.GatewayPinFile)); err == nil {
			pin = strings.TrimSpace(string(b))
		}
	}
	tc, err := gatewayTrust(cfg.Gateway, caFile, pin)
	if err != nil {
		if caFile == cfg.GatewayCAFile && caFile != "" {
			return out, cfg.FileError("gateway_ca_file", err)
		}
		return out, fmt.Errorf("gateway trust in data_dir: %w", err)
	}
	out.TLS = tc
	for _, b := range cfg.BackendTLS {
		out.BackendTLS = append(out.BackendTLS, agent.BackendTLS{
			Hosts: b.Hosts, CAFile: b.CAFile, InsecureSkipVerify: b.InsecureSkipVerify, ServerName: b.ServerName,
		})
	}
	return out, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// serveAgentMetrics serves a's metrics on the config's metrics_addr, if set,
// until stop is called.
func serveAgentMetrics(cfg *config.Agent, a *agent.Agent, log *zap.Logger) (stop func(), err error) {
	if cfg.MetricsAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics_addr %q: %w; choose a free host:port, or leave metrics_addr empty to serve no metrics",
			cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.MetricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("the metrics listener failed", zap.Error(err))
		}
	}()
	log.Info("serving metrics", zap.String("metrics", "http://"+ln.Addr().String()+"/metrics"))
	return func() {
		srv.Close()
		<-done
	}, nil
}
