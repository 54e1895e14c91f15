//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
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
			// First, before anything slow (reading the config, opening the
			// store, creating certificates): a SIGHUP's default action
			// terminates the process.
			hup := catchHangup()
			return runFromConfig(g, path, config.LoadGateway, func(ctx context.Context, cfg *config.Gateway, log *zap.Logger) error {
				// The files the config names are read before the store is
				// opened: a start that fails on one of them (a relative path
				// from the wrong working directory) leaves no store behind.
				if err := checkNamedFiles(cfg); err != nil {
					return err
				}
				opened := noteDataDir(cfg, log)
				st, err := openStore(ctx, cfg)
				if err != nil {
					return err
				}
				defer st.Close()
				if cfg.Store.PostgresKey() == "" { // opened says nothing on PostgreSQL: no query for it
					opened(hasCA(ctx, st))
				}
				var shared secretStore // replicas on PostgreSQL share the cookie key there
				if cfg.Store.PostgresKey() != "" {
					shared = st
				}
				settings, err := gatewayConfigShared(cfg, log, shared)
				if err != nil {
					return err
				}
				settings.Store = st
				gw, err := gateway.New(settings)
				if err != nil {
					return err
				}
				if err := listen(gw, cfg); err != nil {
					return err
				}
				stopReload := reloadOnHangup(ctx, gw, path, cfg, log, hup)
				defer stopReload() // after Serve: a SIGHUP while it drains must not kill the gateway
				return gw.Serve(ctx)
			})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "gateway config file (YAML)")
	cmd.AddCommand(newCACmd())
	return cmd
}

// noteDataDir makes a relative data_dir visible: it is taken from the
// working directory, so a gateway started from another directory (by
// systemd, say) silently created a new store, connector CA and tunnel
// certificate there, and refused every agent enrolled before. opened,
// called once the store is open with whether it holds a connector CA yet,
// logs a SQLite store without one (the gateway is about to create it): a
// warning, with the absolute path and the working directory, when data_dir
// is relative (the case above, or a first start), an info line otherwise.
// The store's CA decides, not whether sallyport.db existed: a start that
// failed after creating the file (a missing token file) left one without
// a CA. A relative data_dir whose store has its CA is named at info only:
// the default ./data/gateway is relative, and a gateway started as usual
// must not warn at every start.
func noteDataDir(cfg *config.Gateway, log *zap.Logger) (opened func(hasCA bool)) {
	if cfg.Store.PostgresKey() != "" {
		return func(bool) {}
	}
	dir := cfg.DataDirOrDefault()
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	relative := !filepath.IsAbs(dir)
	var where []zap.Field
	if relative {
		wd, _ := os.Getwd()
		where = []zap.Field{zap.String("data_dir", abs), zap.String("working_directory", wd)}
	}
	return func(hasCA bool) {
		if hasCA {
			if relative {
				log.Info("data_dir is a relative path, taken from the working directory", where...)
			}
			warnTunnelCertGone(cfg, abs, log)
			return
		}
		fields := append(where, zap.String("file", filepath.Join(abs, store.FileName)))
		if !relative {
			log.Info("new store in data_dir: it holds no connector CA yet, so the gateway creates one (agents "+
				"enrolled with another store are refused)", fields...)
			return
		}
		log.Warn("new store in data_dir, a relative path taken from the working directory, not from the config "+
			"file's directory: it holds no connector CA yet, so the gateway creates one (agents enrolled with another "+
			"store are refused); if the gateway ran before from another directory, stop it and set data_dir to that "+
			"store's absolute path (under systemd, or set WorkingDirectory=)", fields...)
	}
}

// warnTunnelCertGone warns when data_dir holds a store with its connector
// CA but neither file of the self-signed tunnel certificate: the gateway
// is about to create a new one, which agents that pinned the previous one
// (agent enroll --gateway-fingerprint) or trust its tunnel-cert.pem
// (gateway_ca_file) refuse. That is what restoring only sallyport.db (the
// README's sqlite3 .backup) into a new data_dir did, with an info line.
func warnTunnelCertGone(cfg *config.Gateway, dir string, log *zap.Logger) {
	if cfg.Tunnel.TLS.Enabled() {
		return
	}
	for _, f := range []string{selfsigned.CertFile, selfsigned.KeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			return // there (or unreadable: the start reports it)
		}
	}
	log.Warn("data_dir holds a store with its connector CA but no tunnel certificate: the gateway creates a new "+
		"self-signed one, and agents that pinned the previous one (agent enroll --gateway-fingerprint) or trust its "+
		"tunnel-cert.pem (gateway_ca_file) refuse it; if data_dir was restored from a backup, stop the gateway and "+
		"restore tunnel-cert.pem and tunnel-key.pem too, else give the agents the new tunnel-cert.pem or enroll them again",
		zap.String("data_dir", dir))
}

