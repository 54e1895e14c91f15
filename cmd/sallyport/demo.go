//go:build !agentonly

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/demoapp"
)

func newDemoCmd(g *globals) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "demo [--addr 127.0.0.1:8080]",
		Short: "Run a gateway, an agent and a sample private backend in one process on loopback",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // stderr
			// The temporary folder holds the demo's CA key: it goes on
			// every way out. A write to a closed stdout or stderr
			// (`sallyport demo | grep -m3 …`) returns an error instead of
			// killing the process (SIGPIPE) before the folder is removed.
			signal.Ignore(syscall.SIGPIPE)
			dir, err := os.MkdirTemp("", "sallyport-demo-")
			if err != nil {
				return err
			}
			ctx, stop := signalContextExit(log, func() { os.RemoveAll(dir) }, syscall.SIGHUP)
			defer stop()
			// Deferred after stop, so it runs before it: a signal that
			// comes while the folder is removed is still caught.
			defer os.RemoveAll(dir)
			return runDemoIn(ctx, dir, addr, log, cmd.OutOrStdout(), nil)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "public listener address of the demo gateway")
	return cmd
}

// runDemo runs the demo until ctx ends. ready, if not nil, gets the public
// URL once everything is connected.
func runDemo(ctx context.Context, addr string, log *zap.Logger, out io.Writer, ready func(url string)) error {
	dir, err := os.MkdirTemp("", "sallyport-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	return runDemoIn(ctx, dir, addr, log, out, ready)
}

// runDemoIn is runDemo keeping its files in dir, which the caller removes.
func runDemoIn(ctx context.Context, dir, addr string, log *zap.Logger, out io.Writer, ready func(url string)) error {
	if err := checkDemoAddr(addr); err != nil {
		return err
	}

	// The private backend, reachable only on loopback.
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo backend: %w", err)
	}
	backend := &http.Server{Handler: demoapp.New(), ReadHeaderTimeout: 10 * time.Second}
	go backend.Serve(bl) //nolint:errcheck // ends with Shutdown
	defer backend.Close()

	token := randomToken()
	gcfg := &config.Gateway{
		Public:  config.Public{Addr: addr},
		Tunnel:  config.Tunnel{Addr: "127.0.0.1:0", Tokens: []config.Token{{Token: token, Group: "demo"}}},
		DataDir: dir,
		Apps: []config.App{{
			Name:    "demo",
			Hosts:   demoHosts(addr),
			Backend: "http://" + bl.Addr().String(),
			Group:   "demo",
		}},
		ShutdownGrace: 5 * time.Second,
	}
	idp, err := startDemoProvider(gcfg, dir, "http://"+bl.Addr().String())
	if err != nil {
		return err
	}
	defer idp.Close()
	if err := gcfg.Validate(); err != nil {
		return err
	}
	// The demo's own stop takes its only agent away before the gateway:
	// that is no lost connector group (it logged an ERROR at every Ctrl-C).
	var stopping atomic.Bool
	glog := log.Named("gateway").WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return demoStopCore{Core: c, stopping: &stopping}
	}))
	settings, err := gatewayConfig(gcfg, glog)
	if err != nil {
		return err
	}
	settings.AdminAddr = "" // the demo has no admin API; its store lives in memory
	gw, err := gateway.New(settings)
	if err != nil {
		return err
	}
	if err := gw.Listen(); err != nil {
		return fmt.Errorf("%w (is another demo running? pick another port with --addr)", err)
	}
	gctx, stopGateway := context.WithCancel(context.Background())
	gdone := make(chan error, 1)
	go func() { gdone <- gw.Serve(gctx) }()
	defer func() {
		stopGateway()
		<-gdone
	}()

	acfg := &config.Agent{
		Gateway:       gw.TunnelAddr().String(),
		GatewayCAFile: dir + "/tunnel-cert.pem",
		Token:         token, // a pre-provisioned enrollment token: the agent enrolls itself
		DataDir:       dir + "/agent",
		Name:          "demo-agent",
		Connections:   2,
		Allow:         []string{bl.Addr().String()},
	}
	if err := acfg.Validate(); err != nil {
		return err
	}
	asettings, err := agentConfig(acfg, log.Named("agent"))
	if err != nil {
		return err
	}
	asettings.DrainGrace = 5 * time.Second
	a, err := agent.New(asettings)
	if err != nil {
		return err
	}
	actx, stopAgent := context.WithCancel(context.Background())
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	defer func() {
		stopping.Store(true)
		stopAgent()
		<-adone
	}()

	select {
	case <-a.Ready():
	case <-ctx.Done():
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("demo: the agent did not connect to the gateway within 15s; run with --log-level debug")
	}
	url := demoURL(gw.PublicAddr())
	creds := a.Certificate()
	fmt.Fprintf(out, `
Sallyport demo is running: a gateway, an agent that dialled out to it, and a
private backend on %s that only the agent can reach. The agent enrolled
with a token as connector %s and connects with its client certificate
(valid until %s).

  Open   %s/

  Try    curl -i %s/echo
         curl -N '%s/stream?n=5&interval=500ms'
         curl -s %s/bytes/1048576 | sha256sum
         (the page at / has a WebSocket echo tester for /ws)

The same app is also published behind sign-in, with a development OIDC
provider on %s (for the demo only, never for real use):

  Open   %s/
         sign in as alice / alice; bob / bob is signed in but not allowed
  Try    curl -i %s/ -H 'Accept: application/json'   (401 without a session)

Press Ctrl-C to stop.
`, bl.Addr(), creds.ConnectorID, creds.Expires().UTC().Format(time.RFC3339), url, url, url, url,
		idp.issuer, privateURL(url), privateURL(url))
	if ready != nil {
		ready(url)
	}
	<-ctx.Done()
	fmt.Fprintln(out, "stopping the demo")
	return nil
}

