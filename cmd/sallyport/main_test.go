package main

import (
	"os"
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
	if commands < 15 || flags < 40 {
		t.Fatalf("visited %d commands and %d flags; the command tree looks incomplete", commands, flags)
	}
}