// hasCA reports whether the store holds a connector CA. A store that
// cannot say counts as having one: the gateway's start reports the error.
func hasCA(ctx context.Context, st *store.DB) bool {
	cas, err := st.CAs(ctx)
	return err != nil || len(cas) > 0
}

// checkNamedFiles reads the files the config names (admin.token_file,
// public.tls, tunnel.tls, store.postgres_file, the client secrets of the
// OIDC providers that apps use) and reports the first that cannot be read
// at its setting, before anything is created in data_dir.
func checkNamedFiles(cfg *config.Gateway) error {
	if _, err := adminToken(cfg.Admin.TokenFile); err != nil {
		return cfg.FileError("admin.token_file", err)
	}
	for _, f := range []struct {
		key   string
		files config.TLSFiles
	}{{"public.tls", cfg.Public.TLS}, {"tunnel.tls", cfg.Tunnel.TLS}} {
		if f.files.Enabled() {
			if _, err := tls.LoadX509KeyPair(f.files.CertFile, f.files.KeyFile); err != nil {
				return cfg.FileError(f.key, err)
			}
		}
	}
	if key := cfg.Store.PostgresKey(); key != "" {
		if _, err := postgresDSN(&cfg.Store); err != nil {
			return cfg.FileError(key, err)
		}
	}
	if policies, err := appPolicies(cfg); err != nil || len(policies) == 0 {
		return nil // a bad policy is reported where the apps are built
	}
	for i := range cfg.OIDC.Providers {
		p := &cfg.OIDC.Providers[i]
		if _, err := clientSecret(p); err != nil {
			key := "client_secret_env"
			if p.ClientSecretFile != "" {
				key = "client_secret_file"
			}
			return cfg.FileError(fmt.Sprintf("oidc.providers[%d].%s", i, key), err)
		}
	}
	return nil
}

// listen binds the gateway's listeners; a listener that cannot be opened
// is reported at its setting (public.addr, tunnel.addr, admin.addr) with
// what to do.
func listen(gw *gateway.Gateway, cfg *config.Gateway) error {
	err := gw.Listen()
	var le *gateway.ListenError
	if !errors.As(err, &le) {
		return err
	}
	var hint string
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = "another process uses the port (or another listener of this gateway); stop it or choose another port"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = "the host is not an address of this machine; write one of its addresses, or leave the host out (:PORT) to listen on all"
	case errors.Is(err, syscall.EACCES):
		hint = "ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port from 1024 up"
	case errors.As(err, &dnsErr):
		hint = "the host name does not resolve; write an IP address of this machine, or leave the host out (:PORT)"
	default:
		hint = "check the address"
	}
	err = fmt.Errorf("%w; %s", le.Err, hint)
	if !strings.Contains(le.Err.Error(), le.Addr) {
		err = fmt.Errorf("%s: %w", le.Addr, err) // a lookup error names the host alone
	}
	return cfg.SettingError(le.Listener+".addr", err)
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
	return readTokenFile(file)
}

// readTokenFile reads an admin token from file, trimmed; an empty one is
// an error. Errors do not name the setting or flag: the callers do.
func readTokenFile(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s is empty; put the admin token in it", file)
	}
	return t, nil
}

// minAdminToken is the length below which an admin token is warned about:
// the README's recipe makes 44 characters.
const minAdminToken = 16

// warnWeakAdminToken warns about an admin token that is short, or whose
// file other users may read (on Unix): the token rules every connector.
func warnWeakAdminToken(file, tok string, log *zap.Logger) {
	if tok == "" {
		return
	}
	if n := len(tok); n < minAdminToken {
		log.Warn(fmt.Sprintf("the admin token is only %d characters long; use a long random one "+
			"(head -c 32 /dev/urandom | base64)", n))
	}
	if file == "" || os.Getenv("SALLYPORT_ADMIN_TOKEN") != "" || runtime.GOOS == "windows" {
		return
	}
	if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn(fmt.Sprintf("the admin token file %s can be read by other users (mode %04o); chmod 600 it", file, fi.Mode().Perm()))
	}
}

