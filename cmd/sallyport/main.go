// Command sallyport is the one binary of Sallyport: the gateway, the
// connector agent, a self-contained demo, and their tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/gctune"
	"github.com/sallyport/sallyport/internal/logging"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// it comes from the module build info.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// globals are the flags every command shares.
type globals struct {
	logLevel  string
	logFormat string
}

func (g *globals) logger() (*zap.Logger, error) {
	log, err := logging.New(g.logLevel, g.logFormat)
	if err != nil {
		return nil, err
	}
	// Libraries that write to the standard logger (quic-go's UDP buffer
	// warning, for one) end up in our log, at warn.
	if _, err := zap.RedirectStdLogAt(log.Named("lib"), zap.WarnLevel); err != nil {
		return nil, err
	}
	return log, nil
}

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sallyport:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "sallyport",
		Short: "Publish private web apps through an agent that dials out to a gateway",
		Long: "Sallyport is a self-hosted application proxy. A gateway runs where users can reach it;\n" +
			"a connector agent runs beside private apps and dials out to the gateway, so no inbound\n" +
			"port is opened on the private side.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug|info|warn|error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "console", "log format: console|json")
	agent.Version = buildVersion()
	root.AddCommand(newAgentCmd(g), newVersionCmd())
	root.AddCommand(moreCommands(g)...)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "sallyport", buildVersion()+buildKind)
		},
	}
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits at once.
func signalContext(log *zap.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			log.Info("stopping; send the signal again to stop at once", zap.Stringer("signal", s))
			cancel()
		case <-ctx.Done():
			signal.Stop(sigs)
			return
		}
		if s, ok := <-sigs; ok {
			log.Warn("stopping at once", zap.Stringer("signal", s))
			os.Exit(1)
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}
}

var errUsage = errors.New("missing --config; see --help")

// runFromConfig is the shape of the gateway and agent commands: load and
// validate the config file, build the logger, then run until SIGINT or
// SIGTERM.
func runFromConfig[C any](g *globals, path string, load func(string) (C, error),
	run func(ctx context.Context, cfg C, log *zap.Logger) error) error {
	if path == "" {
		return errUsage
	}
	cfg, err := load(path)
	if err != nil {
		return err
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr
	ctx, stop := signalContext(log)
	defer stop()
	defer gctune.Start(0).Stop() // see internal/gctune; GOGC or GOMEMLIMIT turn it off
	return run(ctx, cfg, log)
}
