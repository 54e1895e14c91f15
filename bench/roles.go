package bench

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/selfsigned"
)

// Roles: the three parts of the relay stack the harness starts (the
// reference paths add theirs, see reference.go).
const (
	RoleBackend = "backend"
	RoleGateway = "gateway"
	RoleAgent   = "agent"
)

// The app the harness publishes, and the credential its agent uses.
const (
	benchHost  = "bench.sallyport.test"
	benchGroup = "bench"
)

// stopGrace bounds each role's graceful stop.
const stopGrace = 2 * time.Second

// agentSessions is how many tunnel sessions the bench agent keeps (the
// agent's default); it reports ready once all are up.
const agentSessions = 2

// roleSpec tells a role what to run. A child process reads it as one JSON
// line on stdin.
type roleSpec struct {
	// Addr is the backend's listen address (empty → 127.0.0.1:0).
	Addr string `json:"addr,omitempty"`
	// Backend is the gateway's app backend URL.
	Backend string `json:"backend,omitempty"`
	// Token is the tunnel credential (gateway and agent).
	Token string `json:"token,omitempty"`
	// Dir is where the gateway writes its self-signed tunnel certificate.
	Dir string `json:"dir,omitempty"`
	// Gateway is the tunnel address the agent dials.
	Gateway string `json:"gateway,omitempty"`
	// CAFile is the gateway certificate the agent trusts.
	CAFile string `json:"ca_file,omitempty"`
	// Allow is the agent's backend allow list.
	Allow []string `json:"allow,omitempty"`
	// Transport is the agent's tunnel transport (empty → gRPC).
	Transport string `json:"transport,omitempty"`
	// Forward is where a forwarder passes its connections (host:port).
	Forward string `json:"forward,omitempty"`
	// Conns is how many idle connections to the backend the stdlib proxy
	// keeps: one per worker of the load.
	Conns int `json:"conns,omitempty"`
	// Procs, when above 0, is the child process's GOMAXPROCS
	// (Config.RelayProcs).
	Procs int `json:"procs,omitempty"`
}

// roleReady is what a role reports once it serves. A child process writes
// it as one JSON line on stdout.
type roleReady struct {
	Addr   string `json:"addr,omitempty"`    // backend, or the gateway's public listener
	Tunnel string `json:"tunnel,omitempty"`  // the gateway's tunnel listener
	CAFile string `json:"ca_file,omitempty"` // the gateway's tunnel certificate
	Error  string `json:"error,omitempty"`   // the role could not start
	Procs  int    `json:"procs,omitempty"`   // a child's GOMAXPROCS
}

// runRole runs role until ctx ends; ready is called once it serves.
func runRole(ctx context.Context, role string, spec roleSpec, log *zap.Logger, ready func(roleReady)) error {
	switch role {
	case RoleBackend:
		return runBackend(ctx, spec.Addr, ready)
	case RoleGateway:
		return runGateway(ctx, spec, log, ready)
	case RoleAgent:
		return runAgent(ctx, spec, log, ready)
	case RoleForwarderA, RoleForwarderB, RoleTLSForwarderA, RoleTLSForwarderB:
		return runForwarder(ctx, role, spec, ready)
	case RoleStdlibProxy:
		return runStdlibProxy(ctx, spec, log, ready)
	}
	return fmt.Errorf("bench: unknown role %q", role)
}

// ServeBackend serves BackendHandler on addr until ctx ends; ready gets the
// bound address. It is what a relay under test (Config.Target) fronts.
func ServeBackend(ctx context.Context, addr string, ready func(addr string)) error {
	return runBackend(ctx, addr, func(r roleReady) { ready(r.Addr) })
}

func runBackend(ctx context.Context, addr string, ready func(roleReady)) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return serveHTTP(ctx, addr, BackendHandler(), "bench backend", ready)
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully
// within stopGrace; ready gets the bound address. Errors start with name.
func serveHTTP(ctx context.Context, addr string, h http.Handler, name string, ready func(roleReady)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	ready(roleReady{Addr: ln.Addr().String()})
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), stopGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

func runGateway(ctx context.Context, spec roleSpec, log *zap.Logger, ready func(roleReady)) error {
	backend, err := url.Parse(spec.Backend)
	if err != nil {
		return fmt.Errorf("bench gateway: backend: %w", err)
	}
	cert, caFile, _, err := selfsigned.LoadOrCreate(spec.Dir, nil)
	if err != nil {
		return fmt.Errorf("bench gateway: %w", err)
	}
	gw, err := gateway.New(gateway.Config{
		PublicAddr:    "127.0.0.1:0",
		TunnelAddr:    "127.0.0.1:0",
		TunnelTLS:     &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Tokens:        []gateway.Token{{Token: spec.Token, Group: benchGroup}},
		Routes:        []gateway.Route{{App: "bench", Hosts: []string{benchHost}, Backend: backend, Group: benchGroup}},
		ShutdownGrace: stopGrace,
		// The bench's agents reach no other gateway: their sessions
		// cannot move, so do not hold the stop for them.
		AgentMoveWait: 100 * time.Millisecond,
		Log:           log,
	})
	if err != nil {
		return err
	}
	if err := gw.Listen(); err != nil {
		return err
	}
	ready(roleReady{Addr: gw.PublicAddr().String(), Tunnel: gw.TunnelAddr().String(), CAFile: caFile})
	return gw.Serve(ctx)
}

func runAgent(ctx context.Context, spec roleSpec, log *zap.Logger, ready func(roleReady)) error {
	if err := agentTransport(spec.Transport); err != nil {
		return err
	}
	roots, err := loadRoots(spec.CAFile)
	if err != nil {
		return fmt.Errorf("bench agent: %w", err)
	}
	a, err := agent.New(agent.Config{
		Gateway:     spec.Gateway,
		TLS:         &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		Token:       spec.Token,
		Name:        "bench-agent",
		Connections: agentSessions,
		Transport:   cmp.Or(spec.Transport, TransportGRPC),
		Allow:       spec.Allow,
		Backoff:     agent.Backoff{Min: 50 * time.Millisecond, Max: time.Second},
		DrainGrace:  stopGrace,
		Log:         log,
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Ready once every session is up, so that what is measured idle
	// is the agent as configured.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(a.Sessions()) < agentSessions {
		select {
		case <-tick.C:
		case err := <-done:
			if err == nil {
				err = errors.New("bench agent: stopped before connecting")
			}
			return err
		}
	}
	tick.Stop()
	ready(roleReady{})
	return <-done
}

// loadRoots reads the certificates of the PEM file name into a pool.
func loadRoots(name string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", name)
	}
	return roots, nil
}