// warnWeakEnrollTokens warns about each of the config's enrollment tokens
// shorter than minAdminToken: they are reusable and never expire, so a
// guessed one enrolls agents for good. Only a warning, so that old configs
// keep working.
func warnWeakEnrollTokens(tokens []config.Token, log *zap.Logger) {
	for i, t := range tokens {
		if n := len(t.Token); n < minAdminToken {
			log.Warn(fmt.Sprintf("tunnel.tokens[%d] is only %d characters long, and config tokens are reusable and never "+
				"expire: anyone who guesses it can enroll agents in group %q; use a long random one (head -c 32 "+
				"/dev/urandom | base64), or single-use tokens from sallyport token create", i, n, t.Group))
		}
	}
}

// warnRemoteAdmin warns when an admin token is set and admin.addr is not
// a loopback address: the admin listener speaks plain HTTP, so the token,
// and every enrollment token that `sallyport token create` receives, cross
// the network unencrypted. Only a warning: a listener on a private network
// (a Kubernetes pod scraped by Prometheus, a management VLAN) is a setup
// the operator chose. Without a token the API refuses every call, and
// /metrics on a private address is documented as such.
func warnRemoteAdmin(addr, tok string, log *zap.Logger) {
	if tok == "" {
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || loopbackHost(host) {
		return // a bad address fails at listen, with its own error
	}
	where := "admin.addr " + addr + " is not a loopback address"
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		where = "admin.addr " + addr + " listens on every address of this machine"
	}
	log.Warn(where + ", and the admin listener speaks plain HTTP: the admin token, and the enrollment tokens " +
		"that `sallyport token create` receives, cross the network unencrypted, readable by anyone on the path. " +
		"Set admin.addr to 127.0.0.1:" + port + " and run the admin commands on this machine or through " +
		"`ssh -L " + port + ":127.0.0.1:" + port + " HOST`, or put a TLS proxy on this machine in front of it; " +
		"otherwise keep that network private")
}

// loopbackHost reports whether a listen address's host is a loopback
// address, localhost, or a name that resolves to loopback addresses only
// (Debian's 127.0.1.1 for the host name). A name that does not resolve
// counts as loopback: the listener fails to open, and says why.
func loopbackHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().IsLoopback()
	}
	if h == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
	if err != nil {
		return true
	}
	for _, ip := range ips {
		if !ip.Unmap().IsLoopback() {
			return false
		}
	}
	return true
}

// gatewayConfig turns a validated config file into the gateway's settings:
// it loads certificates (or creates the self-signed tunnel certificate) and
// refuses settings this build does not implement yet.
func gatewayConfig(cfg *config.Gateway, log *zap.Logger) (gateway.Config, error) {
	return gatewayConfigShared(cfg, log, nil)
}

// gatewayConfigShared is gatewayConfig whose session cookie key comes from
// shared when it is not nil (see sessionKey).
func gatewayConfigShared(cfg *config.Gateway, log *zap.Logger, shared secretStore) (gateway.Config, error) {
	out := gateway.Config{
		PublicAddr:           cfg.Public.AddrOrDefault(),
		TunnelAddr:           cfg.Tunnel.AddrOrDefault(),
		ShutdownGrace:        cfg.ShutdownGraceOrDefault(),
		ShutdownDelay:        cfg.ShutdownDelay,
		ReadHeaderTimeout:    cfg.Public.ReadHeaderTimeoutOrDefault(),
		IdleTimeout:          cfg.Public.IdleTimeoutOrDefault(),
		SendTimeout:          cfg.Public.SendTimeoutOrDefault(),
		MaxConnections:       cfg.Public.MaxConnections,
		MaxStalledExchanges:  cfg.Public.MaxStalledExchanges,
		MaxHeaderBytes:       cfg.Public.MaxHeaderBytesOrDefault(),
		TrustedProxies:       cfg.Public.TrustedProxyPrefixes(),
		MaxStreamsPerSession: cfg.Tunnel.MaxStreamsPerSessionOrDefault(),
		Keepalive:            cfg.Tunnel.KeepaliveOrDefault(),
		CertLifetime:         cfg.Tunnel.CertLifetimeOrDefault(),
		AdminAddr:            cfg.Admin.AddrOrDefault(),
		Log:                  log,
	}
	if shared == nil {
		// No replica shares this gateway's store, so its agents have
		// nowhere to move when it stops: waiting for them would only
		// keep the public listener closed longer during a restart.
		out.AgentMoveWait = -1
	}
	tok, err := adminToken(cfg.Admin.TokenFile)
	if err != nil {
		return out, cfg.FileError("admin.token_file", err)
	}
	out.AdminToken = tok
	warnWeakAdminToken(cfg.Admin.TokenFile, tok, log)
	warnRemoteAdmin(cfg.Admin.AddrOrDefault(), tok, log)
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
	warnWeakEnrollTokens(cfg.Tunnel.Tokens, log)
	svc, policies, err := preauthService(cfg, log, shared)
	if err != nil {
		return out, err
	}
	out.Preauth = svc
	out.Routes, err = appRoutes(cfg, policies)
	return out, err
}

