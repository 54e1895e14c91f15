package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpproxy"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/promserve"
	"github.com/sallyport/sallyport/tunnel"
)

func newAgentCmd(g *globals) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "agent --config agent.yaml",
		Short: "Run a connector agent: dial out to the gateway and serve its exchanges",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hup := catchAgentHangup()
			return runFromConfig(g, path, config.LoadAgent, func(ctx context.Context, cfg *config.Agent, log *zap.Logger) error {
				defer ignoreHangups(log, hup)()
				settings, err := agentConfig(cfg, log)
				if err != nil {
					return err
				}
				// For the command an expired certificate's error gives.
				settings.ConfigFile = path
				if abs, err := filepath.Abs(path); err == nil {
					settings.ConfigFile = abs
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
				err = a.Run(ctx)
				if errors.Is(err, agent.ErrEnrollInterrupted) && ctx.Err() != nil {
					// SIGTERM or Ctrl-C while the agent waited to enroll:
					// a stop, which Run logged with the last enrollment
					// error; under a service manager not a failure.
					return nil
				}
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "agent config file (YAML)")
	cmd.AddCommand(newEnrollCmd(g))
	return cmd
}

// catchAgentHangup catches SIGHUP from now on, for ignoreHangups: the
// agent has no config reload, and without this SIGHUP's default action
// killed it at once, with no drain and no log line (a gateway unit's
// ExecReload=/bin/kill -HUP copied into the agent's, or an ssh logout). A
// SIGHUP before ignoreHangups runs waits in the channel and is logged then.
func catchAgentHangup() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

// ignoreHangups logs each SIGHUP on hup (see catchAgentHangup) and goes on.
// stop ignores SIGHUP for the rest of the process's life, so one that comes
// while the agent stops does not kill it either.
func ignoreHangups(log *zap.Logger, hup chan os.Signal) (stop func()) {
	return onHangups(hup, func() {
		log.Warn("SIGHUP ignored: the agent does not reload its config; restart it " +
			"(SIGTERM drains its exchanges first) to apply changes")
	})
}

// onHangups calls each, in a goroutine of its own, for every SIGHUP on hup
// until stop, which ignores SIGHUP for the rest of the process's life (so
// that a late one never kills it) and returns once each has returned.
func onHangups(hup chan os.Signal, each func()) (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-quit:
				return
			case <-hup:
				each()
			}
		}
	}()
	return sync.OnceFunc(func() {
		signal.Ignore(syscall.SIGHUP)
		close(quit)
		<-finished
	})
}

// enrollFlags are the flags of `agent enroll`; each one given wins over
// the setting of the agent config (--config) it stands for.
type enrollFlags struct {
	config      string // agent.yaml: gateway, token, data_dir, name, proxy, gateway_ca_file
	gateway     string
	token       string
	tokenFile   string
	dataDir     string
	name        string
	proxy       string
	caFile      string
	fingerprint string
	loaded      *config.Agent // the config of --config, once settings has read it
	// saved is the file of the data directory whose gateway trust, saved
	// by an earlier enrollment, settings chose (--config without a trust
	// flag or gateway_ca_file); "" → none.
	saved string
}

