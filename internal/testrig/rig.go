// Package testrig starts an in-process gateway and agents on loopback for
// end-to-end tests: the same code paths as `sallyport gateway` and
// `sallyport agent`, with self-signed tunnel certificates in a temp dir.
//
// Rig agents authenticate like real ones: each enrolls with Token (a
// pre-provisioned enrollment token of the gateway) when it starts and opens
// its sessions with mutual TLS. Without a DataDir the certificate stays in
// memory; the gateway's store is in memory unless Options.Gateway sets one.
package testrig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/shortskip"
)

// Token and Group are the enrollment token (a pre-provisioned, reusable
// one, as in tunnel.tokens) every rig agent enrolls with unless told
// otherwise, and the group it grants.
const (
	Token = "rig-token"
	Group = "default"
)

// Options shape a rig. The zero value gives a gateway with no apps.
type Options struct {
	// Routes are the gateway's apps; Group defaults to "default".
	Routes []gateway.Route
	// Gateway, if set, edits the gateway config before start.
	Gateway func(*gateway.Config)
	// Logs: nil → a zaptest logger at warn level (debug with
	// SALLYPORT_TEST_DEBUG=1).
	Log *zap.Logger
	// Transport of the rig's agents: "grpc", "quic", "yamux" or "auto".
	// Empty → DefaultTransport().
	Transport string
}

// Transports lists the tunnel transports that tests running over each
// loop over: every one, or only SALLYPORT_TEST_TRANSPORT when it is set.
// `make test` runs the end-to-end suite once without it (with -race, so
// each loop covers all three) and then once per other transport, where
// looping over all three again would run the same subtests twice more.
var Transports = transports()

func transports() []string {
	if t := os.Getenv("SALLYPORT_TEST_TRANSPORT"); t != "" {
		return []string{t}
	}
	return []string{"grpc", "quic", "yamux"}
}

// DefaultTransport is the transport of rig agents when the test does not
// choose one: SALLYPORT_TEST_TRANSPORT if set (`make test` runs the
// end-to-end suite once per transport this way), else "grpc".
func DefaultTransport() string {
	if t := os.Getenv("SALLYPORT_TEST_TRANSPORT"); t != "" {
		return t
	}
	return "grpc"
}

// Rig is a running gateway plus the agents started on it.
type Rig struct {
	t      testing.TB
	cfg    gateway.Config // as the gateway was started; Restart reuses it
	G      *gateway.Gateway
	URL    string // public base URL, http://127.0.0.1:PORT
	Tunnel string // tunnel address
	Roots  *x509.CertPool
	Log    *zap.Logger
	// Transport of the rig's agents (see Options.Transport).
	Transport string
	cancelG   context.CancelFunc
	gDone     chan error

	mu     sync.Mutex
	agents []*Agent
}

// New starts a gateway; it stops when the test ends.
func New(t testing.TB, o Options) *Rig {
	t.Helper()
	log := o.Log
	if log == nil {
		level := zap.WarnLevel
		if os.Getenv("SALLYPORT_TEST_DEBUG") != "" {
			level = zap.DebugLevel
		}
		log = zaptest.NewLogger(t, zaptest.Level(level))
	}
	cert, certPath, _, err := selfsigned.LoadOrCreate(t.TempDir(), []string{"localhost"})
	if err != nil {
		t.Fatalf("tunnel certificate: %v", err)
	}
	pem, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	routes := make([]gateway.Route, len(o.Routes))
	for i, r := range o.Routes {
		if r.Group == "" {
			r.Group = Group
		}
		routes[i] = r
	}
	cfg := gateway.Config{
		PublicAddr:    "127.0.0.1:0",
		TunnelAddr:    "127.0.0.1:0",
		TunnelTLS:     &tls.Config{Certificates: []tls.Certificate{cert}},
		Tokens:        []gateway.Token{{Token: Token, Group: Group}},
		Routes:        routes,
		ShutdownGrace: 5 * time.Second,
		// Rig agents reach no other replica: a stopping gateway closes
		// their sessions soon.
		AgentMoveWait: 200 * time.Millisecond,
		Log:           log.Named("gateway"),
	}
	if o.Gateway != nil {
		o.Gateway(&cfg)
	}
	transport := o.Transport
	if transport == "" {
		transport = DefaultTransport()
	}
	r := &Rig{t: t, cfg: cfg, Roots: roots, Log: log, Transport: transport}
	r.start()
	t.Cleanup(r.Close)
	return r
}

