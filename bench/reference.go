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
//	stdlib-proxy  harness → net/http/httputil.ReverseProxy → backend
//	              One standard-library reverse-proxy hop, its connections to
//	              the backend pooled (the gateway column).
//
// Both carry every scenario: the forwarders carry any bytes, and the
// ReverseProxy streams server-sent events and upgrades WebSockets. With
// link emulation, the hop that crosses the network on the relay path goes
// through a link of the same shape: forwarder A to B, and the proxy to the
// backend (the one hop it has besides the client's).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Reference names (Config.References) and the paths they add.
const (
	ReferenceTCP    = "tcp"
	ReferenceStdlib = "stdlib"

	PathTCPForward  = "tcp-forward"
	PathStdlibProxy = "stdlib-proxy"
)

// References lists the reference paths there are, in the order they run.
var References = []string{ReferenceTCP, ReferenceStdlib}

// Roles of the reference paths' processes.
const (
	RoleForwarderA  = "forwarder-a"  // tcp-forward: where the gateway is
	RoleForwarderB  = "forwarder-b"  // tcp-forward: where the agent is
	RoleStdlibProxy = "stdlib-proxy" // stdlib-proxy
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

// runForwarder is forwarder A or B of the tcp-forward path: it passes every
// connection on to spec.Forward until ctx ends.
func runForwarder(ctx context.Context, spec roleSpec, ready func(roleReady)) error {
	f, err := startForwarder(spec.Forward, plainCopy)
	if err != nil {
		return fmt.Errorf("bench forwarder: %w", err)
	}
	ready(roleReady{Addr: f.addr()})
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
