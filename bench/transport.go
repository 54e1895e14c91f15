package bench

import (
	"fmt"
	"slices"
	"strings"
)

// TransportGRPC is the tunnel transport every build has.
const TransportGRPC = "grpc"

// Transports lists the tunnel transports the harness can run between agent
// and gateway. A transport added to the agent and gateway is added here
// and to agentTransport; nothing else in the harness names one.
var Transports = []string{TransportGRPC}

// checkTransport refuses a transport this build does not have.
func checkTransport(name string) error {
	if slices.Contains(Transports, name) {
		return nil
	}
	return fmt.Errorf("bench: transport %q is not in this build (have %s)", name, strings.Join(Transports, ", "))
}

// agentTransport checks the transport a role spec names; empty means gRPC.
// The agent has only gRPC so far, so there is nothing to pass on yet.
func agentTransport(name string) error {
	if name == "" {
		return nil
	}
	return checkTransport(name)
}