// checkDemoAddr checks --addr as the config checks public.addr, naming
// the flag the user wrote (the error named public.addr, a setting of
// gateway.yaml the demo has none of).
func checkDemoAddr(addr string) error {
	if err := config.CheckListenAddr("--addr", addr); err != nil {
		return fmt.Errorf("%w (e.g. --addr 127.0.0.1:8080, or :8080 for every address)", err)
	}
	return nil
}

// demoNoAgents starts the gateway's error about a connector group without
// agents (gateway.msgNoAgents).
const demoNoAgents = "connector group has no agents"

// demoStopCore drops the gateway's demoNoAgents error once the demo is
// stopping: the demo's one agent stops first, on purpose.
type demoStopCore struct {
	zapcore.Core
	stopping *atomic.Bool
}

func (c demoStopCore) With(fields []zapcore.Field) zapcore.Core {
	return demoStopCore{Core: c.Core.With(fields), stopping: c.stopping}
}

func (c demoStopCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.stopping.Load() && strings.HasPrefix(e.Message, demoNoAgents) {
		return ce
	}
	return c.Core.Check(e, ce)
}

// demoHosts are the hosts the demo app answers on: loopback, and the host
// of --addr when it names one (an address on the network, or a name), so
// that the URL the demo prints for it does not answer 404 no-route.
func demoHosts(addr string) []string {
	hosts := []string{"127.0.0.1", "localhost"}
	h, _, err := net.SplitHostPort(addr)
	if err != nil || h == "" || h == "127.0.0.1" || h == "localhost" {
		return hosts
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		return hosts
	}
	return append(hosts, h)
}

// demoURL is the URL to open for the demo gateway listening on a: on every
// address (--addr :8080) that is 127.0.0.1, since "http://[::]:8080/"
// names no app host (it answered 404 no-route).
func demoURL(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return fmt.Sprintf("http://127.0.0.1:%d", ta.Port)
	}
	return "http://" + a.String()
}

// privateURL is the demo's protected app at the same port as base.
func privateURL(base string) string {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	return "http://" + demoPrivateHost + ":" + port
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
