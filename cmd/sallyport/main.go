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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/gctune"
	"github.com/sallyport/sallyport/internal/logging"
	"github.com/sallyport/sallyport/internal/procstune"
	"github.com/sallyport/sallyport/internal/rawsock"
)

// version is set at build time with -ldflags "-X main.version=…" (make
// build and make dist set it from git describe); otherwise it comes from
// the build info.
var version = ""

func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return versionOf(version, bi)
}

// versionOf is the version to print: set, the -X version, if any; else the
// main module's version (go install …@v1.2.3, or the pseudo-version Go
// 1.24 and later make from the checkout's commit); else the commit Go
// recorded (12 hex digits, +dirty for uncommitted changes); else "dev" (a
// build with -buildvcs=false, or from a tree without git).
func versionOf(set string, bi *debug.BuildInfo) string {
	if set != "" {
		return set
	}
	if bi == nil {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}

// globals are the flags every command shares.
type globals struct {
	logLevel  string
	logFormat string
	logFlush  time.Duration // --log-flush-interval
}

func (g *globals) logger() (*zap.Logger, error) {
	log, err := logging.New(g.logLevel, g.logFormat, g.logFlush)
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
		fmt.Fprintln(os.Stderr, binaryName+":", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   binaryName,
		Short: "Publish private web apps through an agent that dials out to a gateway",
		Long: "Sallyport is a self-hosted application proxy. A gateway runs where users can reach it;\n" +
			"a connector agent runs beside private apps and dials out to the gateway, so no inbound\n" +
			"port is opened on the private side.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug|info|warn|error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "console", "log format: console|json")
	root.PersistentFlags().DurationVar(&g.logFlush, "log-flush-interval", logging.DefaultFlushInterval,
		"log lines that come within this of the last write wait at most this long and go out together (warnings and errors at once); 0 writes each line at once")
	agent.Version = buildVersion()
	root.AddCommand(newAgentCmd(g), newVersionCmd())
	root.AddCommand(moreCommands(g)...)
	// Added here rather than by Execute, so the walk below sees it too.
	root.InitDefaultCompletionCmd()
	rejectUnknownSubcommands(root)
	return root
}

// rejectUnknownSubcommands makes every command group under c (a command
// that only has subcommands, such as `token` or `gateway ca`) fail on an
// unknown subcommand, as the root does. Cobra checks subcommand names only
// at the root: below it, a group printed its help and exited 0, so a
// script running `sallyport connector revok ID` believed the connector
// was revoked. A group run without arguments still prints its help and
// exits 0, like the root.
func rejectUnknownSubcommands(c *cobra.Command) {
	if c.HasParent() && c.HasSubCommands() && !c.Runnable() {
		c.Args = unknownSubcommand
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		// Runnable now, but its usage stays "sallyport token [command]":
		// cobra's own usage, written while the group is not runnable. A
		// usage function rather than a template: executing a template
		// calls reflect's MethodByName, which keeps every exported method
		// of every type in the binary (the linker cannot prune them), and
		// a bigger binary is more resident memory in an idle agent.
		// Subcommands inherit the function and are written as they are.
		group := c
		c.SetUsageFunc(func(cmd *cobra.Command) error {
			usage := group.Parent().UsageFunc()
			if cmd != group {
				return usage(cmd)
			}
			run := group.RunE
			group.RunE = nil
			defer func() { group.RunE = run }()
			return usage(cmd)
		})
		// `gateway ca rotat --retire-previous`: the misspelt name, not the
		// flag the group does not have, is what to report.
		c.SetFlagErrorFunc(func(cmd *cobra.Command, flagErr error) error {
			if err := unknownSubcommand(cmd, cmd.Flags().Args()); err != nil {
				return err
			}
			return flagErr
		})
	}
	for _, sub := range c.Commands() {
		rejectUnknownSubcommands(sub)
	}
}

// unknownSubcommand is the Args check of a command group: any argument is
// a subcommand name it does not have. The text is cobra's own for the root.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
	} else {
		msg += fmt.Sprintf("; see `%s --help` for its commands", cmd.CommandPath())
	}
	return errors.New(msg)
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
	return signalContextExit(log, nil)
}

// signalContextExit is signalContext that also stops on the extra
// signals, and runs atExit (if any) before the second signal's exit: the
// demo removes its temporary folder, which holds a CA key, on every way
// out. The stop function ends the watch.
func signalContextExit(log *zap.Logger, atExit func(), extra ...os.Signal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, append([]os.Signal{os.Interrupt, syscall.SIGTERM}, extra...)...)
	stopped := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			log.Info("stopping; send the signal again to stop at once", zap.Stringer("signal", s))
			cancel()
		case <-stopped:
			return
		}
		select {
		case s := <-sigs:
			log.Warn("stopping at once", zap.Stringer("signal", s))
			if atExit != nil {
				atExit()
			}
			_ = log.Sync() // the lines that wait for their batch
			os.Exit(1)
		case <-stopped:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(stopped)
		})
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
	if err := rawsock.FromEnv(); err != nil { // see internal/rawsock
		return err
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
	defer gctune.Start(0).Stop()      // see internal/gctune; GOGC or GOMEMLIMIT turn it off
	defer procstune.Start(log).Stop() // see internal/procstune; GOMAXPROCS turns it off
	return run(ctx, cfg, log)
}
