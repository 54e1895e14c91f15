package bench

// Reference paths (Config.References): what any relay with this process
// topology costs at the least, measured in the same alternating rounds as
// direct and relay, each with its ratio to direct.
//
//	tcp-forward   harness → forwarder A → forwarder B → backend
//	              Two processes that copy bytes (io.Copy each way, the end
//	              passed on as a half-close), a new TCP connection through
//	              the chain for every client connection; nothing parsed, no
//	              multiplexing, no TLS: the cost of the relay's two extra
//	              process hops alone. A stands where the gateway is, B where
//	              the agent is (their figures fill those columns).
//	tls-forward   harness → forwarder A → TLS → forwarder B → backend
//	              tcp-forward with TLS 1.3 between A and B, as between
//	              gateway and agent (the same record batching, one write(2)
//	              per Write): the cost of the hops plus encryption, still
//	              nothing parsed and no multiplexing. Bytes now pass through
//	              each process (no splice), as they must for any relay that
//	              encrypts its tunnel. The floor for the relay's bulk paths.
//	stdlib-proxy  harness → net/http/httputil.ReverseProxy → backend
//	              One standard-library reverse-proxy hop, its connections to
//	              the backend pooled (the gateway column).
//
// All carry every scenario: the forwarders carry any bytes, and the
// ReverseProxy streams server-sent events and upgrades WebSockets. With
// link emulation, the hop that crosses the network on the relay path goes
// through a link of the same shape: forwarder A to B, and the proxy to the
// backend (the one hop it has besides the client's).

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/tunnel/tlsbatch"
)

// Reference names (Config.References) and the paths they add.
const (
	ReferenceTCP    = "tcp"
	ReferenceTLS    = "tls"
	ReferenceStdlib = "stdlib"

	PathTCPForward  = "tcp-forward"
	PathTLSForward  = "tls-forward"
	PathStdlibProxy = "stdlib-proxy"
)

// References lists the reference paths there are, in the order they run.
var References = []string{ReferenceTCP, ReferenceTLS, ReferenceStdlib}

// Roles of the reference paths' processes.
const (
	RoleForwarderA    = "forwarder-a"     // tcp-forward: where the gateway is
	RoleForwarderB    = "forwarder-b"     // tcp-forward: where the agent is
	RoleTLSForwarderA = "tls-forwarder-a" // tls-forward: where the gateway is (TLS client)
	RoleTLSForwarderB = "tls-forwarder-b" // tls-forward: where the agent is (TLS server)
	RoleStdlibProxy   = "stdlib-proxy"    // stdlib-proxy
)

// proxyDialTimeout bounds the stdlib proxy's dial of the backend.
const proxyDialTimeout = 5 * time.Second

