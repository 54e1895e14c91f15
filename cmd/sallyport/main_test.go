package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		// Remove the binary the binary tests built, if they did.
		if builtDir != "" {
			os.RemoveAll(builtDir)
		}
		os.Exit(code)
	}))
}

// TestFlagValueNames: in every command's --help, a flag's value is named
// by its type (`--token string`). pflag takes a back-quoted word of the
// usage text as the value's name instead, so usage text that quotes a
// command in back quotes printed `--token sallyport token create`.
func TestFlagValueNames(t *testing.T) {
	typeNames := map[string]bool{"": true, "string": true, "strings": true, "int": true, "float": true, "duration": true}
	var walk func(c *cobra.Command)
	commands, flags := 0, 0
	walk = func(c *cobra.Command) {
		commands++
		check := func(f *pflag.Flag) {
			flags++
			if name, _ := pflag.UnquoteUsage(f); !typeNames[name] {
				t.Errorf("%s --%s: --help names its value %q; keep back quotes out of the usage text", c.CommandPath(), f.Name, name)
			}
		}
		c.LocalNonPersistentFlags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
	minCommands, minFlags := 15, 40
	if buildKind != "" { // agent-only: root, agent, enroll, version, the stubs
		minCommands, minFlags = 10, 12
	}
	if commands < minCommands || flags < minFlags {
		t.Fatalf("visited %d commands and %d flags; the command tree looks incomplete", commands, flags)
	}
}

// TestUnknownSubcommand: every command with subcommands fails on a
// misspelt one, with a non-nil error (exit status 1), as the root does.
// Cobra checks names only at the root: `sallyport connector revok ID`
// printed the group's help and exited 0, so a script believed the
// connector was revoked. A group run alone prints its help and succeeds,
// like the root; every other command's usage line is unchanged.
func TestUnknownSubcommand(t *testing.T) {
	run := func(args ...string) (string, error) {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	var walk func(c *cobra.Command)
	groups := 0
	walk = func(c *cobra.Command) {
		path := strings.Fields(c.CommandPath())[1:]
		if c.HasSubCommands() {
			groups++
			for _, typo := range []string{"nosuch", c.Commands()[0].Name() + "x"} {
				_, err := run(append(path, typo, "ARG")...)
				want := fmt.Sprintf("unknown command %q for %q", typo, c.CommandPath())
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("%s %s ARG: err = %v; want %s", c.CommandPath(), typo, err, want)
				}
			}
			// Alone, a group prints its help with no usage line of its
			// own; agent and gateway need flags.
			if out, err := run(path...); err == nil &&
				(!strings.Contains(out, c.CommandPath()+" [command]") || strings.Contains(out, c.CommandPath()+" [flags]")) {
				t.Errorf("%s: help = %q", c.CommandPath(), out)
			}
		}
		if !c.HasSubCommands() && c.Runnable() && !c.DisableFlagParsing {
			out, err := run(append(path, "--help")...)
			if err != nil || !strings.Contains(out, c.UseLine()) {
				t.Errorf("%s --help = %q, %v; want the usage line %q", c.CommandPath(), out, err, c.UseLine())
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
	// The full build has root, agent, gateway, gateway ca, token and
	// connector (and completion); the agent-only build root and agent.
	want := 5
	if buildKind != "" {
		want = 2
	}
	if groups < want {
		t.Fatalf("visited %d commands with subcommands; the command tree looks incomplete", groups)
	}
}