func newEnrollCmd(g *globals) *cobra.Command {
	var fl enrollFlags
	cmd := &cobra.Command{
		Use:   "enroll [--config agent.yaml] --gateway HOST:PORT --token T --data-dir DIR [--gateway-ca FILE | --gateway-fingerprint sha256:HEX]",
		Short: "Enroll this agent: get a client certificate for a key made here, with a one-time token",
		Long: "enroll generates the agent's private key in --data-dir (it never leaves this machine), sends\n" +
			"a certificate request with the token to the gateway, and stores the issued certificate and the\n" +
			"connector CA bundle beside the key. The gateway's tunnel certificate is checked against\n" +
			"--gateway-ca, or pinned with --gateway-fingerprint (the gateway logs it at start-up), or the\n" +
			"system roots. How the gateway was trusted is saved in --data-dir too, so `sallyport agent`\n" +
			"with the same data_dir needs no gateway_ca_file.\n\n" +
			"With --config agent.yaml, the gateway, token, data_dir, name, proxy and gateway_ca_file of the\n" +
			"agent config apply unless given as flags, and the gateway is trusted as that agent trusts it:\n" +
			"without --gateway-ca, --gateway-fingerprint and gateway_ca_file, by what an earlier enrollment\n" +
			"saved in data_dir. The connection goes through the outbound proxy as the agent's own does:\n" +
			"--proxy, else the config's proxy, else HTTPS_PROXY and NO_PROXY.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, caFile, fingerprint, err := fl.settings()
			if err != nil {
				return err
			}
			// An expired certificate is of no use: the agent that stopped
			// with it says to run this command, so it is replaced.
			old, err := agent.LoadCredentials(e.DataDir)
			if err == nil && time.Now().Before(old.Expires()) {
				return fmt.Errorf("%s already holds an agent certificate (connector %s, valid until %s); remove %s and %s "+
					"(or use another --data-dir) to enroll again", e.DataDir, old.ConnectorID,
					old.Expires().UTC().Format(time.RFC3339), agent.CertFile, agent.KeyFile)
			}
			if err == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "replacing the certificate of connector %s in %s: it expired on %s\n",
					old.ConnectorID, e.DataDir, old.Expires().UTC().Format(time.RFC3339))
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // stderr
			tc, err := gatewayTrust(e.Gateway, caFile, fingerprint)
			if err != nil {
				return fl.trustError(err)
			}
			e.TLS = tc
			var name string
			var sameName []string // other connectors of the group with this name
			e.SameName = func(n string, ids []string) { name, sameName = n, ids }
			// A fleet enrolling from one address (NAT) meets the gateway's
			// limit of enrolling connections per address: Enroll tries
			// again a few times, within its timeout, and says so here.
			var retried int
			e.OnBusyRetry = func(_ error, retry int, wait time.Duration) {
				retried = retry
				fmt.Fprintf(cmd.ErrOrStderr(), "%v (it limits enrolling connections from one address, or it is stopping); "+
					"trying again in %s (retry %d of %d)\n", agent.ErrGatewayBusy, wait.Round(10*time.Millisecond), retry, busyRetries)
			}
			e.BusyRetries = busyRetries
			ctx, stop := signalContext(log)
			defer stop()
			// A stop (Ctrl-C, SIGTERM) once the request may have reached
			// the gateway waits a few seconds for its answer: the gateway
			// may be spending the token, and its certificate is kept.
			creds, err := agent.EnrollWithStopGrace(ctx, e, log)
			if errors.Is(err, agent.ErrEnrollInterrupted) {
				return err // says whether the token may have been spent
			}
			if errors.Is(err, agent.ErrGatewayBusy) {
				return fmt.Errorf("%w; tried again %d times: when many agents enroll from one address at once, enroll them "+
					"a few at a time, or run this again in a minute (the token was not read, so it is still unused)", err, retried)
			}
			if err != nil {
				return enrollAdvice(err, fingerprint != "", fl.saved)
			}
			// A gateway_ca_file of the config stays where it is; only the
			// flags' trust is saved for a config without one. The trust
			// the data directory held, if used, stays too.
			if err := saveGatewayTrust(e.DataDir, fl.caFile, fingerprint, caFile); err != nil {
				return fmt.Errorf("enrolled as connector %s, but %w; or set gateway_ca_file in the agent config", creds.ConnectorID, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled: connector %s in group %q; certificate valid until %s, kept in %s\n",
				creds.ConnectorID, creds.Group, creds.Expires().UTC().Format(time.RFC3339), e.DataDir)
			if len(sameName) > 0 {
				sameNameNote(cmd.ErrOrStderr(), name, creds.Group, sameName)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.config, "config", "c", "", "agent config file: its gateway, token, data_dir, name, proxy and gateway_ca_file apply unless given as flags; "+
		"without a trust flag or gateway_ca_file, the gateway trust saved in data_dir does")
	f.StringVar(&fl.gateway, "gateway", "", "the gateway's tunnel address, host:port")
	f.StringVar(&fl.token, "token", "", "enrollment token (from sallyport token create, or one of the gateway's tunnel.tokens)")
	f.StringVar(&fl.tokenFile, "token-file", "", "file holding the enrollment token (keeps it out of the shell history and ps)")
	f.StringVar(&fl.dataDir, "data-dir", "", "where the key, certificate and CA bundle are kept")
	f.StringVar(&fl.name, "name", "", "name shown in the connector list (default: the config's name, else the host name)")
	f.StringVar(&fl.proxy, "proxy", "", "outbound HTTP CONNECT proxy, http://user:password@host:port (default: the config's proxy, else HTTPS_PROXY)")
	f.StringVar(&fl.caFile, "gateway-ca", "", "PEM file trusted for the gateway's tunnel certificate")
	f.StringVar(&fl.fingerprint, "gateway-fingerprint", "", "pin the gateway's tunnel certificate: sha256:HEX")
	return cmd
}

// sameNameNote tells that other connectors of the group, not revoked, are
// called name too (ids, oldest first), and how to revoke the ones this
// agent replaces. Enrolling under a name in use is not refused: installing
// an agent again under its old name is normal, but the old connector stays
// enrolled until it is revoked or its certificate expires.
func sameNameNote(w io.Writer, name, group string, ids []string) {
	if len(ids) == 1 {
		fmt.Fprintf(w, "note: connector %s is also named %q in group %q and is not revoked; if this agent replaces it "+
			"(installed again), revoke it: sallyport connector revoke %s\n", ids[0], name, group, ids[0])
		return
	}
	fmt.Fprintf(w, "note: connectors %s are also named %q in group %q and are not revoked; if this agent replaces them "+
		"(installed again), revoke each: sallyport connector revoke ID (see sallyport connector list)\n",
		strings.Join(ids, ", "), name, group)
}

// trustError names where the gateway trust that failed to load came
// from: --gateway-ca, or gateway_ca_file of --config.
func (fl *enrollFlags) trustError(err error) error {
	switch {
	case fl.caFile != "":
		return fmt.Errorf("--gateway-ca: %w", err)
	case fl.loaded != nil && fl.fingerprint == "" && fl.loaded.GatewayCAFile != "":
		return fl.loaded.FileError("gateway_ca_file", err)
	case fl.saved != "":
		return fmt.Errorf("the gateway trust an earlier enrollment saved in %s: %w; pass --gateway-fingerprint or --gateway-ca "+
			"to trust the gateway otherwise (enroll then replaces that file), or remove it to trust the system roots", fl.saved, err)
	}
	return err
}

// settings merges the flags with the agent config they name, if any, into
// the enrollment and the gateway trust (CA file or pinned fingerprint).
func (fl *enrollFlags) settings() (e agent.EnrollConfig, caFile, fingerprint string, err error) {
	var cfg config.Agent
	if fl.config != "" {
		c, err := config.LoadAgent(fl.config)
		if err != nil {
			return e, "", "", err
		}
		cfg = *c
		cfg.DataDir = c.DataDirOrDefault()
		fl.loaded = c
	}
	if fl.token != "" && fl.tokenFile != "" {
		return e, "", "", errors.New("give --token or --token-file, not both")
	}
	if fl.caFile != "" && fl.fingerprint != "" {
		return e, "", "", errors.New("give --gateway-ca or --gateway-fingerprint, not both")
	}
	e = agent.EnrollConfig{
		Gateway:  flagOr(fl.gateway, cfg.Gateway),
		Token:    strings.TrimSpace(fl.token), // pasted with a space or line break around it
		DataDir:  flagOr(fl.dataDir, cfg.DataDir),
		Name:     flagOr(fl.name, cfg.Name),
		Proxy:    flagOr(fl.proxy, cfg.Proxy),
		ProxyEnv: httpproxy.FromEnvironment(),
	}
	if fl.tokenFile != "" {
		b, err := os.ReadFile(fl.tokenFile)
		if err != nil {
			return e, "", "", fmt.Errorf("--token-file: %w", err)
		}
		if e.Token = strings.TrimSpace(string(b)); e.Token == "" {
			return e, "", "", fmt.Errorf("--token-file %s is empty; put the token from `sallyport token create` in it", fl.tokenFile)
		}
	}
	if e.Token == "" {
		e.Token = cfg.Token
	}
	if e.Gateway == "" || e.Token == "" || e.DataDir == "" {
		return e, "", "", errors.New("enroll needs --gateway, --token (or --token-file) and --data-dir, or --config with an agent config; see --help")
	}
	if err := checkGatewayAddr(e.Gateway); err != nil {
		return e, "", "", err
	}
	caFile, fingerprint = fl.caFile, fl.fingerprint
	if caFile == "" && fingerprint == "" {
		caFile = cfg.GatewayCAFile
	}
	if caFile == "" && fingerprint == "" && fl.loaded != nil {
		// As the agent of the config trusts the gateway (agentConfig): the
		// command an agent whose certificate expired gives relies on it
		// for a gateway with a self-signed tunnel certificate. Enrolling
		// keeps the file (saveGatewayTrust).
		caFile, fingerprint, fl.saved = savedGatewayTrust(e.DataDir)
	}
	return e, caFile, fingerprint, nil
}

func flagOr(s, dflt string) string {
	if s != "" {
		return s
	}
	return dflt
}

// checkGatewayAddr refuses a gateway address that is not host:port, saying
// how to write it.
func checkGatewayAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err == nil && host != "" && port != "":
		return nil
	case strings.Contains(addr, "://"):
		return fmt.Errorf("gateway %q: give host:port without a scheme, e.g. gw.example.com:8443", addr)
	case err != nil && strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "["):
		return fmt.Errorf("gateway %q: write an IPv6 address in brackets before the port, e.g. [2001:db8::1]:8443", addr)
	case host != "" || err != nil:
		return fmt.Errorf("gateway %q has no port: give the gateway's tunnel address as host:port, e.g. %s:8443 "+
			"(the port of tunnel.addr in the gateway config, 8443 by default)", addr, bracketIPv6(strings.TrimSuffix(addr, ":")))
	}
	return fmt.Errorf("gateway %q has no host: give the gateway's tunnel address as host:port, e.g. gw.example.com%s", addr, addr)
}