// references resolves the configured reference names: known, each once,
// in the order of References.
func (c *Config) references() ([]string, error) {
	want := make(map[string]bool)
	for _, n := range c.References {
		n = strings.TrimSpace(n)
		if !slices.Contains(References, n) {
			return nil, fmt.Errorf("bench: unknown reference %q (have %s)", n, strings.Join(References, ", "))
		}
		want[n] = true
	}
	out := []string{}
	for _, n := range References {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// startReferences starts the configured reference paths in front of the
// backend at backend (host:port) and adds them to st.paths.
func (st *stack) startReferences(ctx context.Context, cfg *Config, backend string) error {
	refs, err := cfg.references()
	if err != nil {
		return err
	}
	for _, ref := range refs {
		switch ref {
		case ReferenceTCP:
			b, err := st.start(ctx, cfg, RoleForwarderB, roleSpec{Forward: backend})
			if err != nil {
				return err
			}
			next, err := st.overLink(cfg, b.Addr)
			if err != nil {
				return err
			}
			a, err := st.start(ctx, cfg, RoleForwarderA, roleSpec{Forward: next})
			if err != nil {
				return err
			}
			st.paths = append(st.paths, path{name: PathTCPForward, base: "http://" + a.Addr})
		case ReferenceTLS:
			dir, err := st.tempDir("sallyport-bench-tls-")
			if err != nil {
				return err
			}
			b, err := st.start(ctx, cfg, RoleTLSForwarderB, roleSpec{Forward: backend, Dir: dir})
			if err != nil {
				return err
			}
			next, err := st.overLink(cfg, b.Addr)
			if err != nil {
				return err
			}
			a, err := st.start(ctx, cfg, RoleTLSForwarderA, roleSpec{Forward: next, CAFile: b.CAFile})
			if err != nil {
				return err
			}
			st.paths = append(st.paths, path{name: PathTLSForward, base: "http://" + a.Addr})
		case ReferenceStdlib:
			next, err := st.overLink(cfg, backend)
			if err != nil {
				return err
			}
			p, err := st.start(ctx, cfg, RoleStdlibProxy, roleSpec{
				Backend: "http://" + next, Conns: max(cfg.concurrency(), cfg.transferConcurrency()),
			})
			if err != nil {
				return err
			}
			st.paths = append(st.paths, path{name: PathStdlibProxy, base: "http://" + p.Addr})
		}
	}
	return nil
}

// runForwarder is forwarder A or B of the tcp-forward or tls-forward path
// (role): it passes every connection on to spec.Forward until ctx ends. The
// TLS server (B) makes its certificate in spec.Dir and reports it; the TLS
// client (A) trusts spec.CAFile.
func runForwarder(ctx context.Context, role string, spec roleSpec, ready func(roleReady)) error {
	f := &forwarder{target: spec.Forward, copy: plainCopy}
	var caFile string
	switch role {
	case RoleTLSForwarderB:
		cert, file, _, err := selfsigned.LoadOrCreate(spec.Dir, nil)
		if err != nil {
			return fmt.Errorf("bench tls forwarder: %w", err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
		f.wrapIn = func(c net.Conn) net.Conn { return tlsbatch.Server(c, cfg) }
		caFile = file
	case RoleTLSForwarderA:
		roots, err := loadRoots(spec.CAFile)
		if err != nil {
			return fmt.Errorf("bench tls forwarder: %w", err)
		}
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}
		f.wrapOut = func(c net.Conn) net.Conn { return tlsbatch.Client(c, cfg) }
	}
	if _, err := f.start(); err != nil {
		return fmt.Errorf("bench forwarder: %w", err)
	}
	ready(roleReady{Addr: f.addr(), CAFile: caFile})
	<-ctx.Done()
	f.close()
	return nil
}

// runStdlibProxy is the stdlib-proxy path: an httputil.ReverseProxy to
// spec.Backend, set up as a plain deployment would set it up (the target's
// Host, X-Forwarded-* headers, pooled keep-alive connections), until ctx
// ends.
func runStdlibProxy(ctx context.Context, spec roleSpec, log *zap.Logger, ready func(roleReady)) error {
	backend, err := url.Parse(spec.Backend)
	if err != nil {
		return fmt.Errorf("bench stdlib-proxy: backend: %w", err)
	}
	tr := &http.Transport{
		Proxy:               nil, // never via a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: proxyDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: max(spec.Conns, http.DefaultMaxIdleConnsPerHost),
		IdleConnTimeout:     90 * time.Second,
		// Bodies pass as the backend sends them: no gzip asked for on the
		// client's behalf.
		DisableCompression: true,
	}
	defer tr.CloseIdleConnections()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(backend)
			pr.SetXForwarded()
		},
		Transport: tr,
		// Copies cut short at the end of a round end up here, at info.
		ErrorLog: zap.NewStdLog(log),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Debug("stdlib-proxy", zap.String("path", r.URL.Path), zap.Error(err))
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	return serveHTTP(ctx, "127.0.0.1:0", rp, "bench stdlib-proxy", ready)
}