// appRoutes turns the config's apps into the gateway's routes, with the
// sign-in policies by app index.
func appRoutes(cfg *config.Gateway, policies map[int]*preauth.Policy) ([]gateway.Route, error) {
	var routes []gateway.Route
	for i := range cfg.Apps {
		app := &cfg.Apps[i]
		u, err := app.BackendURL()
		if err != nil {
			return nil, fmt.Errorf("apps[%d].backend: %w", i, err)
		}
		routes = append(routes, gateway.Route{
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
	return routes, nil
}

// catchHangup catches SIGHUP from now on, for reloadOnHangup: the gateway
// never dies of one. A SIGHUP before reloadOnHangup runs (during start-up)
// waits in the channel and reloads the apps once the gateway is up: the
// file may have changed after start-up read it.
func catchHangup() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

// reloadOnHangup reloads the apps of the config file at path on every
// SIGHUP on hup (see catchHangup) until ctx ends. While the gateway drains
// after ctx ended, a SIGHUP is logged and ignored; stop, called once Serve
// has returned, ignores SIGHUP for the rest of the process's life, so it
// never stops the gateway. Settings other than the apps are compared with
// running, the config the gateway started with, and a warning names those
// that need a restart.
func reloadOnHangup(ctx context.Context, gw *gateway.Gateway, path string, running *config.Gateway, log *zap.Logger, hup chan os.Signal) (stop func()) {
	return onHangups(hup, func() {
		if ctx.Err() != nil {
			log.Warn("SIGHUP ignored: the gateway is stopping, so the apps are not reloaded")
			return
		}
		reloadApps(gw, path, running, log)
	})
}

// reloadApps reads the config file again and publishes its apps. A file
// that does not load, or apps the gateway refuses, change nothing.
func reloadApps(gw *gateway.Gateway, path string, running *config.Gateway, log *zap.Logger) {
	log.Info("reloading the apps", zap.String("config", path))
	next, err := config.LoadGateway(path)
	var routes []gateway.Route
	if err == nil {
		var policies map[int]*preauth.Policy
		if policies, err = appPolicies(next); err == nil {
			routes, err = appRoutes(next, policies)
		}
	}
	if err == nil {
		err = gw.SetRoutes(routes)
	}
	if err != nil {
		fields := []zap.Field{zap.String("config", path), zap.Error(err)}
		if next != nil {
			// An app may need a setting that only a restart applies (a new provider).
			fields = append(fields, zap.Strings("changed_needing_restart", running.ChangedBesidesApps(next)))
		}
		log.Error("config reload failed; the apps published before stay as they were. Fix the file and send SIGHUP again",
			fields...)
		return
	}
	if keys := running.ChangedBesidesApps(next); len(keys) > 0 {
		log.Warn("config reload applies only apps; restart the gateway for the other settings that changed",
			zap.Strings("keys", keys))
	}
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
	fields := []zap.Field{zap.String("file", certPath), zap.String("fingerprint", fp),
		zap.Strings("names", append(cert.Leaf.DNSNames, ipStrings(cert.Leaf.IPAddresses)...)),
		zap.Time("expires", cert.Leaf.NotAfter)}
	if key := cfg.Store.PostgresKey(); key != "" {
		// Replicas share the store, not data_dir: each makes its own.
		log.Warn(key+" is set, so gateway replicas share the store, but tunnel.tls is unset: this replica's "+
			"self-signed tunnel certificate differs from the other replicas', and agents that pin one (agent enroll "+
			"--gateway-fingerprint) or trust one (gateway_ca_file) fail at the others; give every replica the same "+
			"tunnel.tls cert_file and key_file (one certificate for the name agents dial)", fields...)
	} else {
		log.Info("tunnel certificate (self-signed); agents trust it with gateway_ca_file", fields...)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