// bracketIPv6 writes an IPv6 address in brackets, as before a port.
func bracketIPv6(host string) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		return "[" + host + "]"
	}
	return host
}

// busyRetries is how many times `agent enroll` tries again while the
// gateway closes its connections right after the TLS handshake
// (agent.ErrGatewayBusy); with the default backoff, within about 15 s.
const busyRetries = 5

// enrollAdvice adds to an error of `agent enroll` what to do about it,
// in the command's own flags.
//
// saved is the data directory's file of the gateway trust used (see
// enrollFlags.saved), "" → the flags' or the config's.
func enrollAdvice(err error, pinned bool, saved string) error {
	switch {
	case isProxyRefusal(err):
		return fmt.Errorf("%w; enroll takes the proxy from --proxy, else from the proxy of --config, else from HTTPS_PROXY "+
			"(the token was not sent, so it is still unused)", err)
	case errors.Is(err, tunnel.ErrUnavailable):
		return fmt.Errorf("%w; the gateway runs, but cannot enroll until its database answers again: run this command "+
			"again then (the gateway's /readyz answers 200 once it does; see the gateway's log)", err)
	case errors.Is(err, agent.ErrGatewayUnreachable):
		return fmt.Errorf("%w; check --gateway (the gateway's host and the port of its tunnel.addr), that the gateway runs, "+
			"and that this machine can reach it (through a proxy: --proxy, the config's proxy or HTTPS_PROXY), then try again", err)
	case errors.Is(err, agent.ErrTokenRefused):
		return fmt.Errorf("%w; check --token, or create a new one on the gateway with `sallyport token create --group GROUP`", err)
	case saved != "" && isTrustError(err):
		return fmt.Errorf("%w; the gateway was checked with what an earlier enrollment saved in %s: if its tunnel certificate "+
			"was replaced, pass --gateway-fingerprint with the fingerprint it logs at start-up (the fingerprint field of its "+
			"'tunnel certificate' line) or --gateway-ca with its tunnel-cert.pem, and check that the config's gateway (or --gateway) is that gateway; "+
			"for a publicly trusted certificate, remove %s", err, saved, saved)
	case pinned && isTrustError(err):
		return fmt.Errorf("%w; check --gateway-fingerprint against the fingerprint the gateway logs at start-up "+
			"(the fingerprint field of its 'tunnel certificate' line), and that --gateway names that gateway", err)
	case isTrustError(err):
		return fmt.Errorf("%w; pass --gateway-fingerprint with the fingerprint the gateway logs at start-up "+
			"(the fingerprint field of its 'tunnel certificate' line), or --gateway-ca with its tunnel-cert.pem or the CA that issued its certificate", err)
	}
	return err
}

