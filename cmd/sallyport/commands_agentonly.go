//go:build agentonly

package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// buildKind names this build in `sallyport version`.
const buildKind = " (agent-only build)"

// binaryName is the name of this build's binary (make build:
// bin/sallyport-agent), which --help shows in its usage lines.
const binaryName = "sallyport-agent"

// moreCommands are the commands beside agent and version. The agent-only
// build (make build: bin/sallyport-agent) leaves out the gateway, its
// embedded database and the tools around it, so an agent on a small
// machine maps less code; each left-out command is a hidden stub that
// says where it lives.
func moreCommands(*globals) []*cobra.Command {
	var out []*cobra.Command
	for _, name := range []string{"gateway", "demo", "bench", "token", "connector"} {
		out = append(out, &cobra.Command{
			Use:                name,
			Hidden:             true,
			DisableFlagParsing: true,
			RunE: func(*cobra.Command, []string) error {
				return fmt.Errorf("%q is not in this agent-only build (it has the agent and version commands); "+
					"run it with the full sallyport binary", name)
			},
		})
	}
	return out
}