// start starts a gateway with r.cfg.
func (r *Rig) start() {
	r.t.Helper()
	g, err := gateway.New(r.cfg)
	if err != nil {
		r.t.Fatalf("gateway: %v", err)
	}
	if err := g.Listen(); err != nil {
		r.t.Fatalf("gateway: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.G, r.cancelG, r.gDone = g, cancel, make(chan error, 1)
	r.Tunnel = g.TunnelAddr().String()
	r.URL = "http://" + g.PublicAddr().String()
	go func() { r.gDone <- g.Serve(ctx) }()
}

// Restart stops the gateway (gracefully) and starts a new one with the same
// config on the same addresses; reopen, if not nil, runs in between and
// its store replaces the config's Store (a reopened database, as after a
// process restart).
func (r *Rig) Restart(reopen func() gateway.Store) {
	r.t.Helper()
	if err := r.StopGateway(); err != nil {
		r.t.Fatalf("gateway: %v", err)
	}
	var store gateway.Store
	if reopen != nil {
		store = reopen()
	}
	r.StartGateway(store)
}

// StartGateway starts a gateway again after StopGateway, with the same
// config on the same addresses; store, if not nil, replaces the Store.
func (r *Rig) StartGateway(store gateway.Store) {
	r.t.Helper()
	r.cfg.PublicAddr = r.G.PublicAddr().String()
	r.cfg.TunnelAddr = r.Tunnel
	if a := r.G.AdminAddr(); a != nil {
		r.cfg.AdminAddr = a.String()
	}
	if store != nil {
		r.cfg.Store = store
	}
	r.start()
}

// TunnelTLS is the gateway's tunnel TLS config, for a second gateway
// standing for another replica behind the same name.
func (r *Rig) TunnelTLS() *tls.Config { return r.cfg.TunnelTLS }

// AdminURL is the base URL of the admin API (when Options.Gateway set
// AdminAddr).
func (r *Rig) AdminURL() string {
	a := r.G.AdminAddr()
	if a == nil {
		r.t.Fatal("the rig gateway has no admin listener; set AdminAddr in Options.Gateway")
	}
	return "http://" + a.String()
}

// Close stops the agents, then the gateway.
func (r *Rig) Close() {
	r.mu.Lock()
	agents := r.agents
	r.agents = nil
	r.mu.Unlock()
	for _, a := range agents {
		a.Stop()
	}
	if r.cancelG != nil {
		r.cancelG()
		if err := <-r.gDone; err != nil {
			r.t.Errorf("gateway: %v", err)
		}
		r.cancelG = nil
	}
}

// StopGateway shuts the gateway down (graceful, like SIGTERM) and returns
// Serve's error.
func (r *Rig) StopGateway() error {
	r.cancelG()
	r.cancelG = nil
	return <-r.gDone
}

// Agent is a running rig agent.
type Agent struct {
	A      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned
	err    error         // Run's error, written before done is closed
}

// Stop drains the agent (like SIGTERM) and waits for it to exit.
func (a *Agent) Stop() {
	a.cancel()
	<-a.done
}

// Exited waits up to 10s for the agent to stop by itself and returns Run's
// error.
func (a *Agent) Exited(t testing.TB) error {
	t.Helper()
	select {
	case <-a.done:
		return a.err
	case <-time.After(10 * time.Second):
		t.Fatal("the agent is still running")
		return nil
	}
}

// AgentConfig is the default config of a rig agent: one session, allowed to
// reach every loopback port.
func (r *Rig) AgentConfig() agent.Config {
	return agent.Config{
		Gateway:     r.Tunnel,
		TLS:         &tls.Config{RootCAs: r.Roots, ServerName: "localhost"},
		Token:       Token,
		Name:        "rig-agent",
		Transport:   r.Transport,
		Connections: 1,
		Allow:       []string{"127.0.0.1:*", "localhost:*", "[::1]:*"},
		Backoff:     agent.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		DrainGrace:  5 * time.Second,
		Log:         r.Log.Named("agent"),
	}
}

// StartAgent starts an agent with the default config edited by edit (may be
// nil) and waits until its sessions are registered with the gateway.
func (r *Rig) StartAgent(edit func(*agent.Config)) *Agent {
	r.t.Helper()
	cfg := r.AgentConfig()
	if edit != nil {
		edit(&cfg)
	}
	if cfg.Gateway != r.Tunnel && cfg.Token != "" && cfg.DataDir == "" && cfg.Credentials == nil {
		// The agent reaches the gateway through a test relay that may
		// carry only its transport (UDP for QUIC); enrollment is a gRPC
		// call over TCP, so enroll at the gateway itself.
		creds, err := agent.Enroll(context.Background(), agent.EnrollConfig{
			Gateway: r.Tunnel, TLS: &tls.Config{RootCAs: r.Roots, ServerName: "localhost"}, Token: cfg.Token, Name: cfg.Name,
		})
		if err != nil {
			r.t.Fatalf("enroll the agent: %v", err)
		}
		cfg.Credentials = creds
	}
	a, err := agent.New(cfg)
	if err != nil {
		r.t.Fatalf("agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Agent{A: a, cancel: cancel, done: make(chan struct{})}
	before := r.G.Registry().Count(Group)
	go func() {
		h.err = a.Run(ctx)
		close(h.done)
	}()
	r.mu.Lock()
	r.agents = append(r.agents, h)
	r.mu.Unlock()
	// Stop the agent before whatever the test set up between the rig and
	// it closes (cleanups run last in, first out): a relay or balancer it
	// dials through, closed first, would drop its drain notice without a
	// word (UDP) and leave it waiting out its whole DrainGrace. Close's
	// stop of the same agent is then a no-op.
	r.t.Cleanup(h.Stop)
	if cfg.Token == Token && cfg.DataDir == "" { // agents with a data_dir may not connect
		conns := cfg.Connections
		if conns == 0 {
			conns = 2
		}
		r.WaitSessions(Group, before+conns)
	}
	return h
}

// WaitSessions waits until group has n live sessions.
func (r *Rig) WaitSessions(group string, n int) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for r.G.Registry().Count(group) != n {
		if time.Now().After(deadline) {
			r.t.Fatalf("group %q has %d sessions, want %d", group, r.G.Registry().Count(group), n)
		}
		<-tick.C
	}
}

// SkipShort skips a slow test under -short, saying why. `make test` never
// passes -short; under CI (CI set in the environment) a -short run fails
// instead, so the test cannot be skipped there without anyone noticing.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	shortskip.Long(t, why)
}

// MustURL parses a URL or fails the test.
func MustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Client is an HTTP/1.1 client for the rig's public listener.
func (r *Rig) Client() *http.Client {
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	r.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