func isProxyRefusal(err error) bool {
	_, ok := errors.AsType[*agent.ProxyError](err)
	return ok
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
// enrollment, for later runs without gateway_ca_file, and removes what an
// earlier enrollment of dataDir recorded: gateway-ca.pem would win over a
// new pin, and a stale pin over the system roots.
//
// inUse is the CA file the enrollment checked the gateway with (the
// config's gateway_ca_file, say), which is never removed, even where it
// is the data directory's own copy.
func saveGatewayTrust(dataDir, caFile, fingerprint, inUse string) error {
	pinPath, caPath := filepath.Join(dataDir, agent.GatewayPinFile), filepath.Join(dataDir, agent.GatewayCAFile)
	var keep string
	switch {
	case fingerprint != "":
		keep = pinPath
		if err := atomicfile.Write(pinPath, []byte(strings.TrimSpace(fingerprint)+"\n"), 0o644); err != nil {
			return fmt.Errorf("save the gateway trust: %w", err)
		}
	case caFile != "":
		keep = caPath
		b, err := os.ReadFile(caFile)
		if err == nil {
			err = atomicfile.Write(caPath, b, 0o644)
		}
		if err != nil {
			return fmt.Errorf("save the gateway trust: %w", err)
		}
	}
	for _, p := range []string{pinPath, caPath} {
		if p == keep || inUse != "" && sameFile(p, inUse) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove the gateway trust of an earlier enrollment: %w; remove %s by hand", err, p)
		}
	}
	return nil
}

