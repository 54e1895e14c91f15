//go:build !agentonly

package main

import "github.com/spf13/cobra"

// buildKind names this build in `sallyport version`: the full one.
const buildKind = ""

// binaryName is the name of this build's binary (make build: bin/sallyport),
// which --help shows in its usage lines.
const binaryName = "sallyport"

// moreCommands are the commands beside agent and version: all of them in
// the full build. commands_agentonly.go is the agent-only build's list.
func moreCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newGatewayCmd(g), newDemoCmd(g), newBenchCmd(g), newTokenCmd(), newConnectorCmd()}
}
