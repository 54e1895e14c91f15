package bench

import (
	"fmt"
	"slices"
	"strings"
)

// The tunnel transports (agent.Config.Transport).
const (
	TransportGRPC  = "grpc"
	TransportQUIC  = "quic"
	TransportYamux = "yamux"
)

// Transports lists the tunnel transports the harness can run between agent
// and gateway. A transport added to the agent and gateway is added here
// and to agentTransport; nothing else in the harness names one.
var Transports = []string{TransportGRPC, TransportQUIC, TransportYamux}

// checkTransport refuses a transport this build does not have.
func checkTransport(name string) error {
	if slices.Contains(Transports, name) {
		return nil
	}
	return fmt.Errorf("bench: transport %q is not in this build (have %s)", name, strings.Join(Transports, ", "))
}

// agentTransport checks the transport a role spec names; empty means gRPC.
// runAgent passes it on as agent.Config.Transport.
func agentTransport(name string) error {
	if name == "" {
		return nil
	}
	return checkTransport(name)
}