// savedGatewayTrust is how an earlier enrollment of dataDir trusted the
// gateway (saveGatewayTrust): its gateway-ca.pem, else its pinned
// fingerprint; from names the file, "" when there is neither (the system
// roots).
func savedGatewayTrust(dataDir string) (caFile, pin, from string) {
	if p := filepath.Join(dataDir, agent.GatewayCAFile); fileExists(p) {
		return p, "", p
	}
	p := filepath.Join(dataDir, agent.GatewayPinFile)
	if b, err := os.ReadFile(p); err == nil {
		if pin = strings.TrimSpace(string(b)); pin != "" {
			return "", pin, p
		}
	}
	return "", "", ""
}

// agentConfig turns a validated config file into the agent's settings.
func agentConfig(cfg *config.Agent, log *zap.Logger) (agent.Config, error) {
	out := agent.Config{
		Gateway:         cfg.Gateway,
		Token:           cfg.Token,
		DataDir:         cfg.DataDirOrDefault(),
		Name:            cfg.NameOrDefault(),
		Connections:     cfg.ConnectionsOrDefault(),
		Keepalive:       cfg.KeepaliveOrDefault(),
		Allow:           cfg.Allow,
		Transport:       cfg.TransportOrDefault(),
		Proxy:           cfg.Proxy,
		ProxyEnv:        httpproxy.FromEnvironment(),
		GatewayCAFile:   cfg.GatewayCAFile,
		VerifyAssertion: cfg.VerifyAssertion,
		Metrics:         cfg.MetricsAddr != "",
		Log:             log,
	}
	// Trust for the tunnel certificate: gateway_ca_file, else what
	// `agent enroll` saved in data_dir, else the system roots.
	caFile, pin := cfg.GatewayCAFile, ""
	if caFile == "" {
		caFile, pin, _ = savedGatewayTrust(out.DataDir)
	}
	tc, err := gatewayTrust(cfg.Gateway, caFile, pin)
	if err != nil {
		if caFile == cfg.GatewayCAFile && caFile != "" {
			return out, cfg.FileError("gateway_ca_file", err)
		}
		return out, fmt.Errorf("gateway trust in data_dir: %w", err)
	}
	out.TLS = tc
	for i, b := range cfg.BackendTLS {
		// Read ca_file here, as gateway_ca_file above, so that a missing or
		// unusable file is reported at its setting (file, line, key, and
		// the working directory of a relative path), not as "backend tls
		// profile N" without a line.
		if b.CAFile != "" {
			if err := checkCAFile(b.CAFile); err != nil {
				return out, cfg.FileError(fmt.Sprintf("backend_tls[%d].ca_file", i), err)
			}
		}
		out.BackendTLS = append(out.BackendTLS, agent.BackendTLS{
			Hosts: b.Hosts, CAFile: b.CAFile, InsecureSkipVerify: b.InsecureSkipVerify, ServerName: b.ServerName,
		})
	}
	return out, nil
}

// checkCAFile reports a CA file that cannot be read or holds no PEM
// certificate.
func checkCAFile(name string) error {
	pem, err := os.ReadFile(name)
	if err != nil {
		return err // an *fs.PathError names the file
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: no PEM certificate in it", name)
	}
	return nil
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
		return nil, cfg.SettingError("metrics_addr", fmt.Errorf("%w; choose a free host:port, or leave metrics_addr empty "+
			"to serve no metrics", err))
	}
	mux := http.NewServeMux()
	// No token, like the gateway's /metrics: guarded against a web page
	// that rebinds its name to this loopback listener (promserve.RebindingGuard).
	hostname, _ := os.Hostname()
	mux.Handle("GET /metrics", promserve.RebindingGuard(a.MetricsHandler(), hostname, func(r *http.Request, port string) {
		log.Warn("metrics listener: a request over loopback named another host; refused (a guard against DNS "+
			"rebinding; only the first is logged). If it is your metrics scraper, have it scrape 127.0.0.1:"+port+
			" or localhost:"+port, zap.String("host", r.Host))
	}))
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

// sameFile reports whether a and b name one existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
