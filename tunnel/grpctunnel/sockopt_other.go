//go:build !linux

package grpctunnel

import "net"

// tuneSocket: gRPC sets TCP_USER_TIMEOUT on Linux only; TCP_NOTSENT_LOWAT
// is left to the system elsewhere.
func tuneSocket(net.Conn) {}
